"""An SFT run, rebuilt from its folder for generation, eval or export: the base model its
``run.json`` names plus the trained weights of one checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from flax import nnx

from cotune.config import RunConfig, load_config
from cotune.lora import apply_lora, merge_lora, trainable_filter
from cotune.model import PRESETS, load
from cotune.train.checkpoint import restore_params
from cotune.train.errors import TrainError
from cotune.train.run_folder import Which, checkpoint_folder


def load_base(cfg: RunConfig) -> Any:
    """The model a config trains (``model.name`` in ``model.dtype``)."""
    if cfg.model.name == "tiny":
        return load("tiny")
    return load(cfg.model.name, dtype=cfg.model.dtype)


def _recorded_base(info: dict[str, Any], cfg: RunConfig, dtype: str | None) -> Any:
    """The base model a run started from, as its run.json recorded it."""
    name, meta = info.get("name"), info.get("meta") or {}
    if name == "tiny":
        return load("tiny", seed=int(meta.get("seed", 0)))
    dtype = dtype or cfg.model.dtype
    source = meta.get("source")
    if name in PRESETS or not source:
        return load(name or cfg.model.name, dtype=dtype)
    return load(source, dtype=dtype)  # a path: the model's name is only the folder's name


def load_run(
    run_dir: str | Path,
    which: Which = "best",
    merged: bool = False,
    dtype: str | None = None,
) -> Any:
    """Rebuild base model + trained weights of a run for generation.

    ``which``: ``"best"`` (best validation accuracy; the latest checkpoint when the run has no
    best/ yet), ``"last"`` (the latest checkpoint) or a step number (found in checkpoints/ or
    best/). ``dtype`` overrides the run's ``model.dtype`` for the base weights. ``merged=True``
    folds LoRA into the base weights (a plain Tunix Gemma3, no Qwix interception at generation
    time). The model's ``meta`` names the run, the step and the checkpoint folder restored.
    """
    run = Path(run_dir)
    if not (run / "config.yaml").is_file() or not (run / "run.json").is_file():
        raise TrainError(f"{run}: not a cotune run folder (expected config.yaml and run.json)")
    cfg = load_config(run / "config.yaml")
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    src = checkpoint_folder(run, which)
    model = _recorded_base(info["model"], cfg, dtype)
    module = model.module
    if cfg.lora.enabled:
        module = apply_lora(module, cfg.lora, seed=cfg.train.seed)
    filt = trainable_filter(cfg.lora.enabled, not cfg.lora.enabled and cfg.train.train_embedding)
    params, meta = restore_params(
        src, nnx.state(module, filt), step=which if isinstance(which, int) else None
    )
    nnx.update(module, params)
    step = int(meta["step"])
    out = replace(
        model,
        module=module,
        meta={
            **model.meta,
            "run": str(run),
            "step": step,
            "checkpoint": str(src / str(step)),
            # a run trained for the calculator generates with it unless told otherwise
            "calculator": cfg.eval.calculator,
        },
    )
    if merged and cfg.lora.enabled:
        out = merge_lora(out, alpha=cfg.lora.alpha)
    return out
