"""GRPO on Qwix LoRA weights: a compact loop in JAX/Optax, with Tunix's GRPO math.

Why not ``tunix.rl.grpo.GRPOLearner`` (0.1.7) as a whole: its ``RLCluster`` rollout
("vanilla") drives ``tunix.generate.sampler.Sampler``, which decodes with an off-by-one
in 0.1.7 (degenerate, prompt-repeating text on a correctly loaded Gemma 3, see
``shared/notes/gemma3-270m-on-cpu.md``), and it takes prompts as *text* through
``tokenizer_adapter``, which calls a SentencePiece method removed in 0.2.3 and cannot
insert Gemma's control tokens as ids. Replacing both means a custom ``BaseRollout`` plus a
tokenizer shim inside an async learner whose loop, checkpointing and logging we could not
then hook for held-out accuracy and reward-hacking warnings. So the loop is ours (~one
screen: rollout -> rewards -> advantages -> clipped-ratio loss + KL), and the GRPO maths
is Tunix's own: group-relative advantages (``algo_core.compute_advantages``), KL
estimators (``common.compute_kl_divergence``), token log-probs
(``common.selective_log_softmax``).

Rollouts go through ONE function, :func:`sample`, which calls ``cotune.generate``
(a KV-cache sampler tested against a no-cache greedy loop) and falls back to
:func:`reference_sampler` (plain full-forward decoding, slow but obviously right) only
while ``cotune.generate`` is not installed.

The reference policy for the KL term is the *initial* policy: the same forward with the
LoRA weights frozen at step 0. Starting from a preset (fresh LoRA, B = 0) that is exactly
the LoRA-disabled base model; starting from an SFT run it is the SFT model, which is what
GRPO's KL should anchor to (the base model would pull the policy away from SFT).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from rich.console import Console
from tunix.rl.algo_core import compute_advantages
from tunix.rl.common import compute_kl_divergence, selective_log_softmax

from cotune import format as fmt
from cotune.config import LoraCfg, RunConfig, dump_config
from cotune.model import Model
from cotune.rl import rewards as R
from cotune.train.forward import hidden_states as lora_hidden_states

SampleFn = Callable[..., list[list[int]]]
"""(model, prompt_ids, max_new_tokens, temperature, seed, stop_strings=()) -> completion ids.

Temperature 0 means greedy. Completions may run past an end token or stop string (stopping
early is only an optimisation): :func:`sample` cuts them."""

RewardFn = Callable[..., list[float]]


# =========================================================================== LoRA


def has_lora(model: Model) -> bool:
    """Whether the module already carries Qwix LoRA parameters (e.g. loaded from SFT)."""
    return bool(jax.tree.leaves(nnx.state(model.module, nnx.LoRAParam)))


def ensure_lora(model: Model, lora: LoraCfg, seed: int = 0) -> Model:
    """Add fresh Qwix LoRA adapters unless the model already has some (SFT runs do).

    Fresh adapters start with B = 0, so the policy starts exactly at the loaded model.
    """
    if has_lora(model):
        return model
    from cotune.lora import apply_lora  # SFT's helper: RL adapters are built the same way

    module = apply_lora(model.module, lora, seed)
    if not has_lora(Model(module, model.tokenizer, model.config, model.name)):
        raise ValueError(f"lora.targets {lora.targets!r} matched no layer of {model.name}")
    return Model(module, model.tokenizer, model.config, model.name, {**model.meta, "rl_lora": True})


# =========================================================================== sampling


def _attention(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Positions and causal attention mask for left-padded rows (pads are never attended)."""
    positions = jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)
    t = mask.shape[-1]
    attn = jnp.tril(jnp.ones((t, t), bool))[None] & mask[:, None, :]
    return positions, attn


_REF_SAMPLERS: dict[tuple, Callable] = {}


