"""A GRPO run in a run folder, on the scaffold SFT uses too (:mod:`cotune.train.run_folder`,
:mod:`cotune.train.checkpoint`, :mod:`cotune.train.metrics`, :mod:`cotune.train.plots`).

Why not ``tunix.rl.grpo.GRPOLearner`` as a whole: its ``RLCluster`` rollout drives
``tunix.generate.sampler.Sampler``, whose decoding produced degenerate, prompt-repeating
text on a correctly loaded Gemma 3, and it takes prompts as *text* through
``tokenizer_adapter``, which cannot insert Gemma's control tokens as ids. Replacing both
means a custom rollout plus a tokenizer shim inside an async learner whose loop,
checkpointing and logging could not then be hooked for held-out accuracy and
reward-hacking warnings. So the loop is cotune's (rollout -> rewards -> advantages ->
clipped-ratio loss + KL, :mod:`cotune.rl.trainer`) and the GRPO maths is Tunix's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from rich.console import Console

from cotune.config import RunConfig
from cotune.model import Model
from cotune.progress import progress_bar
from cotune.rl.health import History, check_warnings
from cotune.rl.policy import ensure_lora
from cotune.rl.questions import Example
from cotune.rl.trainer import GRPOTrainer, RewardFn
from cotune.train.checkpoint import RunCheckpoints
from cotune.train.errors import diverged
from cotune.train.metrics import MetricsLogger
from cotune.train.plots import RL_PLOT, plot_run
from cotune.train.resume import check_resume_config, is_free
from cotune.train.run_folder import open_run_dir, write_config

# What a resumed GRPO run may change: what is logged, saved or held out, and the SFT-only
# sections (train.*, optim.*: GRPO has its own rl.lr and rl.grad_clip; eval.*: `cotune
# eval`'s), except the keys pinned inside them: train.bf16_matmul, which sets the policy's
# matmul precision, and eval.calculator, which decides whether the calculator writes the
# values of the rollouts' claims (and so what is rewarded and trained on). rl.steps sets the
# run's length. Everything else (rl.*, lora.*, model.*, format.*, the training questions)
# changes what the next steps compute, so a resume with it changed is refused unless
# --force-config.
RL_RESUME_FREE = (
    "rl.eval_every",
    "rl.eval_size",
    "rl.eval_max_new_tokens",
    "rl.log_every",
    "rl.checkpoint_every",
    "rl.keep_checkpoints",
    "data.val",
    "data.val_size_for_accuracy",
    "data.test_difficulty",
    "train.",
    "optim.",
    "eval.",
    "mesh.",
)
RL_RESUME_PINNED = ("train.bf16_matmul", "eval.calculator")
RL_RESUME_LENGTH = ("rl.steps",)


def rl_resume_free(key: str) -> bool:
    """Whether a resumed GRPO run may change ``key`` (see ``RL_RESUME_FREE``)."""
    return is_free(key, RL_RESUME_FREE, RL_RESUME_PINNED)


@dataclass
class RLResult:
    history: History
    model: Model  # the policy after training (LoRA updated in place)
    out: Path


def _stop_if_diverged(trainer: GRPOTrainer, rec: dict, ckpts: RunCheckpoints) -> None:
    """A NaN/inf loss or LoRA weight stops the run before it can reach a checkpoint."""
    loss = rec["loss"]
    if not math.isfinite(loss):
        what = f"loss is {loss}"
    elif not all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(trainer.lora)):
        what = "LoRA weights are not finite"
    else:
        return
    raise diverged(
        f"rl step {trainer.step}", what, ckpts.latest.directory, ckpts.latest_step(),
        "rl.lr or rl.grad_clip",
    )  # fmt: skip


def _save(ckpts: RunCheckpoints, trainer: GRPOTrainer) -> None:
    meta = {
        "step": trainer.step,
        "history": {"steps": trainer.history.steps, "evals": trainer.history.evals},
    }
    ckpts.save(trainer.step, trainer.lora, trainer.opt_state, meta, {"ref": trainer.ref_lora})


def _resume(ckpts: RunCheckpoints, trainer: GRPOTrainer) -> None:
    got = ckpts.restore(trainer.lora, trainer.opt_state, extra={"ref": trainer.ref_lora})
    history = History(got.meta["history"]["steps"], got.meta["history"]["evals"])
    trainer.set_state(got.params, got.extra["ref"], got.opt_state, int(got.meta["step"]), history)


def _summary(trainer: GRPOTrainer, init: str | None) -> dict:
    steps = trainer.history.steps
    return {
        "init": init,
        "steps": trainer.step,
        "first_reward": steps[0]["reward_mean"] if steps else None,
        "last_reward": steps[-1]["reward_mean"] if steps else None,
        "evals": trainer.history.evals,
    }


def train_grpo(
    model: Model,
    cfg: RunConfig,
    train: Sequence[Example],
    evals: Sequence[Example],
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    force_config: bool = False,
    reward_fn: RewardFn | None = None,
    console: Console | None = None,
    init: str | None = None,
    show_progress: bool = True,
) -> RLResult:
    """Run (or resume) GRPO into run folder ``out``; returns the history and trained model.

    Writes ``config.yaml``, ``rl.json`` (``init``: what the policy started from),
    ``metrics.jsonl``, ``tb/``, ``checkpoints/<step>/`` (LoRA, reference LoRA, optimizer,
    history) and ``rl_plot.png``. A folder holding a run needs ``resume`` or ``force``; a
    resume whose settings would change what the next steps compute raises
    :class:`cotune.train.errors.ConfigChanged` unless ``force_config``.
    """
    out = Path(out)
    console = console or Console(stderr=True)
    resuming = open_run_dir(out, resume=resume, force=force)
    if resuming:
        check_resume_config(
            out,
            cfg,
            force_config,
            lambda m: console.print(m, markup=False, highlight=False),
            free=rl_resume_free,
            length=RL_RESUME_LENGTH,
        )
    model = ensure_lora(model, cfg.lora, cfg.rl.seed)
    trainer = GRPOTrainer(model, cfg, train, evals, reward_fn=reward_fn)
    rl = cfg.rl
    ckpts = RunCheckpoints(out, keep=rl.keep_checkpoints)
    try:
        if resuming:
            _resume(ckpts, trainer)
            console.print(f"[green]resumed from step {trainer.step}[/]")
        write_config(out, cfg)
        logger = MetricsLogger(out, resumed_at=trainer.step if resuming else None, tb_prefix="rl/")
        try:
            _loop(trainer, ckpts, logger, console, show_progress)
        finally:
            logger.close()
    finally:
        ckpts.close()
    plot_run(out, RL_PLOT)
    (out / "rl.json").write_text(json.dumps(_summary(trainer, init), indent=2), encoding="utf-8")
    return RLResult(trainer.history, model, out)


def _loop(
    trainer: GRPOTrainer,
    ckpts: RunCheckpoints,
    logger: MetricsLogger,
    console: Console,
    show_progress: bool,
) -> None:
    rl = trainer.rl

    def log(rec: dict) -> None:
        logger.log(rec["step"], **{k: v for k, v in rec.items() if k != "step"})

    if not trainer.history.evals and trainer.eval_set:
        log(trainer.evaluate())
    with progress_bar("GRPO", console=console, enabled=show_progress) as bar:
        task = bar.add_task("", total=rl.steps, completed=trainer.step)
        while trainer.step < rl.steps:
            rec = trainer.train_step()
            _stop_if_diverged(trainer, rec, ckpts)
            new_eval = None
            if trainer.eval_set and (trainer.step % rl.eval_every == 0 or trainer.step == rl.steps):
                new_eval = trainer.evaluate()
            if trainer.step % rl.log_every == 0 or new_eval:
                log(rec)
                if new_eval:
                    log(new_eval)
                for line in check_warnings(trainer.history, rec, new_eval):
                    console.print(
                        f"[bold yellow on red] WARNING [/] [bold yellow]step {trainer.step}: {line}[/]"
                    )
            evals = trainer.history.evals
            acc = evals[-1]["eval_accuracy"] if evals else float("nan")
            bar.update(
                task,
                advance=1,
                description=f"reward {rec['reward_mean']:+.3f}  kl {rec['kl']:.4f}  "
                f"held-out acc {acc:.1%}",
            )
            if trainer.step % rl.checkpoint_every == 0 or trainer.step == rl.steps:
                _save(ckpts, trainer)
