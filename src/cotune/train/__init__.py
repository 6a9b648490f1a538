"""Supervised fine-tuning (LoRA or full) of Tunix Gemma models.

``cotune.train.sft.train(cfg, out_dir, ...)`` runs a recipe; ``cotune.train.load_run(run_dir)``
rebuilds the trained model for generation. Heavy imports happen on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train", "load_run"]


def train(*args: Any, **kwargs: Any) -> Any:
    from cotune.train.sft import train as _train

    return _train(*args, **kwargs)


def load_run(run_dir: Any, which: str | int = "best", merged: bool = False, **kwargs: Any) -> Any:
    """Base model + trained weights of a run folder (see :func:`cotune.train.sft.load_run`)."""
    from cotune.train.sft import load_run as _load_run

    return _load_run(run_dir, which=which, merged=merged, **kwargs)