def reference_sampler(
    model: Model,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    temperature: float,
    seed: int,
    stop_strings: Sequence[str] = (),
) -> list[list[int]]:
    """Full-forward decoding without a KV cache: O(T^2) per token, trivially correct.

    Only a stand-in for tests and for when ``cotune.generate`` is missing; far too slow for
    the 270M model's 262k-wide output layer at useful lengths.
    """
    graphdef, state = nnx.split(model.module)
    p = _bucket(max(len(x) for x in prompt_ids))
    tokens, mask = _left_pad(prompt_ids, p, model.tokenizer.pad_id)
    c = max_new_tokens
    tokens = np.concatenate([tokens, np.full((len(prompt_ids), c), model.tokenizer.pad_id)], 1)
    mask = np.concatenate([mask, np.zeros((len(prompt_ids), c), bool)], 1)
    # keyed on the module object (kept alive in the value so its id cannot be reused):
    # a fresh nnx.split graphdef each call would otherwise recompile every step
    key = (id(model.module), p, c, temperature > 0)
    if key not in _REF_SAMPLERS or _REF_SAMPLERS[key][0] is not model.module:
        greedy = temperature <= 0

        @jax.jit
        def loop(state, tokens, mask, rng, temp):
            def body(i, carry):
                tokens, mask, rng = carry
                # merged inside the loop body: Qwix LoRA sets attributes on the module
                # during the call, which NNX forbids across trace levels
                m = nnx.merge(graphdef, state)
                positions, attn = _attention(mask)
                logits, _ = m(tokens, positions, None, attn)
                last = jax.lax.dynamic_index_in_dim(logits, p + i - 1, axis=1, keepdims=False)
                rng, sub = jax.random.split(rng)
                nxt = (
                    jnp.argmax(last, -1)
                    if greedy
                    else jax.random.categorical(sub, last.astype(jnp.float32) / temp)
                )
                tokens = jax.lax.dynamic_update_index_in_dim(
                    tokens, nxt.astype(tokens.dtype), p + i, 1
                )
                mask = jax.lax.dynamic_update_index_in_dim(mask, jnp.ones_like(nxt, bool), p + i, 1)
                return tokens, mask, rng

            tokens, _, _ = jax.lax.fori_loop(0, c, body, (tokens, mask, rng))
            return tokens[:, p:]

        _REF_SAMPLERS[key] = (model.module, loop)
    out = _REF_SAMPLERS[key][1](
        state, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(seed), max(temperature, 1e-6)
    )
    return [list(map(int, row)) for row in np.asarray(out)]


def cotune_sampler(
    model: Model,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    temperature: float,
    seed: int,
    stop_strings: Sequence[str] = (),
) -> list[list[int]]:
    """Rollouts through ``cotune.generate.generate_detailed`` (KV cache, tested against a
    no-cache greedy loop); its token ids are used as sampled, never re-tokenized text."""
    from cotune.generate import generate_detailed

    gens = generate_detailed(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        stop_strings=list(stop_strings),
    )
    return [[int(t) for t in g.token_ids] for g in gens]


def default_sampler() -> SampleFn:
    """``cotune.generate`` when installed, else the slow reference sampler (with a notice)."""
    try:
        import cotune.generate  # noqa: F401
    except ImportError:
        Console(stderr=True).print(
            "[yellow]cotune.generate is not available: rollouts use the slow reference "
            "sampler (full forward per token).[/]"
        )
        return reference_sampler
    return cotune_sampler


def _bucket(n: int, step: int = 16) -> int:
    """Round a length up so jit compiles one program per bucket, not per batch."""
    return max(step, int(math.ceil(n / step) * step))


