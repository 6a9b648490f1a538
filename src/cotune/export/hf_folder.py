"""A Hugging Face ``Gemma3ForCausalLM`` folder: ``model.safetensors``, ``config.json``,
``tokenizer.model``, ``tokenizer_config.json`` with Gemma's chat template and
``generation_config.json`` ending on ``<eos>`` and ``<end_of_turn>``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cotune.export.templates import chat_template
from cotune.export.vocab import special_pieces, unk_id


def hf_tensors(model: Any) -> dict[str, np.ndarray]:
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


def write_hf(model: Any, folder: Path, dtype: str) -> None:
    from safetensors.numpy import save_file

    from cotune.model.convert import config_to_hf

    tok = model.tokenizer
    tensors = {k: np.ascontiguousarray(_cast(v, dtype)) for k, v in hf_tensors(model).items()}
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
        "unk_token": piece(unk_id(tok)),
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "model_max_length": int(cfg.get("max_position_embeddings", 32768)),
        "padding_side": "left",
        "added_tokens_decoder": special_pieces(tok),
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
