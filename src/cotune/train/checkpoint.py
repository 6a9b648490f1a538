"""Orbax checkpoints of a run: trained params + optimizer state + step + data position.

Layout of a run folder::

    config.yaml            the resolved run config
    run.json               base model name/meta, trainable filter, plan fingerprint
    checkpoints/<step>/    latest K checkpoints (Orbax, atomic: written to a temp dir, renamed)
    best/<step>/           the checkpoint with the best validation answer accuracy
    metrics.jsonl, tb/, loss_curve.png

Trained params are stored as a pure nested dict (names readable, loadable without the
optimizer); the optimizer state as a flat list of leaves, restored into the structure of a
freshly initialised optimizer (same config => same structure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx


def _leaves_dict(tree: Any) -> dict[str, Any]:
    return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


def _abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


class RunCheckpoints:
    """Latest-K checkpoints plus a ``best/`` slot, via Orbax ``CheckpointManager``."""

    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        self.run_dir = Path(run_dir).resolve()
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self.latest = ocp.CheckpointManager(self.run_dir / "checkpoints", options=opts)
        best_opts = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False
        )
        self.best = ocp.CheckpointManager(self.run_dir / "best", options=best_opts)

    # ------------------------------------------------------------------ save
    def save(self, step: int, trainable: nnx.State, opt_state: Any, meta: dict[str, Any]) -> None:
        if step in self.latest.all_steps():
            return
        self.latest.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(trainable.to_pure_dict()),
                opt=ocp.args.StandardSave(_leaves_dict(opt_state)),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self.latest.wait_until_finished()

    def save_best(self, step: int, trainable: nnx.State, meta: dict[str, Any]) -> None:
        for s in self.best.all_steps():
            self.best.delete(s)
        self.best.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(trainable.to_pure_dict()),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self.best.wait_until_finished()

    # ------------------------------------------------------------------ restore
    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(
        self, trainable: nnx.State, opt_state: Any, step: int | None = None
    ) -> tuple[nnx.State, Any, dict[str, Any]]:
        """Restore into the structure (and shardings) of ``trainable`` / ``opt_state``."""
        step = self.latest.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.run_dir}/checkpoints: no checkpoint to resume from")
        leaves, treedef = jax.tree.flatten(opt_state)
        got = self.latest.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(_abstract(trainable.to_pure_dict())),
                opt=ocp.args.StandardRestore(_abstract(_leaves_dict(opt_state))),
                meta=ocp.args.JsonRestore(),
            ),
        )
        new_trainable = nnx.State(trainable)  # copy the structure
        nnx.replace_by_pure_dict(new_trainable, got["params"])
        opt_leaves = [got["opt"][f"{i:05d}"] for i in range(len(leaves))]
        return new_trainable, jax.tree.unflatten(treedef, opt_leaves), dict(got["meta"])

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def restore_params(ckpt_dir: str | Path, trainable: nnx.State) -> tuple[nnx.State, dict]:
    """Trained params (and meta) of the newest checkpoint under ``ckpt_dir`` (no optimizer)."""
    mgr = ocp.CheckpointManager(Path(ckpt_dir).resolve())
    step = mgr.latest_step()
    if step is None:
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint found")
    got = mgr.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(trainable.to_pure_dict())),
            meta=ocp.args.JsonRestore(),
        ),
    )
    mgr.close()
    out = nnx.State(trainable)
    nnx.replace_by_pure_dict(out, got["params"])
    return out, dict(got["meta"])


def fingerprint(steps: list[list[list[int]]]) -> str:
    """A short hash of the data plan, to refuse resuming onto a different data order."""
    import hashlib

    h = hashlib.sha256()
    for st in steps:
        for row in st:
            h.update(np.asarray(row, np.int64).tobytes())
            h.update(b"|")
        h.update(b"#")
    return h.hexdigest()[:16]