def _left_pad(
    rows: Sequence[Sequence[int]], length: int, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.full((len(rows), length), pad, np.int32)
    mask = np.zeros((len(rows), length), bool)
    for i, r in enumerate(rows):
        r = list(r)[-length:]
        tokens[i, length - len(r) :] = r
        mask[i, length - len(r) :] = True
    return tokens, mask


@dataclass
class Rollout:
    """Sampled completions, cut at the first end token (kept) or stop string."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    truncated: list[bool]  # hit max_new_tokens without an end token or stop string


def _cut(model: Model, ids: list[int], max_new: int, stops: list[str]) -> tuple[list[int], bool]:
    ends = set(model.tokenizer.end_ids)
    ids = ids[:max_new]
    for k, t in enumerate(ids):
        if t in ends:
            ids = ids[: k + 1]
            break
    else:
        text = model.tokenizer.decode(ids)
        if stops and any(s in text for s in stops):
            lo, hi = 1, len(ids)  # smallest prefix whose text contains a stop string
            while lo < hi:
                mid = (lo + hi) // 2
                if any(s in model.tokenizer.decode(ids[:mid]) for s in stops):
                    hi = mid
                else:
                    lo = mid + 1
            return ids[:lo], False
        return ids, len(ids) >= max_new
    return ids, False


def sample(
    model: Model,
    prompt_ids: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    schema: str = "tags",
    sample_fn: SampleFn | None = None,
) -> Rollout:
    """THE rollout entry point: every completion GRPO trains or evaluates on comes from here."""
    fn = sample_fn or default_sampler()
    stops = fmt.stop_strings(schema)  # type: ignore[arg-type]
    raw = fn(model, prompt_ids, max_new_tokens, temperature, seed, stop_strings=stops)
    comp, trunc = [], []
    for ids in raw:
        c, t = _cut(model, list(ids), max_new_tokens, stops)
        comp.append(c)
        trunc.append(t)
    texts = [model.tokenizer.decode(c) for c in comp]
    return Rollout(list(prompt_ids), comp, texts, trunc)


# =========================================================================== loss


@dataclass(frozen=True)
class LossCfg:
    beta: float
    epsilon: float
    temperature: float
    kl_mode: str


def _make_fns(graphdef: Any, rest: Any, cfg: LossCfg, completion_len: int):
    """Jitted per-token log-probs and GRPO loss+grad for this model structure."""

    # The frozen weights are an argument, never a closure: closed over, the 270M's weights
    # became compile-time constants (minutes to compile, a GB-sized executable to cache).
    def logps(lora, frozen, tokens, mask):
        m = nnx.merge(graphdef, lora, frozen)
        positions, attn = _attention(mask)
        # Project only the completion positions: full logits would be [B, T, 262144] floats
        # (GBs on the 270M, kept alive for the backward pass).
        h = lora_hidden_states(m, tokens, positions, attn)
        t = tokens.shape[1]
        h = h[:, t - completion_len - 1 : t - 1]
        logits = m.embedder.decode(h).astype(jnp.float32) / cfg.temperature
        return selective_log_softmax(logits, tokens[:, t - completion_len :])

    def loss(lora, frozen, tokens, mask, comp_mask, adv, old_lp, ref_lp):
        lp = logps(lora, frozen, tokens, mask)
        ratio = jnp.exp(jnp.clip(lp - old_lp, -20.0, 20.0))
        a = adv[:, None]
        per_tok = jnp.maximum(-a * ratio, -a * jnp.clip(ratio, 1 - cfg.epsilon, 1 + cfg.epsilon))
        kl = compute_kl_divergence(lp, ref_lp, cfg.kl_mode)
        if cfg.beta:
            per_tok = per_tok + cfg.beta * kl
        n_tok = jnp.maximum(comp_mask.sum(-1), 1.0)
        # sequence-mean-token-mean, Tunix's default aggregation for GRPO
        seq = (per_tok * comp_mask).sum(-1) / n_tok
        rows = jnp.maximum((comp_mask.sum(-1) > 0).sum(), 1)
        total = seq.sum() / rows
        aux = {
            "kl": (kl * comp_mask).sum() / jnp.maximum(comp_mask.sum(), 1.0),
            "clipfrac": ((jnp.abs(ratio - 1) > cfg.epsilon) * comp_mask).sum()
            / jnp.maximum(comp_mask.sum(), 1.0),
        }
        return total, aux

    jit_logps = jax.jit(logps)
    jit_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    return (
        lambda lora, tokens, mask: jit_logps(lora, rest, tokens, mask),
        lambda lora, *args: jit_grad(lora, rest, *args),
    )


# =========================================================================== trainer


@dataclass
class Example:
    """One RL question: its prompt ids and the batch fields rewards receive."""

    prompt_ids: list[int]
    fields: dict[str, Any]


def make_examples(records: Sequence[dict], model: Model, cfg: RunConfig) -> list[Example]:
    """Canonical records -> prompts in the run's template/schema (+ answer, question fields)."""
    out = []
    for r in records:
        seg = fmt.prompt_segments(
            r["question"], template=cfg.format.template, schema=cfg.format.schema_
        )
        fields = {"answer": str(r.get("answer", "")), "question": r["question"]}
        fields.update({k: v for k, v in r.items() if k not in ("question", "answer", "reasoning")})
        out.append(Example(model.tokenizer.encode_segments(seg), fields))
    return out


@dataclass
class History:
    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


class GRPOTrainer:
    """GRPO over the LoRA parameters of ``model``; the rest of the weights stay frozen."""

    def __init__(
        self,
        model: Model,
        cfg: RunConfig,
        train: Sequence[Example],
        evals: Sequence[Example] = (),
        *,
        reward_fn: RewardFn | None = None,
        breakdown_fn: Callable[..., dict[str, list[float]]] | None = None,
        sample_fn: SampleFn | None = None,
        console: Console | None = None,
    ) -> None:
        if not train:
            raise ValueError("GRPO needs at least one training question")
        self.model, self.cfg, self.rl = model, cfg, cfg.rl
        self.train_set, self.eval_set = list(train), list(evals)
        self.schema = cfg.format.schema_
        fixed = {
            "schema": self.schema,
            "budget_chars": self.rl.length_budget_chars,
            "budget_tokens": self.rl.length_budget_tokens,
        }
        self.breakdown = breakdown_fn or (
            lambda p, c, **kw: R.reward_breakdown(p, c, self.rl.reward_weights, **{**kw, **fixed})
        )
        if reward_fn is not None:
            self.breakdown = lambda p, c, **kw: {"total": list(reward_fn(p, c, **kw))}
        self.sample_fn = sample_fn or default_sampler()
        self.console = console or Console(stderr=True)
        graphdef, lora, rest = nnx.split(model.module, nnx.LoRAParam, ...)
        if not jax.tree.leaves(lora):
            raise ValueError("model has no LoRA parameters: call ensure_lora first")
        self.graphdef, self.lora, self.rest = graphdef, lora, rest
        self.ref_lora = jax.tree.map(jnp.copy, lora)
        sched = (
            optax.join_schedules(
                [
                    optax.linear_schedule(0.0, self.rl.lr, max(self.rl.warmup_steps, 1)),
                    optax.constant_schedule(self.rl.lr),
                ],
                [self.rl.warmup_steps],
            )
            if self.rl.warmup_steps
            else self.rl.lr
        )
        parts = [optax.clip_by_global_norm(self.rl.grad_clip)] if self.rl.grad_clip else []
        self.tx = optax.chain(*parts, optax.adam(sched))
        self.opt_state = self.tx.init(lora)
        self.step = 0
        self.history = History()
        loss_cfg = LossCfg(self.rl.beta, self.rl.epsilon, self.rl.temperature, self.rl.kl_mode)
        self._logps, self._loss_grad = _make_fns(graphdef, rest, loss_cfg, self.rl.max_new_tokens)

    # ------------------------------------------------------------------ batches

    def batch_for_step(self, step: int) -> list[Example]:
        """Deterministic in (seed, step), so --resume replays exactly the same questions."""
        rng = np.random.default_rng([self.rl.seed, step])
        k = min(self.rl.prompts_per_step, len(self.train_set))
        return [self.train_set[i] for i in rng.choice(len(self.train_set), k, replace=False)]

    def _pack(self, prompts: list[list[int]], comps: list[list[int]]):
        pad = self.model.tokenizer.pad_id
        c = self.rl.max_new_tokens
        p = _bucket(max(len(x) for x in prompts))
        pt, pm = _left_pad(prompts, p, pad)
        ct = np.full((len(comps), c), pad, np.int32)
        cm = np.zeros((len(comps), c), bool)
        for i, ids in enumerate(comps):
            ct[i, : len(ids)] = ids[:c]
            cm[i, : len(ids)] = True
        return (
            jnp.asarray(np.concatenate([pt, ct], 1)),
            jnp.asarray(np.concatenate([pm, cm], 1)),
            jnp.asarray(cm, jnp.float32),
        )

    # ------------------------------------------------------------------ one step

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
            sample_fn=self.sample_fn,
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
        adv = compute_advantages(rewards, g)  # Tunix: (r - group mean) / (group std + 1e-6)
        tokens, mask, comp_mask = self._pack(prompts, ro.completion_ids)
        ref_lp = self._logps(self.ref_lora, tokens, mask)
        old_lp = self._logps(self.lora, tokens, mask)
        aux: dict[str, Any] = {}
        for _ in range(rl.num_iterations):
            (loss, aux), grads = self._loss_grad(
                self.lora, tokens, mask, comp_mask, jnp.asarray(adv), old_lp, ref_lp
            )
            updates, self.opt_state = self.tx.update(grads, self.opt_state, self.lora)
            self.lora = optax.apply_updates(self.lora, updates)
        nnx.update(self.model.module, self.lora)
        self.step += 1
        health = rollout_health(ro, self.schema, g)
        rec = {
            "step": self.step,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            **{f"reward_{k}": float(np.mean(v)) for k, v in parts.items() if k != "total"},
            "loss": float(loss),
            "kl": float(aux.get("kl", 0.0)),
            "clipfrac": float(aux.get("clipfrac", 0.0)),
            "completion_len": float(np.mean(fields["num_tokens"])),
            **health,
            "rollout_s": round(t_roll, 3),
            "step_s": round(time.perf_counter() - t0, 3),
            "sample": ro.texts[0][:300],
        }
        self.history.steps.append(rec)
        return rec

    # ------------------------------------------------------------------ held-out eval

    def evaluate(self) -> dict[str, Any]:
        """Greedy held-out answer accuracy (strict: only well-formed answers count)."""
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
            sample_fn=self.sample_fn,
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

    # ------------------------------------------------------------------ checkpoint state

    def state_dict(self) -> dict[str, Any]:
        flat = lambda tree: {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree))}  # noqa: E731
        return {"lora": flat(self.lora), "ref": flat(self.ref_lora), "opt": flat(self.opt_state)}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        def unflat(tree, d):
            leaves = [jnp.asarray(d[k]) for k in sorted(d)]
            return jax.tree.unflatten(jax.tree.structure(tree), leaves)

        self.lora = unflat(self.lora, sd["lora"])
        self.ref_lora = unflat(self.ref_lora, sd["ref"])
        self.opt_state = unflat(self.opt_state, sd["opt"])
        nnx.update(self.model.module, self.lora)


