"""The SFT recipe: records -> packed batches -> jitted LoRA (or full) steps -> checkpoints.

Why the step is written here instead of using Tunix's ``PeftTrainer``: its loss computes
logits for every position through the 262k-wide tied embedding and a one-hot target tensor
as wide as the vocabulary, and it gets positions/attention only through a generic hook. On
the 270M that loss is the largest cost of a step. Our step runs the Tunix Gemma3 submodules
to hidden states, gathers only the trained positions (a fixed-size bucket), projects those,
and takes integer-label cross-entropy; gradients flow only into the trained variables
(``nnx.LoRAParam`` under LoRA). It is a plain ``jax.jit`` over pure state pytrees, compiled
once per run (fixed shapes) and cached on disk (``~/.cache/cotune/jax``).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from cotune import lora as lora_lib
from cotune.config import ConfigError, RunConfig, config_changes, dump_config, load_config
from cotune.runtime import enable_compilation_cache
from cotune.train.batches import Example, Plan, TokenizeStats, as_dict, make_plan, tokenize_records
from cotune.train.checkpoint import RunCheckpoints, fingerprint, restore_params
from cotune.train.forward import split_for_training
from cotune.train.loss import summed_loss
from cotune.train.mesh import (
    check_mesh,
    make_mesh,
    maybe_initialize_distributed,
    put_batch,
    replicated,
    shard_state,
    state_shardings,
)
from cotune.train.metrics import MetricsLogger, plot_loss

Record = dict[str, Any]
ValFn = Callable[[Any, Sequence[Record]], dict[str, float]]


class TrainError(RuntimeError):
    """A training problem phrased for the user (the CLI prints it without a traceback)."""


class TrainingDiverged(TrainError):
    """Loss became NaN/inf; the last good checkpoint is kept on disk."""


class ConfigChanged(TrainError):
    """``--resume`` with settings that would change the result (overridable: force_config)."""


_RUN_FILES = (
    "checkpoints",
    "best",
    "tb",
    "metrics.jsonl",
    "loss_curve.png",
    "run.json",
    "config.yaml",
    "val.jsonl",
)

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


# --------------------------------------------------------------------------- data


def _read_jsonl(path: str | Path) -> list[Record]:
    """Canonical records via :func:`cotune.data.read_jsonl` (file:line errors), as TrainError."""
    from cotune.data import DataError, read_jsonl

    try:
        return [r.to_dict() for r in read_jsonl(Path(path))]
    except DataError as e:
        raise TrainError(str(e)) from None


def _data_generator(k: int) -> Callable[..., Any]:
    try:
        from cotune.data import generate
    except ImportError:
        try:
            from cotune.data.generators import generate
        except ImportError as e:
            raise TrainError(f"data.train[{k}]: generators unavailable ({e})") from None
    return generate


def load_records(cfg: RunConfig) -> tuple[list[Record], list[Record]]:
    """Training and validation records from ``cfg.data`` (files and/or generators)."""
    train: list[Record] = []
    for k, src in enumerate(cfg.data.train):
        if src.path is not None:
            recs = _read_jsonl(src.path)
            if src.n is not None:
                recs = recs[: src.n]
        else:
            data_generate = _data_generator(k)
            recs = [
                as_dict(r)
                for r in data_generate(
                    tasks=[src.generator],
                    n=src.n or 1000,
                    seed=cfg.data.seed + k,
                    difficulty=cfg.data.difficulty,
                    style=cfg.data.style,
                )
            ]
        train.extend(recs)
    if cfg.data.val is not None:
        val = _read_jsonl(cfg.data.val)
    else:
        rng = np.random.default_rng(cfg.data.seed)
        idx = rng.permutation(len(train))
        n_val = int(round(len(train) * cfg.data.val_fraction))
        val = [train[i] for i in idx[:n_val]]
        train = [train[i] for i in sorted(idx[n_val:])]
    return train, val


def tokenize(cfg: RunConfig, tokenizer: Any, records: Sequence[Record]):
    f = cfg.format
    return tokenize_records(
        records,
        tokenizer,
        schema=f.schema_,
        template=f.template,
        max_seq_len=f.max_seq_len,
        max_reasoning_tokens=f.max_reasoning_tokens,
        overlong=f.overlong,
    )


def plan_for(cfg: RunConfig, examples: Sequence[Example]) -> Plan:
    return make_plan(
        examples,
        row_len=cfg.format.max_seq_len,
        rows_per_micro=cfg.train.batch_size,
        micro_batches=cfg.optim.grad_accum,
        pack=cfg.format.pack,
        steps=cfg.train.steps,
        epochs=cfg.train.epochs,
        seed=cfg.train.seed,
        bucket_multiple=cfg.train.bucket_multiple,
    )


# --------------------------------------------------------------------------- step


def make_schedule(cfg: RunConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup, then cosine decay to ``lr * min_lr_ratio`` at ``total_steps``.

    Evaluated at the optimizer's update count: step ``s`` (1-based) uses ``schedule(s - 1)``.
    A resumed run builds it for its *current* total, so a run extended from N to M steps
    follows the M-step schedule from the step it resumed at (see ``docs/reliability.md``).
    """
    o = cfg.optim
    warm = min(o.warmup_steps, max(0, total_steps - 1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warm else o.lr,
        peak_value=o.lr,
        warmup_steps=warm,
        decay_steps=max(total_steps, warm + 1),
        end_value=o.lr * o.min_lr_ratio,
    )


def make_optimizer(cfg: RunConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW on :func:`make_schedule`, global-norm clipping."""
    o = cfg.optim
    sched = make_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip else []
    parts.append(optax.adamw(sched, b1=0.9, b2=0.999, eps=1e-8, weight_decay=o.weight_decay))
    return optax.chain(*parts)


def make_train_step(
    graphdef: Any,
    tx: optax.GradientTransformation,
    bf16: bool,
    shardings: tuple[Any, Any, Any] | None = None,
    frozen_embedding: bool | None = None,
):
    """``step(trainable, opt_state, frozen, batch) -> (trainable, opt_state, loss, grad_norm)``.

    ``batch`` arrays have a leading micro-batch axis ``A``; gradients of the summed token
    losses are accumulated over it with ``lax.scan`` and divided by the step's trained-token
    count, so accumulation is exact (token-weighted), not a mean of micro-batch means.
    """

    def loss_sum(trainable: Any, frozen: Any, mb: dict[str, jax.Array]) -> jax.Array:
        module = nnx.merge(graphdef, trainable, frozen)
        return summed_loss(module, mb, bf16, frozen_embedding)

    grad_fn = jax.value_and_grad(loss_sum)

    def step(trainable: Any, opt_state: Any, frozen: Any, batch: dict[str, jax.Array]):
        zeros = jax.tree.map(jnp.zeros_like, trainable)

        def body(carry, mb):
            tot, g = carry
            loss, gi = grad_fn(trainable, frozen, mb)
            return (tot + loss, jax.tree.map(jnp.add, g, gi)), None

        if batch["tokens"].shape[0] == 1:  # no accumulation: skip the loop (XLA CPU runs
            # while-loop bodies with less parallelism than straight-line code)
            tot, grads = grad_fn(trainable, frozen, {k: v[0] for k, v in batch.items()})
        else:
            (tot, grads), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), batch)
        n = jnp.maximum(jnp.sum(batch["weights"]), 1.0)
        grads = jax.tree.map(lambda x: x / n, grads)
        gnorm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return trainable, opt_state, tot / n, gnorm

    if shardings is None:
        return jax.jit(step, donate_argnums=(0, 1))
    # Outputs placed exactly like inputs, so the donated buffers are reused and the second
    # step does not recompile for a different layout.
    tr_sh, opt_sh, rep = shardings
    return jax.jit(step, donate_argnums=(0, 1), out_shardings=(tr_sh, opt_sh, rep, rep))


# --------------------------------------------------------------------------- validation


def _generate_texts(model: Any, questions: list[str], cfg: RunConfig) -> list[str]:
    """Completions for ``questions`` via :mod:`cotune.generate` (KV cache)."""
    import inspect

    from cotune.generate import generate

    params = inspect.signature(generate).parameters
    kw: dict[str, Any] = {"max_new_tokens": cfg.eval.max_new_tokens}
    extra = {"template": cfg.format.template, "schema": cfg.format.schema_, "temperature": 0.0}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kw.update({k: v for k, v in extra.items() if k in params or var_kw})
    outs = generate(model, questions, **kw)
    return [o if isinstance(o, str) else getattr(o, "text", str(o)) for o in outs]


def answer_accuracy(model: Any, records: Sequence[Record], cfg: RunConfig) -> dict[str, float]:
    """Share of validation questions answered correctly (strict parse, greedy decoding)."""
    from cotune.format import answers_match, parse_completion

    if not records:
        return {}
    texts = _generate_texts(model, [r["question"] for r in records], cfg)
    ok = fmt = 0
    for rec, text in zip(records, texts, strict=True):
        p = parse_completion(text, cfg.format.schema_, strict=True)
        fmt += int(p.well_formed)
        ok += int(answers_match(p.answer, rec["answer"]))
    return {"val_accuracy": ok / len(records), "val_well_formed": fmt / len(records)}


def _generation_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("cotune.generate") is not None


# --------------------------------------------------------------------------- run folder


def _prepare_run_dir(out: Path, resume: bool, force: bool) -> None:
    existing = [n for n in _RUN_FILES if (out / n).exists()]
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


def _has_checkpoint(out: Path) -> bool:
    d = out / "checkpoints"
    return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


def _is_free(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_FREE)


def _show(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def _check_resume_config(
    out: Path, cfg: RunConfig, force_config: bool, log: Callable[[str], None]
) -> None:
    """Refuse to resume with settings that would change the result (before any compute)."""
    saved = out / "config.yaml"
    if not saved.is_file():
        log(f"note: {saved} is missing, so the checkpoint's settings cannot be compared")
        return
    try:
        old = load_config(saved)
    except ConfigError as e:
        raise TrainError(f"the run's saved config does not load: {e}") from None
    changed = [
        (k, a, b)
        for k, a, b in config_changes(old, cfg)
        if not _is_free(k) and k not in RESUME_LENGTH
    ]
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


def _batch_digest(h: Any, plan: Plan, examples: Sequence[Example], step: int) -> None:
    """Fold what step ``step`` trains on (tokens, loss mask, packing) into the hash ``h``.

    Checkpoints store the digest of every step they have trained, so a resume verifies the
    data itself: a changed data file or generator, tokenizer or order is caught even when
    the config text is unchanged.
    """
    for row in plan.steps[step]:
        for i in row:
            h.update(np.asarray(examples[i].tokens, np.int32).tobytes())
            h.update(np.asarray(examples[i].loss_mask, np.int8).tobytes())
            h.update(b"|")
        h.update(b"/")
    h.update(b"#")


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


def _model_meta(model: Any) -> dict[str, Any]:
    meta = {
        k: v
        for k, v in (getattr(model, "meta", {}) or {}).items()
        if isinstance(v, str | int | float | bool) or v is None
    }
    return {"name": getattr(model, "name", None), "meta": meta}


# --------------------------------------------------------------------------- result


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
    resumed_from: int | None = None  # the checkpoint step this session started at
    already_complete: bool = False  # resumed a run that had reached its last step
    val_path: Path | None = None  # held-out records (for `cotune eval --data`)


# --------------------------------------------------------------------------- train


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
    (default: :func:`answer_accuracy` via :mod:`cotune.generate` when it exists). ``stop_after``
    ends the session after that many optimizer steps (as an interruption would), leaving a
    checkpoint to ``resume`` from.

    ``resume`` continues from the newest usable checkpoint and says from which step (through
    ``log``; default: printed when ``progress``). Settings outside :data:`RESUME_FREE` must
    match the run's config.yaml (:class:`ConfigChanged` otherwise, unless ``force_config``).
    A larger ``train.steps`` extends the run: the steps already trained must have had the
    same batches (checked), and the learning rate follows the schedule of the new total from
    the resume step on. A run already at its last step returns ``already_complete``.
    """
    if log is None:
        from rich.console import Console

        console = Console(quiet=not progress)

        def log(msg: str) -> None:
            # messages quote settings and paths: `[...]` is text here, not rich markup
            console.print(msg, markup=False, highlight=False, soft_wrap=True)

    maybe_initialize_distributed()
    check_mesh(cfg.mesh, cfg.train.batch_size)  # a ConfigError before any compute
    enable_compilation_cache()
    out = Path(out_dir)
    _prepare_run_dir(out, resume, force)
    resuming = resume and _has_checkpoint(out)
    if resuming:
        _check_resume_config(out, cfg, force_config, log)  # before the model is loaded
    elif resume:
        log(f"--resume: no checkpoint in {out / 'checkpoints'} yet; starting at step 0")

    if model is None:
        from cotune.model import load

        model = (
            load(cfg.model.name, dtype=cfg.model.dtype)
            if cfg.model.name != "tiny"
            else load("tiny")
        )
    if train_records is None:
        train_records, auto_val = load_records(cfg)
        val_records = auto_val if val_records is None else val_records
    train_records = [as_dict(r) for r in train_records]
    val_records = [as_dict(r) for r in (val_records or [])]
    tok = model.tokenizer

    examples, stats = tokenize(cfg, tok, train_records)
    if not examples:
        raise TrainError(
            "no training data: 0 records; expected at least one record from data.train"
            if not stats.n_records
            else f"all {stats.n_records} training examples are longer than format.max_seq_len="
            f"{cfg.format.max_seq_len}; raise it or set format.overlong=truncate_reasoning"
        )
    plan = plan_for(cfg, examples)
    total = len(plan)
    fp = fingerprint(plan.steps)

    # ------------------------------------------------------------------ model + state
    module = model.module
    if cfg.lora.enabled:
        module = lora_lib.apply_lora(module, cfg.lora, seed=cfg.train.seed)
    train_emb = not cfg.lora.enabled and cfg.train.train_embedding
    n_train, n_total = lora_lib.count_params(module, cfg.lora.enabled, train_emb)

    mesh = make_mesh(cfg.mesh)
    graphdef, trainable, frozen = split_for_training(
        module, cfg.lora.enabled, cfg.train.bf16_matmul, train_emb
    )
    trainable = shard_state(trainable, mesh)
    frozen = shard_state(frozen, mesh)
    # Built for this session's total: on an extended run the schedule is that of the new
    # length, evaluated from the restored update count on.
    tx = make_optimizer(cfg, total)
    sched = make_schedule(cfg, total)  # the same schedule, to report and log the rate
    opt_state = _replicate_loose(tx.init(trainable), mesh)
    step_fn = make_train_step(
        graphdef,
        tx,
        cfg.train.bf16_matmul,
        shardings=(state_shardings(trainable, mesh), _shardings(opt_state), replicated(mesh)),
        frozen_embedding=not train_emb,
    )

    ckpts = RunCheckpoints(out, keep=cfg.train.keep_checkpoints)
    start = 0
    best_acc: float | None = None
    best_step: int | None = None
    digest = hashlib.sha256()
    resumed_from: int | None = None
    if resuming and ckpts.latest_step() is not None:
        try:
            trainable, opt_state, meta = ckpts.restore(trainable, opt_state)
            start = int(meta["step"])
            _check_resumable(out, plan, examples, meta, start, digest, force_config, log)
        except BaseException:
            ckpts.close()
            raise
        resumed_from = start
        best_acc, best_step = meta.get("best_accuracy"), meta.get("best_step")
        if start == total:
            ckpts.close()
            log(f"{out}: already complete at step {start} of {total}; nothing to train")
            return TrainResult(
                run_dir=out,
                model=_updated(model, module, trainable),
                steps=start,
                final_loss=meta.get("loss"),
                best_step=best_step,
                best_accuracy=best_acc,
                resumed_from=start,
                already_complete=True,
                val_path=_val_path(out, cfg),
            )
        old_total = int(meta.get("total_steps") or total)
        lr_now = float(sched(start))
        if old_total != total:
            old = make_schedule(cfg, old_total)
            was = (
                f"the {old_total}-step schedule had ended at {float(old(old_total - 1)):.3g}"
                if start >= old_total
                else f"the {old_total}-step schedule had {float(old(start)):.3g} there"
            )
            log(
                f"changing the run's length from {old_total} to {total} steps: steps "
                f"1-{start} keep their batches (checked); the learning rate follows the "
                f"{total}-step schedule from step {start + 1} on: {lr_now:.3g} there ({was}), "
                f"then down to {float(sched(total - 1)):.3g} at step {total}"
            )
        log(f"resuming {out} from step {start} of {total} (learning rate {lr_now:.3g})")
    (out / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    val_path = _write_val(out, cfg, val_records)
    (out / "run.json").write_text(
        json.dumps(
            {
                "model": _model_meta(model),
                "plan": fp,
                "steps": total,
                "trainable_params": n_train,
                "total_params": n_total,
                "data": stats.summary(),
            },
            indent=2,
        ),
        encoding="utf-8",
    )

    use_val = val_fn is not None or (_generation_available() and cfg.data.val_size_for_accuracy)
    val_subset = val_records[: cfg.data.val_size_for_accuracy]
    eval_model = _with_module(model, module)

    def validate(step: int) -> dict[str, float]:
        if not use_val or not val_subset:
            return {}
        nnx.update(module, trainable)
        fn = val_fn or (lambda m, recs: answer_accuracy(m, recs, cfg))
        return fn(eval_model, val_subset)

    logger = MetricsLogger(out)
    losses: list[float] = []
    tok_count = trained_count = 0
    t_run = 0.0
    stopped = False
    last_loss: float | None = None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]sft"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]

    def meta_for(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "plan": fp,
            "batches": digest.hexdigest(),  # of steps 1..step: what a resume must match
            "examples_seen": step * plan.rows_per_micro,
            "best_accuracy": best_acc,
            "best_step": best_step,
            "total_steps": total,
            "loss": last_loss,
        }

    try:
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("sft", total=total, completed=start, loss="-", tps="-")
            for step in range(start, total):
                if stop_after is not None and step - start >= stop_after:
                    stopped = True
                    break
                batch = plan.batch(examples, step, tok.pad_id)
                arrays = put_batch(batch.arrays(), mesh)
                t0 = time.perf_counter()
                trainable, opt_state, loss, gnorm = step_fn(trainable, opt_state, frozen, arrays)
                _batch_digest(digest, plan, examples, step)
                loss_f = float(loss)
                dt = time.perf_counter() - t0
                if not math.isfinite(loss_f):
                    raise TrainingDiverged(
                        f"step {step + 1}: loss is {loss_f}; stopped. The last good checkpoint "
                        f"is kept in {out / 'checkpoints'} (step {ckpts.latest_step()}). Try a "
                        "lower optim.lr or optim.grad_clip."
                    )
                if step > start:  # the first step of a session includes compilation
                    t_run += dt
                    tok_count += batch.n_tokens
                    trained_count += batch.n_trained
                losses.append(loss_f)
                last_loss = loss_f
                s = step + 1
                tps = tok_count / t_run if t_run else batch.n_tokens / dt
                bar.update(task, completed=s, loss=f"{loss_f:.4f}", tps=f"{tps:,.0f}")
                if s % cfg.train.log_every == 0 or s == total:
                    logger.log(
                        s,
                        loss=loss_f,
                        grad_norm=float(gnorm),
                        step_time_s=dt,
                        lr=float(sched(step)),
                        tokens=batch.n_tokens,
                        trained_tokens=batch.n_trained,
                        tokens_per_s=batch.n_tokens / dt,
                        examples=batch.n_examples,
                    )
                if cfg.train.eval_every and s % cfg.train.eval_every == 0 and s < total:
                    best_acc, best_step = _maybe_best(
                        validate(s), s, best_acc, best_step, ckpts, trainable, logger
                    )
                if (cfg.train.checkpoint_every and s % cfg.train.checkpoint_every == 0) or (
                    s == total
                ):
                    if s == total:
                        best_acc, best_step = _maybe_best(
                            validate(s), s, best_acc, best_step, ckpts, trainable, logger
                        )
                    ckpts.save(s, trainable, opt_state, meta_for(s))
            if stopped and ckpts.latest_step() != start + (stop_after or 0):
                s = start + (stop_after or 0)
                ckpts.save(s, trainable, opt_state, meta_for(s))
    finally:
        logger.close()
        ckpts.close()
    nnx.update(module, trainable)
    plot_loss(out)
    return TrainResult(
        run_dir=out,
        model=eval_model,
        steps=start + len(losses),
        final_loss=last_loss,
        losses=losses,
        best_step=best_step,
        best_accuracy=best_acc,
        stats={
            **stats.summary(),
            "pad_fraction": plan.pad_fraction,
            "bucket": plan.bucket,
            "steps_per_epoch": plan.steps_per_epoch,
            "trainable_params": n_train,
        },
        tokens_per_s=tok_count / t_run if t_run else None,
        trained_tokens_per_s=trained_count / t_run if t_run else None,
        stopped_early=stopped,
        resumed_from=resumed_from,
        val_path=val_path,
    )


def _check_resumable(
    out: Path,
    plan: Plan,
    examples: Sequence[Example],
    meta: dict[str, Any],
    start: int,
    digest: Any,
    force_config: bool,
    log: Callable[[str], None],
) -> None:
    """The checkpoint at ``start`` was trained on this plan's first ``start`` batches.

    Folds those batches into ``digest`` (which the session then continues). A checkpoint
    past the plan's end cannot be continued: shortening a run would need the weights of an
    earlier step, which only an older checkpoint may hold.
    """
    total = len(plan)
    if start > total:
        raise TrainError(
            f"{out}: the checkpoint is at step {start}, past this config's {total} steps; a "
            f"run cannot be shortened (set train.steps >= {start}, or start over with --force)"
        )
    for s in range(start):
        _batch_digest(digest, plan, examples, s)
    if "batches" in meta:
        same = meta["batches"] == digest.hexdigest()
    else:  # a checkpoint from before batch digests: its whole plan's order fingerprint
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


def _val_path(out: Path, cfg: RunConfig) -> Path | None:
    if cfg.data.val is not None:
        return Path(cfg.data.val)
    p = out / "val.jsonl"
    return p if p.is_file() else None


def _updated(model: Any, module: Any, trainable: Any) -> Any:
    nnx.update(module, trainable)
    return _with_module(model, module)


def _maybe_best(metrics, step, best_acc, best_step, ckpts, trainable, logger):
    if not metrics or "val_accuracy" not in metrics:
        return best_acc, best_step
    logger.log(step, **metrics)
    acc = float(metrics["val_accuracy"])
    if best_acc is None or acc > best_acc:
        ckpts.save_best(step, trainable, {"step": step, **metrics})
        return acc, step
    return best_acc, best_step


def _replicate_loose(tree: Any, mesh: Any) -> Any:
    """Optimizer leaves created off-mesh (step counters) are replicated onto the mesh."""
    from jax.sharding import NamedSharding

    rep = replicated(mesh)
    return jax.tree.map(
        lambda x: x if isinstance(x.sharding, NamedSharding) else jax.device_put(x, rep), tree
    )


def _shardings(tree: Any) -> Any:
    return jax.tree.map(lambda x: x.sharding, tree)


def _with_module(model: Any, module: Any) -> Any:
    from dataclasses import replace

    return replace(model, module=module)


# --------------------------------------------------------------------------- dry run


@dataclass
class DryRun:
    stats: TokenizeStats
    plan: Plan
    examples: list[Example]


def dry_run(cfg: RunConfig, tokenizer: Any, train_records: Sequence[Record]) -> DryRun:
    """Tokenize and plan without any model compute (for ``cotune train --dry-run``)."""
    examples, stats = tokenize(cfg, tokenizer, train_records)
    if not examples:
        raise TrainError(
            "no training data: 0 records; expected at least one record from data.train"
            if not stats.n_records
            else f"all {stats.n_records} training examples exceed format.max_seq_len="
            f"{cfg.format.max_seq_len}"
        )
    return DryRun(stats, plan_for(cfg, examples), examples)


# --------------------------------------------------------------------------- load_run


def load_run(
    run_dir: str | Path,
    which: str | int = "best",
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
    src = _checkpoint_folder(run, which)
    model = _load_base(info["model"], cfg, dtype)
    module = model.module
    if cfg.lora.enabled:
        module = lora_lib.apply_lora(module, cfg.lora, seed=cfg.train.seed)
    filt = lora_lib.trainable_filter(
        cfg.lora.enabled, not cfg.lora.enabled and cfg.train.train_embedding
    )
    trainable = nnx.state(module, filt)
    params, meta = restore_params(src, trainable, step=which if isinstance(which, int) else None)
    nnx.update(module, params)
    step = int(meta["step"])
    out = replace(
        model,
        module=module,
        meta={**model.meta, "run": str(run), "step": step, "checkpoint": str(src / str(step))},
    )
    if merged and cfg.lora.enabled:
        from cotune.lora import merge_lora

        out = merge_lora(out, alpha=cfg.lora.alpha)
    return out


def run_steps(run: Path) -> dict[str, list[int]]:
    """Checkpoint steps of a run folder: ``{"checkpoints": [...], "best": [...]}``."""
    return {
        sub: sorted(int(p.name) for p in (run / sub).iterdir() if p.is_dir() and p.name.isdigit())
        if (run / sub).is_dir()
        else []
        for sub in ("checkpoints", "best")
    }


def _checkpoint_folder(run: Path, which: str | int) -> Path:
    """The Orbax folder ``which`` restores from, or a TrainError naming what the run holds."""
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


def _load_base(info: dict[str, Any], cfg: RunConfig, dtype: str | None) -> Any:
    """The base model a run started from, as its run.json recorded it."""
    from cotune.model import PRESETS, load

    name, meta = info.get("name"), info.get("meta") or {}
    if name == "tiny":
        return load("tiny", seed=int(meta.get("seed", 0)))
    dtype = dtype or cfg.model.dtype
    source = meta.get("source")
    if name in PRESETS or not source:
        return load(name or cfg.model.name, dtype=dtype)
    return load(source, dtype=dtype)  # a path: the model's name is only the folder's name
