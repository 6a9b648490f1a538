"""``--resume`` that can be trusted: a run continues only with what it was trained on.

Before any compute, the settings are compared with the run's ``config.yaml``
(:func:`check_resume_config`); after the checkpoint is restored, the batches of the steps
already trained are compared with what this config would train on (:func:`resume_position`), by a
digest of their tokens, loss masks and packing stored in every checkpoint. A changed data
file, generator, tokenizer or order is caught even when the config text is unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cotune.config import ConfigError, RunConfig, config_changes, load_config
from cotune.train.batches import Example, Plan
from cotune.train.checkpoint import RunCheckpoints, fingerprint
from cotune.train.errors import ConfigChanged, TrainError
from cotune.train.step import TrainState, make_schedule

Log = Callable[[str], None]

# Settings a resumed run may change freely: they decide what is logged, saved, validated or
# evaluated and where arrays live, never what the optimizer computes. Everything else that
# differs from the run folder's config.yaml is refused unless ``force_config``. A prefix
# ends with "." and covers a whole section: eval.* belongs to `cotune eval`, rl.* to `cotune
# rl`; mesh.* only places the same computation on devices (a run moved to another machine).
RESUME_FREE = (
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "data.val_size_for_accuracy",
    "data.test_difficulty",
    "eval.",
    "rl.",
    "mesh.",
)
# Settings that set the run's length: changing them extends (or shortens) the same run.
# Whether the steps already done are unaffected is checked on the data itself (the digest of
# their batches), not assumed.
RESUME_LENGTH = ("train.steps", "train.epochs")


def is_free(key: str, free: Sequence[str] = RESUME_FREE, pinned: Sequence[str] = ()) -> bool:
    """Whether ``key`` is one of ``free`` (a prefix ending in "." covers a section) and not
    one of ``pinned`` (the keys of a free section that still change the result)."""
    return key not in pinned and any(
        key == k or (k.endswith(".") and key.startswith(k)) for k in free
    )


def _show(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def check_resume_config(
    out: Path,
    cfg: RunConfig,
    force_config: bool,
    log: Log,
    *,
    free: Callable[[str], bool] = is_free,
    length: Sequence[str] = RESUME_LENGTH,
) -> None:
    """Refuse to resume with settings that would change the result (before any compute).

    ``free`` and ``length`` say which keys may change: SFT's by default; ``cotune rl`` passes
    its own, because GRPO reads ``rl.*`` and not the SFT optimizer."""
    saved = out / "config.yaml"
    if not saved.is_file():
        log(f"note: {saved} is missing, so the checkpoint's settings cannot be compared")
        return
    try:
        old = load_config(saved)
    except ConfigError as e:
        raise TrainError(f"the run's saved config does not load: {e}") from None
    changed = [(k, a, b) for k, a, b in config_changes(old, cfg) if not free(k) and k not in length]
    if not changed:
        return
    what = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, a, b in changed)
    if not force_config:
        raise ConfigChanged(
            f"{out}: cannot resume with settings that change the result ({what}). Resume "
            "with the run's settings (its config.yaml), or add --force-config to continue "
            "with the new ones (the run then mixes both)."
        )
    log(f"--force-config: continuing with changed settings: {what}")


def batch_digest(h: Any, plan: Plan, examples: Sequence[Example], step: int) -> None:
    """Fold what step ``step`` trains on (tokens, loss mask, packing) into the hash ``h``."""
    for row in plan.steps[step]:
        for i in row:
            h.update(np.asarray(examples[i].tokens, np.int32).tobytes())
            h.update(np.asarray(examples[i].loss_mask, np.int8).tobytes())
            h.update(b"|")
        h.update(b"/")
    h.update(b"#")


@dataclass
class Position:
    """Where a run stands: the next step, the digest of the steps behind it, the best
    validation so far and what the last checkpoint recorded."""

    start: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    best_accuracy: float | None = None
    best_step: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _check_batches(
    out: Path, plan: Plan, examples: Sequence[Example], pos: Position, force_config: bool, log: Log
) -> None:
    """The checkpoint at ``pos.start`` was trained on this plan's first ``start`` batches.

    Folds those batches into ``pos.digest`` (which the session then continues). A
    checkpoint past the plan's end cannot be continued: shortening a run would need the
    weights of an earlier step, which only an older checkpoint may hold.
    """
    total, start, meta = len(plan), pos.start, pos.meta
    if start > total:
        raise TrainError(
            f"{out}: the checkpoint is at step {start}, past this config's {total} steps; a "
            f"run cannot be shortened (set train.steps >= {start}, or start over with --force)"
        )
    for s in range(start):
        batch_digest(pos.digest, plan, examples, s)
    if "batches" in meta:
        same = meta["batches"] == pos.digest.hexdigest()
    else:  # a checkpoint without batch digests: its whole plan's order fingerprint
        old_total = int(meta.get("total_steps") or total)
        same = old_total <= total and fingerprint(plan.steps[:old_total]) == meta.get("plan")
    if same:
        return
    msg = (
        f"{out}: the batches of steps 1-{start} differ from those the checkpoint was trained "
        "on (training data, tokenization or data order changed)"
    )
    if not force_config:
        raise TrainError(
            msg + "; resume with the same data, or add --force-config to continue anyway"
        )
    log(f"--force-config: {msg}; continuing at step {start + 1} of the new plan")


def resume_position(
    out: Path,
    cfg: RunConfig,
    ckpts: RunCheckpoints,
    state: TrainState,
    plan: Plan,
    examples: Sequence[Example],
    force_config: bool,
    log: Log,
) -> Position:
    """Restore the newest usable checkpoint into ``state`` and check it may be continued."""
    got = ckpts.restore(state.trainable, state.opt_state)
    state.trainable, state.opt_state = got.params, got.opt_state
    meta = got.meta
    pos = Position(
        int(meta["step"]), best_accuracy=meta.get("best_accuracy"),
        best_step=meta.get("best_step"), meta=meta,
    )  # fmt: skip
    _check_batches(out, plan, examples, pos, force_config, log)
    total = len(plan)
    if pos.start == total:
        log(f"{out}: already complete at step {pos.start} of {total}; nothing to train")
        return pos
    old_total = int(meta.get("total_steps") or total)
    lr_now = float(state.schedule(pos.start))
    if old_total != total:
        old = make_schedule(cfg, old_total)
        was = (
            f"the {old_total}-step schedule had ended at {float(old(old_total - 1)):.3g}"
            if pos.start >= old_total
            else f"the {old_total}-step schedule had {float(old(pos.start)):.3g} there"
        )
        log(
            f"changing the run's length from {old_total} to {total} steps: steps "
            f"1-{pos.start} keep their batches (checked); the learning rate follows the "
            f"{total}-step schedule from step {pos.start + 1} on: {lr_now:.3g} there ({was}), "
            f"then down to {float(state.schedule(total - 1)):.3g} at step {total}"
        )
    log(f"resuming {out} from step {pos.start} of {total} (learning rate {lr_now:.3g})")
    return pos
