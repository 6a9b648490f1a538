"""The SFT recipe: records -> packed batches -> jitted LoRA (or full) steps -> checkpoints.

:func:`train` reads top to bottom as a run goes: the run folder
(:mod:`~cotune.train.run_folder`), data and plan (:mod:`~cotune.train.plan`), the model
split for training (:mod:`~cotune.train.step`), the position a resumed run continues from
(:mod:`~cotune.train.resume`), then the steps (:class:`_Session`) with validation
(:mod:`~cotune.train.validation`), metrics, checkpoints and the loss curve.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from cotune.config import RunConfig
from cotune.progress import progress_bar
from cotune.runtime import enable_compilation_cache
from cotune.train.batches import Example, Plan, TokenizeStats, as_dict
from cotune.train.checkpoint import RunCheckpoints, fingerprint
from cotune.train.errors import diverged
from cotune.train.load import load_base
from cotune.train.loss import SampledVocab
from cotune.train.mesh import check_mesh, maybe_initialize_distributed, put_batch
from cotune.train.metrics import MetricsLogger
from cotune.train.plan import dry_run, load_records
from cotune.train.plots import SFT_PLOT, plot_run
from cotune.train.resume import Position, batch_digest, check_resume_config, resume_position
from cotune.train.run_folder import open_run_dir, write_config
from cotune.train.step import TrainState, build_state
from cotune.train.validation import Best, ValFn, answer_accuracy

Record = dict[str, Any]


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    model: Any  # cotune.model.Model with the trained adapters applied
    steps: int
    final_loss: float | None
    losses: list[float] = field(default_factory=list)
    best_step: int | None = None
    best_accuracy: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    tokens_per_s: float | None = None
    trained_tokens_per_s: float | None = None
    stopped_early: bool = False
    resumed_from: int | None = None  # the checkpoint step a resumed run continued from
    already_complete: bool = False  # resumed a run that had reached its last step
    val_path: Path | None = None  # held-out records (for `cotune eval --data`)


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    force: bool = False,
    model: Any = None,
    train_records: Sequence[Record] | None = None,
    val_records: Sequence[Record] | None = None,
    *,
    val_fn: ValFn | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    force_config: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Supervised fine-tuning of ``cfg.model`` (or ``model``) on the configured data.

    ``val_fn(model, records) -> {"val_accuracy": ...}`` overrides generation-based validation
    (default: :func:`~cotune.train.validation.answer_accuracy`). ``stop_after`` ends the
    session after that many optimizer steps (as an interruption would), leaving a checkpoint
    to ``resume`` from.

    ``resume`` continues from the newest usable checkpoint and says from which step (through
    ``log``; default: printed when ``progress``). Settings outside
    :data:`~cotune.train.resume.RESUME_FREE` must match the run's config.yaml
    (:class:`~cotune.train.errors.ConfigChanged` otherwise, unless ``force_config``). A larger
    ``train.steps`` extends the run: the steps already trained must have had the same
    batches (checked), and the learning rate follows the schedule of the new total from the
    resume step on. A run already at its last step returns ``already_complete``.
    """
    log = log or _printer(progress)
    maybe_initialize_distributed()
    check_mesh(cfg.mesh, cfg.train.batch_size)  # a ConfigError before any compute
    enable_compilation_cache()
    out = Path(out_dir)
    resuming = open_run_dir(out, resume=resume, force=force)
    if resuming:
        check_resume_config(out, cfg, force_config, log)  # before the model is loaded
    elif resume:
        log(f"--resume: no checkpoint in {out / 'checkpoints'} yet; starting at step 0")

    model = model if model is not None else load_base(cfg)
    if train_records is None:
        train_records, auto_val = load_records(cfg)
        val_records = auto_val if val_records is None else val_records
    val_records = [as_dict(r) for r in (val_records or [])]
    planned = dry_run(cfg, model.tokenizer, [as_dict(r) for r in train_records])
    plan = planned.plan
    vocab = SampledVocab.for_run(cfg, planned.examples, model.module)
    state = build_state(model.module, cfg, len(plan), vocab)
    ckpts = RunCheckpoints(out, keep=cfg.train.keep_checkpoints)
    try:
        pos = Position()
        if resuming:
            pos = resume_position(out, cfg, ckpts, state, plan, planned.examples, force_config, log)
            if pos.start == len(plan):
                return _already_complete(out, cfg, model, state, pos)
        write_config(out, cfg)
        val_path = _write_val(out, cfg, val_records)
        _write_run_json(out, model, plan, state, planned.stats, vocab)
        session = _Session(cfg, out, model, state, plan, planned.examples, ckpts, pos)
        validate = val_fn or (lambda m, recs: answer_accuracy(m, recs, cfg))
        session.run(val_records[: cfg.data.val_size_for_accuracy], validate, stop_after, progress)
    finally:
        ckpts.close()
    plot_run(out, SFT_PLOT)
    return session.result(planned.stats, val_path, resumed_from=pos.start if resuming else None)


