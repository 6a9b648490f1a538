"""The policy of an RL run, rebuilt from its folder for generation, eval or export."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from flax import nnx

from cotune.config import load_config
from cotune.model import Model
from cotune.rl.policy import ensure_lora
from cotune.train.checkpoint import restore_params
from cotune.train.run_folder import checkpoint_folder


def load_rl_run(
    run_dir: str | Path, load_init: Callable[[str], Model], step: int | None = None
) -> Model:
    """A finished (or interrupted) RL run's init model with its trained LoRA.

    ``load_init`` turns the run's recorded ``init`` (a preset, a run folder, a checkpoint
    folder) into a model: :func:`cotune.runs.resolve`, which sits above this package.
    ``step``: that checkpoint instead of the latest.
    """
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "rl.json").read_text(encoding="utf-8"))
    cfg = load_config(run_dir / "config.yaml")
    model = ensure_lora(load_init(meta["init"]), cfg.lora, cfg.rl.seed)
    folder = checkpoint_folder(run_dir, "last" if step is None else step)
    params, got = restore_params(folder, nnx.state(model.module, nnx.LoRAParam), step)
    nnx.update(model.module, params)
    done = int(got["step"])
    # the policy was trained (and evaluated) with the calculator exactly when the run used
    # it, so commands on the run generate that way unless told otherwise
    model.meta.update(
        run=str(run_dir),
        step=done,
        checkpoint=str(folder / str(done)),
        calculator=cfg.eval.calculator,
    )
    return model
