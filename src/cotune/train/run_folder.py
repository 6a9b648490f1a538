"""A run folder, shared by SFT and RL: what it holds, when it may be written, which
checkpoint folder a ``--which`` names.

Layout (SFT writes ``run.json``, ``best/``, ``val.jsonl`` and ``loss_curve.png``; RL writes
``rl.json`` and ``rl_plot.png``)::

    config.yaml            the resolved run config
    run.json | rl.json     what the run started from and what it produced
    checkpoints/<step>/    the latest K checkpoints (:mod:`cotune.train.checkpoint`)
    best/<step>/           the checkpoint with the best validation accuracy (SFT)
    corrupt_checkpoints/   checkpoints found damaged on resume, moved aside (never deleted)
    metrics.jsonl, tb/     :mod:`cotune.train.metrics`
    loss_curve.png | rl_plot.png
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cotune.config import RunConfig, dump_config
from cotune.train.errors import TrainError

Which = str | int  # "best", "last" or a step number

RUN_FILES = (
    "checkpoints",
    "best",
    "tb",
    "metrics.jsonl",
    "loss_curve.png",
    "rl_plot.png",
    "run.json",
    "rl.json",
    "config.yaml",
    "val.jsonl",
)


def has_checkpoint(out: Path) -> bool:
    d = out / "checkpoints"
    return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


def open_run_dir(out: Path, *, resume: bool, force: bool) -> bool:
    """Make ``out`` ready for a run; True when there is a checkpoint to resume from.

    A folder holding a run is refused unless ``resume`` (continue it) or ``force`` (its run
    files are deleted; other files stay), so no run is ever overwritten by accident.
    """
    existing = [n for n in RUN_FILES if (out / n).exists()]
    if existing and not resume and not force:
        raise TrainError(
            f"{out}: already holds a run ({', '.join(existing)}); use --resume to continue it "
            "or --force to start over"
        )
    if force and not resume:
        for n in existing:
            p = out / n
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return resume and has_checkpoint(out)


def write_config(out: Path, cfg: RunConfig) -> None:
    (out / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")


def run_steps(run: Path) -> dict[str, list[int]]:
    """Checkpoint steps of a run folder: ``{"checkpoints": [...], "best": [...]}``."""
    return {
        sub: sorted(int(p.name) for p in (run / sub).iterdir() if p.is_dir() and p.name.isdigit())
        if (run / sub).is_dir()
        else []
        for sub in ("checkpoints", "best")
    }


def checkpoint_folder(run: Path, which: Which) -> Path:
    """The Orbax folder ``which`` restores from, or a TrainError naming what the run holds.

    ``"best"`` is ``best/`` when the run has one (RL runs never do), else the latest
    checkpoint; ``"last"`` the latest; a step number is looked up in both folders.
    """
    steps = run_steps(run)
    held = "; ".join(f"{k}/: {', '.join(map(str, v)) or 'empty'}" for k, v in steps.items())
    if isinstance(which, int):
        for sub in ("checkpoints", "best"):
            if which in steps[sub]:
                return run / sub
        raise TrainError(f"{run}: no checkpoint at step {which} ({held})")
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best', 'last' or a step number, got {which!r}")
    if which == "best" and steps["best"]:
        return run / "best"
    if not steps["checkpoints"]:
        raise TrainError(f"{run}: a run folder with no checkpoint yet ({held})")
    return run / "checkpoints"
