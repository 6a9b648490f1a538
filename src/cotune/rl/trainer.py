"""One GRPO step and one held-out evaluation, over the LoRA weights of a policy.

A step: sample ``num_generations`` completions per question (:mod:`cotune.rl.rollout`),
score them (:mod:`cotune.rl.rewards`), turn rewards into group-relative advantages
(Tunix's ``compute_advantages``), then take ``num_iterations`` optimizer steps on the
clipped-ratio loss with a KL penalty (:mod:`cotune.rl.loss`).

With ``eval.calculator`` (a policy trained to leave its arithmetic to the calculator) both
the training rollouts and the held-out evaluation generate with the calculator, as the
policy will be used; the tokens it writes are kept out of the loss (:func:`loss_batch`).

The reference policy for the KL term is the *initial* policy: the same forward with the
LoRA weights frozen at step 0. Starting from a preset (fresh LoRA, B = 0) that is exactly
the LoRA-disabled base model; starting from an SFT run it is the SFT model, which is what
GRPO's KL should anchor to (the base model would pull the policy away from SFT).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tunix.rl.algo_core import compute_advantages

from cotune import format as fmt
from cotune.config import RunConfig
from cotune.model import Model
from cotune.rl import rewards as R
from cotune.rl.health import History, rollout_health
from cotune.rl.loss import LossCfg, loss_batch, make_loss_fns
from cotune.rl.questions import Example
from cotune.rl.rollout import Rollout, sample

RewardFn = Callable[..., list[float]]


def _optimizer(rl: Any) -> optax.GradientTransformation:
    """Adam at ``rl.lr`` after a linear warmup, with global-norm clipping."""
    sched = (
        optax.join_schedules(
            [
                optax.linear_schedule(0.0, rl.lr, max(rl.warmup_steps, 1)),
                optax.constant_schedule(rl.lr),
            ],
            [rl.warmup_steps],
        )
        if rl.warmup_steps
        else rl.lr
    )
    parts = [optax.clip_by_global_norm(rl.grad_clip)] if rl.grad_clip else []
    return optax.chain(*parts, optax.adam(sched))


def _forced_share(ro: Rollout) -> float:
    """Share of the rollout's completion tokens the calculator wrote."""
    total = sum(len(c) for c in ro.completion_ids)
    return sum(len(f) for f in ro.forced) / max(total, 1)


