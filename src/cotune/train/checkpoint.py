"""A run's checkpoints, for SFT and RL alike: trained params, optimizer state, meta.

``checkpoints/<step>/`` keeps the latest K steps, ``best/<step>/`` the step with the best
validation accuracy (SFT). Each step holds:

* ``params``: the trained variables as a pure nested dict (names readable, loadable without
  the optimizer: :func:`restore_params` is how a finished run is loaded);
* ``opt``: the optimizer state as a flat list of leaves, restored into the structure of a
  freshly initialised optimizer (same config => same structure);
* ``meta``: JSON (step, data position, history, ...), whatever the trainer needs to resume;
* optional extra states by name (RL keeps its reference policy as ``ref``).

RL checkpoints may also hold one ``state`` item (``lora``, ``ref`` and ``opt`` as flat leaf
lists); they restore into the same structures. Every step is written and verified through
:mod:`cotune.train.checkpoint_integrity`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from cotune.train.checkpoint_integrity import make_manager, restore_step, save_step, step_dir


def _leaves_dict(tree: Any) -> dict[str, Any]:
    return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


def _from_leaves(like: Any, leaves: Mapping[str, Any]) -> Any:
    """``like``'s structure filled with the leaves of :func:`_leaves_dict` (in key order)."""
    values = [jnp.asarray(leaves[k]) for k in sorted(leaves)]
    return jax.tree.unflatten(jax.tree.structure(like), values)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


def _into(like: nnx.State, pure: Any) -> nnx.State:
    out = nnx.State(like)  # copy the structure
    nnx.replace_by_pure_dict(out, pure)
    return out


def _is_flat_rl(mgr: ocp.CheckpointManager, step: int) -> bool:
    return (step_dir(mgr, step) / "state").is_dir()


def _restore_flat_rl(mgr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    """A step holding one ``state`` item, as ``{"lora", "ref", "opt", "meta"}`` leaf dicts."""
    got = mgr.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
    )
    return {**got["state"], "meta": got["meta"]}


@dataclass
class Restored:
    """A restored step: structures as given to :meth:`RunCheckpoints.restore`, filled."""

    params: nnx.State
    opt_state: Any
    meta: dict[str, Any]
    extra: dict[str, nnx.State] = field(default_factory=dict)


class RunCheckpoints:
    """Latest-K checkpoints plus a ``best/`` slot (created on first use), via Orbax."""

    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.latest = make_manager(self.run_dir / "checkpoints", keep)
        self._best: ocp.CheckpointManager | None = None

    @property
    def best(self) -> ocp.CheckpointManager:
        if self._best is None:
            self._best = make_manager(self.run_dir / "best", 1)
        return self._best

    # ------------------------------------------------------------------ save
    def save(
        self,
        step: int,
        params: nnx.State,
        opt_state: Any,
        meta: dict[str, Any],
        extra: Mapping[str, nnx.State] | None = None,
    ) -> None:
        """Write step ``step``; raises ``CheckpointError`` (previous ones kept) on failure."""
        if step in self.latest.all_steps():
            return
        items = {name: ocp.args.StandardSave(s.to_pure_dict()) for name, s in (extra or {}).items()}
        save_step(
            self.latest,
            step,
            ocp.args.Composite(
                params=ocp.args.StandardSave(params.to_pure_dict()),
                opt=ocp.args.StandardSave(_leaves_dict(opt_state)),
                meta=ocp.args.JsonSave(meta),
                **items,
            ),
        )

    def save_best(self, step: int, params: nnx.State, meta: dict[str, Any]) -> None:
        # The new best is written before the old one is deleted: a failed save keeps it.
        old = list(self.best.all_steps())
        if step in old:
            return
        save_step(
            self.best,
            step,
            ocp.args.Composite(
                params=ocp.args.StandardSave(params.to_pure_dict()),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        for s in old:
            if s in self.best.all_steps():
                self.best.delete(s)

    # ------------------------------------------------------------------ restore
    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(
        self,
        params: nnx.State,
        opt_state: Any,
        step: int | None = None,
        extra: Mapping[str, nnx.State] | None = None,
    ) -> Restored:
        """Restore into the structure (and shardings) of ``params`` / ``opt_state`` /
        ``extra``.

        Without ``step``: the newest usable checkpoint; damaged ones are skipped with a
        ``CheckpointWarning`` and moved to ``corrupt_checkpoints/``.
        """
        extra = dict(extra or {})

        def one(s: int) -> Restored:
            if _is_flat_rl(self.latest, s):
                got = _restore_flat_rl(self.latest, s)
                return Restored(
                    _from_leaves(params, got["lora"]),
                    _from_leaves(opt_state, got["opt"]),
                    dict(got["meta"]),
                    {k: _from_leaves(v, got[k]) for k, v in extra.items()},
                )
            items = {
                k: ocp.args.StandardRestore(_abstract(v.to_pure_dict())) for k, v in extra.items()
            }
            got = self.latest.restore(
                s,
                args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(_abstract(params.to_pure_dict())),
                    opt=ocp.args.StandardRestore(_abstract(_leaves_dict(opt_state))),
                    meta=ocp.args.JsonRestore(),
                    **items,
                ),
            )
            return Restored(
                _into(params, got["params"]),
                _from_leaves(opt_state, got["opt"]),
                dict(got["meta"]),
                {k: _into(v, got[k]) for k, v in extra.items()},
            )

        found = restore_step(self.latest, one, step, quarantine=True)
        if found is None:
            raise FileNotFoundError(f"{self.run_dir}/checkpoints: no checkpoint to resume from")
        return found[1]

    def close(self) -> None:
        self.latest.close()
        if self._best is not None:
            self._best.close()


def restore_params(
    ckpt_dir: str | Path, params: nnx.State, step: int | None = None
) -> tuple[nnx.State, dict]:
    """Trained params (and meta) of a checkpoint under ``ckpt_dir`` (no optimizer).

    Without ``step``: the newest usable one; damaged steps are skipped with a warning but left
    in place (read-only). With ``step``: exactly that one, or ``CheckpointError``.
    """
    mgr = ocp.CheckpointManager(Path(ckpt_dir).resolve())

    def one(s: int) -> tuple[nnx.State, dict]:
        if _is_flat_rl(mgr, s):
            got = _restore_flat_rl(mgr, s)
            return _from_leaves(params, got["lora"]), dict(got["meta"])
        got = mgr.restore(
            s,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(_abstract(params.to_pure_dict())),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return _into(params, got["params"]), dict(got["meta"])

    try:
        found = restore_step(mgr, one, step, quarantine=False)
    finally:
        mgr.close()
    if found is None:
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint found")
    return found[1]


def fingerprint(steps: list[list[list[int]]]) -> str:
    """A short hash of the data plan, to refuse resuming onto a different data order."""
    h = hashlib.sha256()
    for st in steps:
        for row in st:
            h.update(np.asarray(row, np.int64).tobytes())
            h.update(b"|")
        h.update(b"#")
    return h.hexdigest()[:16]
