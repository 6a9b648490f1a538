"""Load a llama.cpp GGUF Gemma 3 (weights and tokenizer) into Tunix, fully offline.

Three conventions differ from Hugging Face and are undone here, in one place:

* quantized blocks (Q4_K, Q5_0, Q6_K, Q8_0, F16, ...) are dequantized with
  ``gguf.quants.dequantize`` to float32;
* GGUF lists dimensions fastest-first, so a tensor's numpy shape is ``reversed(t.shape)``;
* llama.cpp stores every Gemma RMSNorm weight with the ``+1`` already added, while HF and
  Tunix store ``w`` and multiply by ``(1 + w)``: we subtract 1 from every ``*_norm``.

The tokenizer is rebuilt as a SentencePiece ``ModelProto`` from
``tokenizer.ggml.tokens/scores/token_type`` (BPE, byte fallback, identity normalizer, no
dummy prefix, no whitespace folding), which reproduces Gemma's tokenization exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import numpy as np
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from cotune.model.convert import WeightsError

GGUF_TO_HF_LAYER = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GGUF_TO_HF_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}
_BLK = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def hf_name(gguf_name: str, source: str = "GGUF") -> str:
    """The HF Gemma 3 tensor name for a llama.cpp tensor name."""
    m = _BLK.match(gguf_name)
    if m and m.group(2) in GGUF_TO_HF_LAYER:
        return f"model.layers.{m.group(1)}.{GGUF_TO_HF_LAYER[m.group(2)]}.{m.group(3)}"
    stem, _, kind = gguf_name.rpartition(".")
    if stem in GGUF_TO_HF_GLOBAL:
        return f"{GGUF_TO_HF_GLOBAL[stem]}.{kind}"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    raise WeightsError(f"{source}: tensor {gguf_name!r} is not part of a Gemma 3 text model")


def _field(reader: gguf.GGUFReader, key: str, source: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is not None:
            return default
        raise WeightsError(f"{source}: missing metadata key {key!r}")
    return f.contents()


def hf_config(reader: gguf.GGUFReader, source: str) -> dict:
    """An HF-style ``config.json`` dict from GGUF metadata (for :func:`config_from_hf`)."""
    arch = _field(reader, "general.architecture", source)
    if arch != "gemma3":
        raise WeightsError(
            f"{source}: unknown architecture general.architecture={arch!r}; "
            "cotune loads Gemma 3 GGUF files ('gemma3')"
        )
    a = arch
    n_heads = int(_field(reader, f"{a}.attention.head_count", source))
    d = int(_field(reader, f"{a}.embedding_length", source))
    emb = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if emb is None:
        raise WeightsError(f"{source}: missing tensor 'token_embd.weight'")
    vocab = int(emb.shape[1])
    scaling = reader.fields.get(f"{a}.rope.scaling.factor")
    cfg = {
        "model_type": "gemma3_text",
        "vocab_size": vocab,
        "hidden_size": d,
        "intermediate_size": int(_field(reader, f"{a}.feed_forward_length", source)),
        "num_hidden_layers": int(_field(reader, f"{a}.block_count", source)),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(_field(reader, f"{a}.attention.head_count_kv", source, n_heads)),
        "head_dim": int(_field(reader, f"{a}.attention.key_length", source, d // n_heads)),
        "sliding_window": int(_field(reader, f"{a}.attention.sliding_window", source)),
        "rope_theta": float(_field(reader, f"{a}.rope.freq_base", source, 1_000_000.0)),
        # llama.cpp hard-codes Gemma 3's local rope base (10k); the file does not carry it.
        "rope_local_base_freq": 10_000.0,
    }
    if scaling is not None and float(scaling.contents()) != 1.0:
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(scaling.contents())}
    return cfg


def read_tensors(reader: gguf.GGUFReader, source: str, progress=None) -> dict[str, np.ndarray]:
    """Every tensor dequantized to float32 under its HF name, norms shifted back by -1."""
    out: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = hf_name(t.name, source)
        shape = tuple(int(s) for s in reversed(t.shape))
        try:
            arr = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise WeightsError(
                f"{source}: tensor {t.name!r} has type {t.tensor_type.name} that gguf cannot "
                f"dequantize ({e})"
            ) from None
        arr = np.asarray(arr, dtype=np.float32)
        if arr.size != int(np.prod(shape)):
            raise WeightsError(
                f"{source}: tensor {t.name!r} holds {arr.size} values, its shape {shape} needs "
                f"{int(np.prod(shape))}"
            )
        arr = arr.reshape(shape)
        if name.endswith("norm.weight"):
            arr = arr - np.float32(1.0)
        out[name] = arr
        if progress is not None:
            progress()
    return out


def tokenizer_proto(reader: gguf.GGUFReader, source: str) -> bytes:
    """A serialized SentencePiece model equivalent to the GGUF's embedded Gemma tokenizer."""
    model = _field(reader, "tokenizer.ggml.model", source)
    if model != "llama":
        raise WeightsError(
            f"{source}: tokenizer.ggml.model={model!r}; only SentencePiece ('llama') is supported"
        )
    tokens = _field(reader, "tokenizer.ggml.tokens", source)
    scores = _field(reader, "tokenizer.ggml.scores", source)
    types = _field(reader, "tokenizer.ggml.token_type", source)
    if not (len(tokens) == len(scores) == len(types)):
        raise WeightsError(f"{source}: tokenizer tokens/scores/token_type lengths differ")
    mp = spm_pb2.ModelProto()
    for piece, score, typ in zip(tokens, scores, types, strict=True):
        sp = mp.pieces.add()
        sp.piece, sp.score, sp.type = piece, float(score), int(typ)  # same enum values
    ts = mp.trainer_spec
    ts.model_type = spm_pb2.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = True
    ts.split_digits = True
    ts.unk_id = int(_field(reader, "tokenizer.ggml.unknown_token_id", source, 3))
    ts.bos_id = int(_field(reader, "tokenizer.ggml.bos_token_id", source, 2))
    ts.eos_id = int(_field(reader, "tokenizer.ggml.eos_token_id", source, 1))
    ts.pad_id = int(_field(reader, "tokenizer.ggml.padding_token_id", source, 0))
    # SentencePiece finds special ids by piece text, so name the pieces, not just the ids.
    ts.unk_piece, ts.bos_piece = tokens[ts.unk_id], tokens[ts.bos_id]
    ts.eos_piece, ts.pad_piece = tokens[ts.eos_id], tokens[ts.pad_id]
    ns = mp.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = False
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    return mp.SerializeToString()


def open_gguf(path: str | Path) -> gguf.GGUFReader:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: GGUF file not found")
    try:
        return gguf.GGUFReader(p)
    except Exception as e:  # gguf raises ValueError/struct.error on garbage
        raise WeightsError(f"{p}: not a readable GGUF file ({e})") from None


def load_gguf(path: str | Path, progress=None) -> tuple[dict, dict[str, np.ndarray], bytes]:
    """``(hf_config, hf_tensors, tokenizer_proto)`` from a GGUF file."""
    reader = open_gguf(path)
    source = str(path)
    return (
        hf_config(reader, source),
        read_tensors(reader, source, progress),
        tokenizer_proto(reader, source),
    )
