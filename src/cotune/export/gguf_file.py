"""``model.gguf`` for llama.cpp and Ollama: architecture ``gemma3`` metadata mirroring the
llama.cpp-converted 270M that cotune ships, the SentencePiece vocabulary, the chat template,
norm weights with llama.cpp's ``+1``, float or q8_0 tensors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from cotune.export.hf_folder import hf_tensors
from cotune.export.options import ExportError
from cotune.export.templates import chat_template
from cotune.export.vocab import unk_id
from cotune.model.gguf_loader import GGUF_TO_HF_GLOBAL, GGUF_TO_HF_LAYER

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


def write_gguf(model: Any, path: Path, dtype: str, quant: str | None, progress=None) -> None:
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
    w.add_unk_token_id(unk_id(tok))
    w.add_pad_token_id(tok.pad_id)
    w.add_eot_token_id(tok.end_of_turn_id)
    w.add_add_bos_token(True)
    w.add_add_sep_token(False)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(chat_template())
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type(_file_type(dtype, quant))

    for hf_name, arr in hf_tensors(model).items():
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
