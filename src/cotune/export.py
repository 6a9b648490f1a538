"""Merge LoRA into the base weights and export a model for other runtimes.

Two outputs, both written atomically (everything goes to a temporary folder next to the
target, renamed into place at the end, so an interrupted export never leaves half a model
behind under the final name):

* ``safetensors``: a Hugging Face ``Gemma3ForCausalLM`` folder (``model.safetensors``,
  ``config.json``, ``tokenizer.model``, ``tokenizer_config.json`` with Gemma's chat template,
  ``generation_config.json`` ending on ``<eos>`` and ``<end_of_turn>``);
* ``gguf``: ``model.gguf`` for llama.cpp / Ollama (architecture ``gemma3`` metadata mirroring
  the llama.cpp-converted 270M that cotune ships, SentencePiece vocabulary, chat template,
  norm weights with llama.cpp's ``+1``), plus an Ollama ``Modelfile`` carrying cotune's
  reasoning instruction and stop strings.

LoRA adapters are folded into the weights first by :func:`cotune.lora.merge_lora`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cotune import format as fmt
from cotune.lora import merge_lora
from cotune.model.gguf_loader import GGUF_TO_HF_GLOBAL, GGUF_TO_HF_LAYER
from cotune.outputs import atomic_dir

Format = Literal["safetensors", "gguf"]
DType = Literal["f32", "f16", "bf16"]
Quant = Literal["q8_0"]
FORMATS: tuple[str, ...] = ("safetensors", "gguf")
DTYPES: tuple[str, ...] = ("f32", "f16", "bf16")
QUANTS: tuple[str, ...] = ("q8_0",)
GGUF_NAME = "model.gguf"

__all__ = [
    "ExportError",
    "OutputExists",
    "export",
    "chat_template",
    "modelfile_text",
    "check_export",
    "CHECK_QUESTIONS",
    "CHECK_TEXTS",
    "GGUF_NAME",
]


class ExportError(ValueError):
    """The model cannot be exported as asked (bad option, unsupported layout, ...)."""


class OutputExists(ExportError, FileExistsError):
    """The output already exists and ``force`` was not given."""


# --------------------------------------------------------------------------- templates

# Gemma 3's chat template, text only: a system message is prepended to the first user turn
# (Gemma has no system role), "assistant" is spelled "model".
_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] | trim + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def chat_template() -> str:
    """The Jinja chat template written to ``tokenizer_config.json`` and the GGUF.

    With ``system = cotune.format.INSTRUCTIONS[schema]`` and user content
    ``"Question: ..."`` it renders exactly cotune's ``chat`` prompt.
    """
    return _CHAT_TEMPLATE


def modelfile_text(gguf_name: str = GGUF_NAME, schema: fmt.Schema = "tags") -> str:
    """An Ollama ``Modelfile``: Gemma turns, cotune's instruction as SYSTEM, stop strings.

    ``ollama run`` then sends ``<instruction>\\n\\nQuestion: <prompt>`` exactly as cotune
    trains and evaluates (one BOS from the GGUF's ``add_bos_token``).
    """
    instr = fmt.INSTRUCTIONS[schema]
    template = (
        "<start_of_turn>user\n"
        "{{ if .System }}{{ .System }}\n\n{{ end }}Question: {{ .Prompt }}<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    stops = [fmt.END_OF_TURN.piece, *fmt.stop_strings(schema)]
    lines = [
        "# Ollama Modelfile written by `cotune export`: `ollama create NAME -f Modelfile`",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
        f'SYSTEM """{instr}"""',
        *(f"PARAMETER stop {json.dumps(s)}" for s in stops),
        "PARAMETER temperature 0",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- HF folder


def _hf_tensors(model: Any) -> dict[str, np.ndarray]:
    from cotune.model.convert import flat_state, tunix_to_hf

    return tunix_to_hf(flat_state(model.module), model.config)


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    a = np.asarray(a, np.float32)
    if dtype == "f32":
        return a
    if dtype == "f16":
        return a.astype(np.float16)
    import ml_dtypes

    return a.astype(ml_dtypes.bfloat16)


_TORCH_DTYPE = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def _special_pieces(tok: Any) -> dict[str, dict[str, Any]]:
    """``added_tokens_decoder`` entries for the control pieces (so HF splits them from text)."""
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    mp = spm_pb2.ModelProto()
    mp.ParseFromString(tok.model_proto)
    out = {}
    for i, p in enumerate(mp.pieces):
        if p.type in (
            spm_pb2.ModelProto.SentencePiece.CONTROL,
            spm_pb2.ModelProto.SentencePiece.UNKNOWN,
        ):
            out[str(i)] = {
                "content": p.piece,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
    return out


def _unk_id(tok: Any) -> int:
    """The unknown piece's id. SentencePiece reports -1 when that piece is not typed UNKNOWN
    (the 270M GGUF types ``<unk>`` as CONTROL), so fall back to the trainer spec's id."""
    i = tok.sp.unk_id()
    if i >= 0:
        return int(i)
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    mp = spm_pb2.ModelProto()
    mp.ParseFromString(tok.model_proto)
    return int(mp.trainer_spec.unk_id)


def _write_hf(model: Any, folder: Path, dtype: str) -> None:
    from safetensors.numpy import save_file

    from cotune.model.convert import config_to_hf

    tok = model.tokenizer
    tensors = {k: np.ascontiguousarray(_cast(v, dtype)) for k, v in _hf_tensors(model).items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg = config_to_hf(model.config, tok)
    cfg["torch_dtype"] = cfg["dtype"] = _TORCH_DTYPE[dtype]
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (folder / "tokenizer.model").write_bytes(tok.model_proto)
    piece = tok.id_to_piece
    tok_cfg = {
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": piece(tok.bos_id),
        "eos_token": piece(tok.eos_id),
        "pad_token": piece(tok.pad_id),
        "unk_token": piece(_unk_id(tok)),
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "model_max_length": int(cfg.get("max_position_embeddings", 32768)),
        "padding_side": "left",
        "added_tokens_decoder": _special_pieces(tok),
        "chat_template": chat_template(),
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    special = {k: tok_cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    gen = {
        "bos_token_id": tok.bos_id,
        "eos_token_id": list(tok.end_ids),
        "pad_token_id": tok.pad_id,
        "do_sample": False,
    }
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


# --------------------------------------------------------------------------- GGUF

# HF Gemma 3 tensor name pieces -> llama.cpp names: the loader's map, inverted, so export and
# load can never disagree about a name.
_GGUF_LAYER = {hf: gg for gg, hf in GGUF_TO_HF_LAYER.items()}
_GGUF_GLOBAL = {hf: gg for gg, hf in GGUF_TO_HF_GLOBAL.items()}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.weight$")


def gguf_tensor_name(hf_name: str) -> str:
    """llama.cpp's name for an HF Gemma 3 tensor."""
    m = _LAYER_RE.match(hf_name)
    if m and m.group(2) in _GGUF_LAYER:
        return f"blk.{m.group(1)}.{_GGUF_LAYER[m.group(2)]}.weight"
    stem = hf_name.removesuffix(".weight")
    if stem in _GGUF_GLOBAL:
        return f"{_GGUF_GLOBAL[stem]}.weight"
    raise ExportError(f"tensor {hf_name!r} has no llama.cpp Gemma 3 name")


def _gguf_type(arr: np.ndarray, dtype: str, quant: str | None):
    """Tensor type per llama.cpp's convention: 1-D (norms) stay F32; matrices take the
    quantization (rows must be whole 32-value blocks, else F16) or the float dtype."""
    import gguf

    T = gguf.GGMLQuantizationType
    if arr.ndim == 1:
        return T.F32
    if quant == "q8_0":
        block = gguf.GGML_QUANT_SIZES[T.Q8_0][0]
        return T.Q8_0 if arr.shape[-1] % block == 0 else T.F16
    return {"f32": T.F32, "f16": T.F16, "bf16": T.BF16}[dtype]


def _file_type(dtype: str, quant: str | None):
    import gguf

    F = gguf.LlamaFileType
    if quant == "q8_0":
        return F.MOSTLY_Q8_0
    return {"f32": F.ALL_F32, "f16": F.MOSTLY_F16, "bf16": F.MOSTLY_BF16}[dtype]


def _check_gguf_supported(model: Any) -> None:
    from tunix.models.gemma3 import model as gemma3

    cfg = model.config
    if cfg.query_pre_attn_norm != gemma3.QueryPreAttentionNormalisation.BY_ONE_OVER_SQRT_HEAD_DIM:
        raise ExportError(
            "GGUF: llama.cpp scales queries by 1/sqrt(head_dim) for this size; this model uses "
            f"{cfg.query_pre_attn_norm.name}, which GGUF metadata cannot express (use safetensors)"
        )
    if int(cfg.local_base_frequency) != 10_000:
        raise ExportError(
            f"GGUF: local rope base {cfg.local_base_frequency} != 10000, which llama.cpp "
            "hard-codes for Gemma 3 (use safetensors)"
        )


def _write_gguf(model: Any, path: Path, dtype: str, quant: str | None, progress=None) -> None:
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    _check_gguf_supported(model)
    cfg, tok = model.config, model.tokenizer
    arch = "gemma3"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_type("model")
    w.add_name(str(model.name))
    w.add_context_length(32768)
    w.add_embedding_length(cfg.embed_dim)
    w.add_block_count(cfg.num_layers)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.num_heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_freq_base(float(cfg.global_base_frequency))
    w.add_sliding_window(cfg.sliding_window_size)
    w.add_head_count_kv(cfg.num_kv_heads)
    if cfg.global_scale_factor != 1.0:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(cfg.global_scale_factor))

    mp = spm_pb2.ModelProto()
    mp.ParseFromString(tok.model_proto)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([p.piece for p in mp.pieces])
    w.add_token_scores([float(p.score) for p in mp.pieces])
    w.add_token_types([int(p.type) for p in mp.pieces])  # SentencePiece and llama.cpp agree
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(tok.eos_id)
    w.add_unk_token_id(_unk_id(tok))
    w.add_pad_token_id(tok.pad_id)
    w.add_eot_token_id(tok.end_of_turn_id)
    w.add_add_bos_token(True)
    w.add_add_sep_token(False)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(chat_template())
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type(_file_type(dtype, quant))

    for hf_name, arr in _hf_tensors(model).items():
        name = gguf_tensor_name(hf_name)
        arr = np.asarray(arr, np.float32)
        if hf_name.endswith("norm.weight"):  # llama.cpp stores Gemma norms as (1 + w)
            arr = arr + np.float32(1.0)
        qtype = _gguf_type(arr, dtype, quant)
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, np.ascontiguousarray(arr))
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, np.ascontiguousarray(arr.astype(np.float16)))
        else:
            data = gguf.quants.quantize(arr, qtype)
            w.add_tensor(name, data, raw_dtype=qtype)
        if progress is not None:
            progress()
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


# --------------------------------------------------------------------------- atomic output


@contextmanager
def _staging(out: Path, force: bool) -> Iterator[Path]:
    """A temporary folder beside ``out``, renamed to ``out`` only if the body succeeds."""
    if out.exists() and not force:
        if not (out.is_dir() and not any(out.iterdir())):
            raise OutputExists(f"{out}: already exists (pass --force / force=True to overwrite)")
    with atomic_dir(out) as tmp:
        yield tmp
        for f in tmp.iterdir():
            f.chmod(0o644)  # the tensor writers go through mkstemp (0600)


def _export_info(model: Any, format: str, dtype: str, quant: str | None) -> dict[str, Any]:
    from cotune import __version__

    meta = {k: v for k, v in model.meta.items() if isinstance(v, str | int | float | bool)}
    return {
        "exported_by": f"cotune {__version__}",
        "model": model.name,
        "meta": meta,
        "format": format,
        "dtype": dtype,
        "quant": quant,
        "schema_instruction": fmt.INSTRUCTIONS["tags"],
        "stop": [fmt.END_OF_TURN.piece, *fmt.stop_strings("tags")],
    }


def export(
    model: Any,
    out: str | Path,
    format: Format = "safetensors",
    dtype: DType = "f32",
    quant: Quant | None = None,
    force: bool = False,
) -> Path:
    """Merge any LoRA into ``model`` and write it to the folder ``out``.

    ``model``: a :class:`cotune.model.Model` (with or without Qwix LoRA); for a run folder,
    preset or weights path, load it first with ``cotune.load(spec)``. ``format="safetensors"`` writes
    an HF folder and returns it; ``format="gguf"`` writes ``out/model.gguf`` + ``out/Modelfile``
    and returns the ``.gguf`` path. ``quant="q8_0"`` is GGUF-only. An existing non-empty
    ``out`` is refused unless ``force``; nothing appears at ``out`` unless the export finished.
    """
    if format not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, got {format!r}")
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if quant is not None and quant not in QUANTS:
        raise ExportError(f"quant must be one of {QUANTS} (or none), got {quant!r}")
    if quant is not None and format != "gguf":
        raise ExportError(f"quant={quant!r} needs format='gguf' (safetensors holds floats)")
    out = Path(out).expanduser()
    if out.exists() and not force and not (out.is_dir() and not any(out.iterdir())):
        raise OutputExists(f"{out}: already exists (pass --force / force=True to overwrite)")
    if isinstance(model, str | Path):  # resolving a spec is cotune.runs' job, a floor above
        raise TypeError(
            f"export() takes a loaded model; use export(cotune.load({str(model)!r}), ...)"
        )
    model = merge_lora(model)
    info = _export_info(model, format, dtype, quant)
    with _staging(out, force) as tmp:
        if format == "safetensors":
            _write_hf(model, tmp, dtype)
        else:
            _write_gguf(model, tmp / GGUF_NAME, dtype, quant)
            (tmp / "Modelfile").write_text(modelfile_text(GGUF_NAME))
        (tmp / "cotune_export.json").write_text(json.dumps(info, indent=2) + "\n")
    return out / GGUF_NAME if format == "gguf" else out


# --------------------------------------------------------------------------- checking

# Fixed questions for --check: short, varied, answerable by a reasoning-tuned small model.
CHECK_QUESTIONS: tuple[str, ...] = (
    "What is 12 + 7?",
    "What is 45 - 18?",
    "What is 6 * 7?",
    "What is 144 / 12?",
    "What is 23 * 4?",
    "What is 305 + 497?",
    "What is 1000 - 365?",
    "What is 15% of 80?",
    "Tom has 5 apples and buys 3 more. How many apples does he have?",
    "A book costs $12. How much do 4 books cost?",
    "What is 9 squared?",
    "What is half of 250?",
    "A train travels 60 km per hour for 3 hours. How far does it go?",
    "What is 7 + 8 + 9?",
    "Sara had 20 stickers and gave away 8. How many are left?",
    "What is 3 * 11 - 4?",
    "How many minutes are in 2.5 hours?",
    "What is 81 / 9 + 5?",
    "A box holds 6 eggs. How many eggs are in 7 boxes?",
    "What is 2 to the power of 10?",
)


# Plain-text openings for base (not instruction-tuned) models, which answer every chat
# question alike (the pretrained 270M echoes the instruction), so agreement there says little.
CHECK_TEXTS: tuple[str, ...] = (
    "The capital of France is Paris. The capital of Germany is",
    "12 + 7 = 19\n25 + 13 = 38\n41 + 16 =",
    "Question: What is 12 * 4?\nAnswer:",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
    "def fibonacci(n):\n",
    "Water boils at 100 degrees Celsius, which is",
    "The largest planet in our solar system is",
    "To make a cup of tea, first",
    "In 1969, Neil Armstrong",
    "The quick brown fox",
    "Photosynthesis is the process by which",
    "A triangle has three sides. A square has",
    "My favourite book is",
    "The train left the station at 9 am and arrived at",
    "import numpy as np\nx = np.array([1, 2, 3])\n",
    "There are seven days in a week:",
    "The opposite of hot is",
    "Dear Sir or Madam,\n\nI am writing to",
    "If a shirt costs $20 and is on sale for 25% off, the sale price is",
)


def check_export(
    reference: Any,
    exported: str | Path,
    n: int = 20,
    max_new_tokens: int = 48,
    raw: bool = False,
) -> dict[str, Any]:
    """Greedy agreement between ``reference`` (merged, in memory) and the file it was
    exported to, loaded back through cotune's own loaders, on ``n`` fixed prompts: reasoning
    questions in cotune's chat prompt, or (``raw=True``, for base models) text openings.

    Returns ``{"agree": k, "total": n, "distinct": d, "mismatches": [(prompt, ref, got)]}``;
    ``distinct`` counts different reference outputs (agreement on one repeated string
    proves less).
    """
    from cotune.generate import generate
    from cotune.model import load, load_gguf

    pool = CHECK_TEXTS if raw else CHECK_QUESTIONS
    qs = list(pool[: max(1, min(n, len(pool)))])
    # float32 decode on both sides: the check measures what the file kept, not bf16 rounding
    kw = {"max_new_tokens": max_new_tokens, "raw": raw, "compute_dtype": "float32"}
    ref = generate(reference, qs, **kw)
    p = Path(exported)
    # a reloaded GGUF would otherwise be converted into the shared cache (1 GB for 270M)
    back = load_gguf(p, use_cache=False) if p.suffix == ".gguf" else load(str(p))
    got = generate(back, qs, **kw)
    bad = [(q, a, b) for q, a, b in zip(qs, ref, got, strict=True) if a != b]
    return {
        "agree": len(qs) - len(bad),
        "total": len(qs),
        "distinct": len(set(ref)),
        "mismatches": bad,
    }