def rollout_health(ro: Rollout, schema: str, g: int) -> dict[str, float]:
    """Shares of completions with empty / duplicated answers, truncation, collapsed groups."""
    n = max(len(ro.texts), 1)
    problems = [fmt.parse_completion(t, schema, strict=True).problems for t in ro.texts]  # type: ignore[arg-type]
    empty = sum(any(p == "empty answer" for p in ps) for ps in problems)
    dup = sum(any(p.startswith("duplicated") and "nswer" in p for p in ps) for ps in problems)
    groups = [ro.texts[i : i + g] for i in range(0, len(ro.texts), g)]
    same = sum(len(set(gr)) == 1 for gr in groups)
    return {
        "empty_answer_frac": empty / n,
        "duplicated_answer_frac": dup / n,
        "truncated_frac": sum(ro.truncated) / n,
        "identical_group_frac": same / max(len(groups), 1),
    }


# =========================================================================== warnings


def check_warnings(
    history: History, rec: dict[str, Any] | None, new_eval: dict | None
) -> list[str]:
    """Human-readable warnings for the latest step / eval (see docs/rl.md)."""
    out = []
    if rec:
        if rec.get("empty_answer_frac", 0) > 0:
            out.append(f"{rec['empty_answer_frac']:.0%} of rollouts have an EMPTY <answer>")
        if rec.get("duplicated_answer_frac", 0) > 0:
            out.append(f"{rec['duplicated_answer_frac']:.0%} of rollouts have SEVERAL answer tags")
        if rec.get("truncated_frac", 0) > 0:
            out.append(
                f"{rec['truncated_frac']:.0%} of rollouts hit max_new_tokens before closing the "
                "answer (rambling, or rl.max_new_tokens too small)"
            )
        if rec.get("identical_group_frac", 0) >= 1.0:
            out.append(
                "every group's completions are identical: zero advantage, no learning signal"
            )
    if new_eval and len(history.evals) >= 2:
        prev, cur = history.evals[-2], history.evals[-1]
        r_prev = [s["reward_mean"] for s in history.steps if s["step"] <= prev["step"]][-5:]
        r_cur = [s["reward_mean"] for s in history.steps if prev["step"] < s["step"] <= cur["step"]]
        if (
            r_prev
            and r_cur
            and np.mean(r_cur) > np.mean(r_prev)
            and (cur["eval_accuracy"] < prev["eval_accuracy"])
        ):
            out.append(
                f"mean reward ROSE ({np.mean(r_prev):.3f} -> {np.mean(r_cur):.3f}) while held-out "
                f"accuracy FELL ({prev['eval_accuracy']:.1%} -> {cur['eval_accuracy']:.1%}): "
                "possible reward hacking"
            )
    return out