class GRPOTrainer:
    """GRPO over the LoRA parameters of ``model``; the rest of the weights stay frozen.

    ``reward_fn(prompts, completions, **fields) -> rewards`` replaces the configured reward
    mix (tests use it for a reward a tiny model can learn).
    """

    def __init__(
        self,
        model: Model,
        cfg: RunConfig,
        train: Sequence[Example],
        evals: Sequence[Example] = (),
        *,
        reward_fn: RewardFn | None = None,
    ) -> None:
        if not train:
            raise ValueError("GRPO needs at least one training question")
        self.model, self.cfg, self.rl = model, cfg, cfg.rl
        self.train_set, self.eval_set = list(train), list(evals)
        self.schema = cfg.format.schema_
        self.calculator = cfg.eval.calculator
        fixed = {
            "schema": self.schema,
            "budget_chars": self.rl.length_budget_chars,
            "budget_tokens": self.rl.length_budget_tokens,
        }
        self.breakdown = (
            (lambda p, c, **kw: {"total": list(reward_fn(p, c, **kw))})
            if reward_fn is not None
            else (
                lambda p, c, **kw: R.reward_breakdown(
                    p, c, self.rl.reward_weights, **{**kw, **fixed}
                )
            )
        )
        graphdef, lora, rest = nnx.split(model.module, nnx.LoRAParam, ...)
        if not jax.tree.leaves(lora):
            raise ValueError("model has no LoRA parameters: call ensure_lora first")
        self.lora = lora
        self.ref_lora = jax.tree.map(jnp.copy, lora)
        self.tx = _optimizer(self.rl)
        self.opt_state = self.tx.init(lora)
        self.step = 0
        self.history = History()
        loss_cfg = LossCfg(
            self.rl.beta,
            self.rl.epsilon,
            self.rl.temperature,
            self.rl.kl_mode,
            bf16=cfg.train.bf16_matmul,
        )
        self._logps, self._loss_grad = make_loss_fns(
            graphdef, rest, loss_cfg, micro_batch=self.rl.micro_batch
        )

    def set_state(
        self, lora: Any, ref_lora: Any, opt_state: Any, step: int, history: History
    ) -> None:
        """Continue from a checkpoint: weights, optimizer, step and history as restored."""
        self.lora, self.ref_lora, self.opt_state = lora, ref_lora, opt_state
        self.step, self.history = step, history
        nnx.update(self.model.module, self.lora)

    def batch_for_step(self, step: int) -> list[Example]:
        """Deterministic in (seed, step), so --resume replays exactly the same questions."""
        rng = np.random.default_rng([self.rl.seed, step])
        k = min(self.rl.prompts_per_step, len(self.train_set))
        return [self.train_set[i] for i in rng.choice(len(self.train_set), k, replace=False)]

    def train_step(self) -> dict[str, Any]:
        """Rollout G completions per question, score, and update the LoRA weights."""
        rl, g = self.rl, self.rl.num_generations
        t0 = time.perf_counter()
        batch = self.batch_for_step(self.step)
        prompts = [ex.prompt_ids for ex in batch for _ in range(g)]
        ro = sample(
            self.model,
            prompts,
            max_new_tokens=rl.max_new_tokens,
            temperature=rl.temperature,
            seed=rl.seed * 1_000_003 + self.step,
            schema=self.schema,
            calculator=self.calculator,
        )
        t_roll = time.perf_counter() - t0
        fields: dict[str, list] = {}
        for k in batch[0].fields:
            fields[k] = [ex.fields.get(k) for ex in batch for _ in range(g)]
        fields["truncated"] = ro.truncated
        fields["num_tokens"] = [len(c) for c in ro.completion_ids]
        prompt_texts = [self.model.tokenizer.decode(p) for p in prompts]
        parts = self.breakdown(prompt_texts, ro.texts, **fields)
        rewards = np.asarray(parts["total"], np.float32)
        adv = jnp.asarray(compute_advantages(rewards, g))  # (r - group mean) / (group std + eps)
        lb = loss_batch(
            prompts, ro.completion_ids, self.model.tokenizer.pad_id, rl.max_new_tokens, ro.forced
        )
        ref_lp = self._logps(self.ref_lora, lb)
        # With one iteration the rollout policy is the policy being differentiated, so the
        # loss takes its log-probs from its own forward (a forward pass saved per step).
        old_lp = self._logps(self.lora, lb) if rl.num_iterations > 1 else None
        aux: dict[str, Any] = {}
        for _ in range(rl.num_iterations):
            (loss, aux), grads = self._loss_grad(self.lora, lb, adv, old_lp, ref_lp)
            updates, self.opt_state = self.tx.update(grads, self.opt_state, self.lora)
            self.lora = optax.apply_updates(self.lora, updates)
        nnx.update(self.model.module, self.lora)
        self.step += 1
        rec = {
            "step": self.step,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            **{f"reward_{k}": float(np.mean(v)) for k, v in parts.items() if k != "total"},
            "loss": float(loss),
            "kl": float(aux.get("kl", 0.0)),
            "clipfrac": float(aux.get("clipfrac", 0.0)),
            "completion_len": float(np.mean(fields["num_tokens"])),
            # the calculator's share of the completion tokens (out of the loss)
            **({"forced_frac": _forced_share(ro)} if self.calculator else {}),
            **rollout_health(ro, self.schema, g),
            "rollout_s": round(t_roll, 3),
            "step_s": round(time.perf_counter() - t0, 3),
            "sample": ro.texts[0][:300],
        }
        self.history.steps.append(rec)
        return rec

    def evaluate(self) -> dict[str, Any]:
        """Greedy held-out answer accuracy (strict: only well-formed answers count), with the
        calculator when the run uses it, so it measures the policy as it will be used."""
        if not self.eval_set:
            return {}
        max_new = self.rl.eval_max_new_tokens or self.rl.max_new_tokens
        ro = sample(
            self.model,
            [ex.prompt_ids for ex in self.eval_set],
            max_new_tokens=max_new,
            temperature=0.0,
            seed=0,
            schema=self.schema,
            calculator=self.calculator,
        )
        golds = [ex.fields["answer"] for ex in self.eval_set]
        qs = [ex.fields.get("question") for ex in self.eval_set]
        correct = R.correctness_reward(
            [""] * len(golds), ro.texts, answer=golds, question=qs, schema=self.schema
        )
        well = [
            fmt.parse_completion(t, self.schema, strict=True).well_formed  # type: ignore[arg-type]
            for t in ro.texts
        ]
        rec = {
            "step": self.step,
            "eval_accuracy": float(np.mean(correct)),
            "eval_well_formed": float(np.mean(well)),
            "eval_truncated": float(np.mean(ro.truncated)),
            "eval_n": len(golds),
        }
        self.history.evals.append(rec)
        return rec
