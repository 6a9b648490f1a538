"""Kaggle / Orbax Gemma checkpoints, through Tunix's own loaders.

Gemma 3 checkpoints (``gemma3-1b`` etc., as published on Kaggle for Flax) restore with
``tunix.models.gemma3.params.create_model_from_checkpoint``; Gemma 1/2 checkpoints with
``tunix.models.gemma.params.load_and_format_params`` + ``Gemma.from_params``. The tokenizer
is the ``tokenizer.model`` next to (or one level above) the checkpoint folder.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp

from cotune.model.convert import WeightsError


def find_tokenizer(ckpt: Path, tokenizer: str | Path | None = None) -> Path:
    if tokenizer is not None:
        p = Path(tokenizer)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: tokenizer.model not found")
        return p
    for cand in (ckpt / "tokenizer.model", ckpt.parent / "tokenizer.model"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"{ckpt}: no tokenizer.model in the checkpoint folder or its parent "
        "(Kaggle ships it beside the checkpoint)"
    )


def is_orbax_dir(p: Path) -> bool:
    return p.is_dir() and any(
        (p / n).exists()
        for n in ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA", "checkpoint")
    )


def load_orbax(path: str | Path, family: str, config_name: str, dtype=jnp.float32):
    """``(module, config)`` for a Gemma checkpoint directory."""
    p = Path(path)
    if not is_orbax_dir(p):
        raise WeightsError(f"{p}: not an Orbax checkpoint folder (no _METADATA / manifest.ocdbt)")
    try:
        if family == "gemma3":
            from tunix.models.gemma3 import model as gemma3
            from tunix.models.gemma3 import params as g3params

            cfg = getattr(gemma3.ModelConfig, config_name)()
            cfg.param_dtype = dtype
            module = g3params.create_model_from_checkpoint(str(p), cfg, dtype=dtype)
            return module, cfg
        if family == "gemma":
            from tunix.models.gemma import model as gemma
            from tunix.models.gemma import params as gparams

            params = gparams.load_and_format_params(str(p))
            version = {"gemma2_2b": "2-2b", "gemma_2b": "2b"}[config_name]
            module = gemma.Gemma.from_params(params, version=version)
            return module, module.config
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise WeightsError(f"{p}: could not restore a {config_name} checkpoint ({e})") from None
    raise WeightsError(f"{p}: unknown model family {family!r}")