# =========================================================================== run folder


def _plot(history: History, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [s["step"] for s in history.steps]
    ax.plot(xs, [s["reward_mean"] for s in history.steps], label="mean reward", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward", color="tab:blue")
    if history.evals:
        ax2 = ax.twinx()
        ax2.plot(
            [e["step"] for e in history.evals],
            [e["eval_accuracy"] for e in history.evals],
            "o-",
            color="tab:orange",
            label="held-out accuracy",
        )
        ax2.set_ylim(-0.02, 1.02)
        ax2.set_ylabel("held-out accuracy", color="tab:orange")
    ax.set_title("GRPO: training reward vs held-out accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _checkpointer(out: Path, keep: int):
    from cotune.train.checkpoint import make_manager  # cleans temp dirs of killed saves

    return make_manager(out / "checkpoints", keep)


def _save(mgr, trainer: GRPOTrainer) -> None:
    import orbax.checkpoint as ocp

    meta = {
        "step": trainer.step,
        "history": {"steps": trainer.history.steps, "evals": trainer.history.evals},
    }
    from cotune.train.checkpoint import save_step  # manifest + clear ENOSPC error

    save_step(
        mgr,
        trainer.step,
        ocp.args.Composite(
            state=ocp.args.StandardSave(trainer.state_dict()), meta=ocp.args.JsonSave(meta)
        ),
        force=True,
    )


def _restore(mgr, trainer: GRPOTrainer, quarantine: bool = True, step: int | None = None) -> bool:
    """Load the newest usable checkpoint (damaged ones skipped with a warning), or exactly
    ``step`` (a :class:`~cotune.train.checkpoint.CheckpointError` if it is missing or damaged)."""
    import orbax.checkpoint as ocp

    from cotune.train.checkpoint import restore_step  # skips damaged steps, warns

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, trainer.state_dict())

    def one(s: int):
        return mgr.restore(
            s,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )

    found = restore_step(mgr, one, step, quarantine=quarantine)
    if found is None:
        return False
    got = found[1]
    trainer.load_state_dict(got["state"])
    trainer.step = int(got["meta"]["step"])
    trainer.history = History(got["meta"]["history"]["steps"], got["meta"]["history"]["evals"])
    return True


def _stop_if_diverged(trainer: GRPOTrainer, rec: dict, mgr) -> None:
    """A NaN/inf loss or LoRA weight stops the run before it can reach a checkpoint."""
    from cotune.train.sft import TrainingDiverged

    bad = not math.isfinite(rec["loss"])
    if not bad:
        bad = not all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(trainer.lora))
    if bad:
        loss = rec["loss"]
        what = f"loss is {loss}" if not math.isfinite(loss) else "LoRA weights are not finite"
        raise TrainingDiverged(
            f"rl step {trainer.step}: {what}; stopped. The last good checkpoint is "
            f"kept in {mgr.directory} (step {mgr.latest_step()}). Try a lower rl.lr or "
            "rl.grad_clip."
        )


@dataclass
class RLResult:
    history: History
    model: Model  # the policy after training (LoRA updated in place)
    out: Path


def train_grpo(
    model: Model,
    cfg: RunConfig,
    train: Sequence[Example],
    evals: Sequence[Example],
    out: str | Path,
    *,
    resume: bool = False,
    reward_fn: RewardFn | None = None,
    sample_fn: SampleFn | None = None,
    console: Console | None = None,
    init: str | None = None,
    show_progress: bool = True,
) -> RLResult:
    """Run (or resume) GRPO into run folder ``out``; returns the history and trained model.

    Writes ``out/config.yaml``, ``out/rl.json``, ``out/metrics.jsonl``, ``out/tb/``
    (TensorBoard), ``out/checkpoints/<step>/`` (Orbax: LoRA, reference LoRA, optimizer,
    history) and ``out/rl_plot.png``.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from tensorboardX import SummaryWriter

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    model = ensure_lora(model, cfg.lora, cfg.rl.seed)
    trainer = GRPOTrainer(
        model, cfg, train, evals, reward_fn=reward_fn, sample_fn=sample_fn, console=console
    )
    rl = cfg.rl
    mgr = _checkpointer(out, rl.keep_checkpoints)
    if resume and _restore(mgr, trainer):
        console.print(f"[green]resumed from step {trainer.step}[/]")
    (out / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    metrics_path = out / "metrics.jsonl"
    # rewrite the metrics file from the restored history, so a crash leaves no orphan lines
    with metrics_path.open("w", encoding="utf-8") as f:
        for rec in trainer.history.steps + trainer.history.evals:
            f.write(json.dumps(rec) + "\n")
    tb = SummaryWriter(str(out / "tb"))

    def log(rec: dict) -> None:
        with metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        for k, v in rec.items():
            if k != "step" and isinstance(v, int | float):
                tb.add_scalar(f"rl/{k}", v, rec["step"])
        tb.flush()

    def warn(lines: list[str]) -> None:
        for line in lines:
            console.print(
                f"[bold yellow on red] WARNING [/] [bold yellow]step {trainer.step}: {line}[/]"
            )

    if not trainer.history.evals and trainer.eval_set:
        log(trainer.evaluate())
    progress = Progress(
        TextColumn("[bold]GRPO"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=not show_progress,
    )
    with progress:
        task = progress.add_task("", total=rl.steps, completed=trainer.step)
        while trainer.step < rl.steps:
            rec = trainer.train_step()
            _stop_if_diverged(trainer, rec, mgr)
            new_eval = None
            if trainer.eval_set and (trainer.step % rl.eval_every == 0 or trainer.step == rl.steps):
                new_eval = trainer.evaluate()
            if trainer.step % rl.log_every == 0 or new_eval:
                log({k: v for k, v in rec.items()})
                if new_eval:
                    log(new_eval)
                warn(check_warnings(trainer.history, rec, new_eval))
            acc = (
                trainer.history.evals[-1]["eval_accuracy"]
                if trainer.history.evals
                else float("nan")
            )
            progress.update(
                task,
                advance=1,
                description=f"reward {rec['reward_mean']:+.3f}  kl {rec['kl']:.4f}  held-out acc {acc:.1%}",
            )
            if trainer.step % rl.checkpoint_every == 0 or trainer.step == rl.steps:
                _save(mgr, trainer)
    tb.close()
    _plot(trainer.history, out / "rl_plot.png")
    summary = {
        "init": init,
        "steps": trainer.step,
        "first_reward": trainer.history.steps[0]["reward_mean"] if trainer.history.steps else None,
        "last_reward": trainer.history.steps[-1]["reward_mean"] if trainer.history.steps else None,
        "evals": trainer.history.evals,
    }
    (out / "rl.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return RLResult(trainer.history, model, out)


def load_rl_run(
    run_dir: str | Path, load_init: Callable[[str], Model], step: int | None = None
) -> Model:
    """The policy of a finished (or interrupted) RL run: its init model + trained LoRA.

    ``load_init`` turns the run's recorded ``init`` (a preset, a run folder, a checkpoint
    folder) into a model: :func:`cotune.runs.resolve`, which sits above this package.
    ``step``: that checkpoint instead of the latest.
    """
    from cotune.config import load_config

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "rl.json").read_text(encoding="utf-8"))
    cfg = load_config(run_dir / "config.yaml")
    model = ensure_lora(load_init(meta["init"]), cfg.lora, cfg.rl.seed)
    trainer = GRPOTrainer(model, cfg, [Example([0], {"answer": ""})], sample_fn=reference_sampler)
    if not _restore(_checkpointer(run_dir, cfg.rl.keep_checkpoints), trainer, False, step):
        raise FileNotFoundError(f"{run_dir}/checkpoints: no checkpoint to load")
    ckpt = run_dir / "checkpoints" / str(trainer.step)
    model.meta.update(run=str(run_dir), step=trainer.step, checkpoint=str(ckpt))
    return model


def copy_tree_fresh(out: Path, force: bool, resume: bool) -> None:
    """Refuse to overwrite a run folder unless --force (wipe) or --resume (continue)."""
    if out.exists() and any(out.iterdir()):
        if force:
            shutil.rmtree(out)
        elif not resume:
            raise FileExistsError(
                f"{out} already exists: use --resume to continue or --force to overwrite"
            )