class _Session:
    """The steps of one training session, from ``pos.start`` to the plan's end (or
    ``stop_after``), and what they measured."""

    def __init__(
        self,
        cfg: RunConfig,
        out: Path,
        model: Any,
        state: TrainState,
        plan: Plan,
        examples: Sequence[Example],
        ckpts: RunCheckpoints,
        pos: Position,
    ) -> None:
        self.cfg, self.out, self.model, self.state = cfg, out, model, state
        self.plan, self.examples, self.ckpts, self.pos = plan, examples, ckpts, pos
        self.best = Best(pos.best_accuracy, pos.best_step)
        self.fingerprint = fingerprint(plan.steps)
        self.losses: list[float] = []
        self.tokens = self.trained = 0
        self.seconds = 0.0  # of the steps after the first (which includes compilation)
        self.stopped = False
        self.last_loss: float | None = None

    def _meta(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "plan": self.fingerprint,
            "batches": self.pos.digest.hexdigest(),  # of steps 1..step: what a resume must match
            "examples_seen": step * self.plan.rows_per_micro,
            "best_accuracy": self.best.accuracy,
            "best_step": self.best.step,
            "total_steps": len(self.plan),
            "loss": self.last_loss,
        }

    def run(
        self, val: Sequence[Record], validate: ValFn, stop_after: int | None, progress: bool
    ) -> None:
        cfg, state, total, start = self.cfg, self.state, len(self.plan), self.pos.start
        eval_model = replace(self.model, module=state.module)
        logger = MetricsLogger(self.out, resumed_at=start if start else None)

        def check(s: int) -> None:
            if val:
                state.synced_module()
                self.best.update(validate(eval_model, val), s, state.trainable, self.ckpts, logger)

        try:
            with progress_bar("sft", enabled=progress) as bar:
                task = bar.add_task("", total=total, completed=start)
                for step in range(start, total):
                    if stop_after is not None and step - start >= stop_after:
                        self.stopped = True
                        break
                    s = step + 1
                    batch, dt, loss, gnorm = self._step(step)
                    tps = self.tokens / self.seconds if self.seconds else batch.n_tokens / dt
                    bar.update(task, completed=s, description=f"loss {loss:.4f}  {tps:,.0f} tok/s")
                    if s % cfg.train.log_every == 0 or s == total:
                        logger.log(
                            s, loss=loss, grad_norm=gnorm, step_time_s=dt,
                            lr=float(state.schedule(step)), tokens=batch.n_tokens,
                            trained_tokens=batch.n_trained, tokens_per_s=batch.n_tokens / dt,
                            examples=batch.n_examples,
                        )  # fmt: skip
                    if cfg.train.eval_every and s % cfg.train.eval_every == 0 and s < total:
                        check(s)
                    if s == total:
                        check(s)
                    if s == total or (
                        cfg.train.checkpoint_every and s % cfg.train.checkpoint_every == 0
                    ):
                        self.ckpts.save(s, state.trainable, state.opt_state, self._meta(s))
            if self.stopped and self.ckpts.latest_step() != start + (stop_after or 0):
                s = start + (stop_after or 0)
                self.ckpts.save(s, state.trainable, state.opt_state, self._meta(s))
        finally:
            logger.close()

    def _step(self, step: int) -> tuple[Any, float, float, float]:
        """Train on step ``step``'s batch; (batch, seconds, loss, grad norm)."""
        batch = self.plan.batch(self.examples, step, self.model.tokenizer.pad_id)
        arrays = put_batch(self.state.step_arrays(batch.arrays(), step), self.state.mesh)
        t0 = time.perf_counter()
        loss, gnorm = self.state.step(arrays)
        batch_digest(self.pos.digest, self.plan, self.examples, step)
        loss_f = float(loss)
        dt = time.perf_counter() - t0
        if not math.isfinite(loss_f):
            raise diverged(
                f"step {step + 1}", f"loss is {loss_f}", self.out / "checkpoints",
                self.ckpts.latest_step(), "optim.lr or optim.grad_clip",
            )  # fmt: skip
        if step > self.pos.start:  # the first step of a session includes compilation
            self.seconds += dt
            self.tokens += batch.n_tokens
            self.trained += batch.n_trained
        self.losses.append(loss_f)
        self.last_loss = loss_f
        return batch, dt, loss_f, float(gnorm)

    def result(
        self, stats: TokenizeStats, val_path: Path | None, resumed_from: int | None
    ) -> TrainResult:
        return TrainResult(
            run_dir=self.out,
            model=replace(self.model, module=self.state.synced_module()),
            steps=self.pos.start + len(self.losses),
            final_loss=self.last_loss,
            losses=self.losses,
            best_step=self.best.step,
            best_accuracy=self.best.accuracy,
            stats={
                **stats.summary(),
                "pad_fraction": self.plan.pad_fraction,
                "bucket": self.plan.bucket,
                "steps_per_epoch": self.plan.steps_per_epoch,
                "trainable_params": self.state.n_trainable,
            },
            tokens_per_s=self.tokens / self.seconds if self.seconds else None,
            trained_tokens_per_s=self.trained / self.seconds if self.seconds else None,
            stopped_early=self.stopped,
            resumed_from=resumed_from,
            val_path=val_path,
        )


