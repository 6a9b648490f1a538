"""Hugging Face Gemma 3 folders: read (config.json + safetensors + tokenizer) and write.

The writer produces what ``transformers.Gemma3ForCausalLM.from_pretrained`` loads, so the
benchmark's HF side and ``cotune export`` use the same weights cotune runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from cotune.model.convert import WeightsError, config_to_hf, flat_state, tunix_to_hf


def read_config(folder: Path) -> dict:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{cfg_path}: config.json not found (not a Hugging Face model folder?)"
        )
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{cfg_path}:{e.lineno}: invalid JSON ({e.msg})") from None


def read_tensors(folder: Path) -> dict[str, np.ndarray]:
    """All tensors of ``model.safetensors`` or of its shards, as float32 numpy arrays."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors file (expected model.safetensors)")
    out: dict[str, np.ndarray] = {}
    for f in files:
        try:
            tensors = _load_any_dtype(f)
        except SafetensorError as e:
            raise WeightsError(f"{f}: not a readable safetensors file ({e})") from None
        out.update(tensors)
    return out


def _load_any_dtype(f: Path) -> dict[str, np.ndarray]:
    """numpy has no bfloat16: read those via ml_dtypes (a JAX dependency) then widen."""
    try:
        raw = load_file(f)
    except (TypeError, ValueError, SafetensorError):
        from safetensors import safe_open

        raw = {}
        with safe_open(f, framework="flax") as sf:
            for k in sf.keys():
                raw[k] = np.asarray(sf.get_tensor(k))
    return {k: np.asarray(v, dtype=np.float32) for k, v in raw.items()}


def tokenizer_bytes(folder: Path) -> bytes:
    """``tokenizer.model`` (SentencePiece) from the folder, or a clear error.

    ``tokenizer.json`` alone is not enough: cotune tokenizes with SentencePiece so that
    chat control tokens are inserted as ids exactly as in training.
    """
    sp = folder / "tokenizer.model"
    if sp.is_file():
        return sp.read_bytes()
    if (folder / "tokenizer.json").is_file():
        raise WeightsError(
            f"{folder}: has tokenizer.json but no tokenizer.model; cotune needs the "
            "SentencePiece tokenizer.model (Gemma repositories ship it)"
        )
    raise FileNotFoundError(f"{sp}: tokenizer.model not found")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def save_tensors_atomic(tensors: dict[str, np.ndarray], path: Path, metadata=None) -> None:
    """Write a safetensors file via tmp + rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_safetensors(model, folder: str | Path, dtype: str = "float32") -> Path:
    """Write ``model`` as an HF Gemma 3 folder: config.json, model.safetensors, tokenizer.model.

    ``dtype`` is ``float32`` or ``bfloat16`` (bf16 via ml_dtypes; HF reads it natively).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    hf = tunix_to_hf(flat_state(model.module), model.config)
    if dtype == "bfloat16":
        import ml_dtypes

        hf = {k: v.astype(ml_dtypes.bfloat16) for k, v in hf.items()}
    elif dtype == "float32":
        hf = {k: v.astype(np.float32) for k, v in hf.items()}
    else:
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    save_tensors_atomic(hf, out / "model.safetensors", metadata={"format": "pt"})
    cfg = config_to_hf(model.config, model.tokenizer)
    cfg["torch_dtype"] = dtype
    _atomic_write_bytes(out / "config.json", json.dumps(cfg, indent=2).encode())
    _atomic_write_bytes(out / "tokenizer.model", model.tokenizer.model_proto)
    gen = {
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
        "pad_token_id": cfg["pad_token_id"],
    }
    _atomic_write_bytes(out / "generation_config.json", json.dumps(gen, indent=2).encode())
    return out