def _printer(progress: bool) -> Callable[[str], None]:
    console = Console(quiet=not progress)

    def log(msg: str) -> None:
        # messages quote settings and paths: `[...]` is text here, not rich markup
        console.print(msg, markup=False, highlight=False, soft_wrap=True)

    return log


def _already_complete(
    out: Path, cfg: RunConfig, model: Any, state: TrainState, pos: Position
) -> TrainResult:
    return TrainResult(
        run_dir=out,
        model=replace(model, module=state.synced_module()),
        steps=pos.start,
        final_loss=pos.meta.get("loss"),
        best_step=pos.best_step,
        best_accuracy=pos.best_accuracy,
        resumed_from=pos.start,
        already_complete=True,
        val_path=_val_path(out, cfg),
    )


def _val_path(out: Path, cfg: RunConfig) -> Path | None:
    if cfg.data.val is not None:
        return Path(cfg.data.val)
    p = out / "val.jsonl"
    return p if p.is_file() else None


def _write_val(out: Path, cfg: RunConfig, val_records: Sequence[Record]) -> Path | None:
    """The held-out records as JSONL, so ``cotune eval --data`` has the run's own split."""
    if cfg.data.val is not None:
        return Path(cfg.data.val)
    if not val_records:
        return None
    p = out / "val.jsonl"
    p.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in val_records), encoding="utf-8"
    )
    return p


def _write_run_json(
    out: Path,
    model: Any,
    plan: Plan,
    state: TrainState,
    stats: TokenizeStats,
    vocab: SampledVocab | None = None,
) -> None:
    """What :func:`cotune.train.load.load_run` rebuilds the base model from, and the plan."""
    meta = {
        k: v for k, v in model.meta.items() if isinstance(v, str | int | float | bool) or v is None
    }
    info = {
        "model": {"name": model.name, "meta": meta},
        "plan": fingerprint(plan.steps),
        "steps": len(plan),
        "trainable_params": state.n_trainable,
        "total_params": state.n_total,
        "data": stats.summary(),
        # The tokens the training loss's softmax ran over (train.loss_vocab).
        "loss_vocab": "full"
        if vocab is None
        else {"data": int(vocab.vocab.shape[0]), "negatives": vocab.k},
    }
    (out / "run.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
