"""GRPO on the tiny model: the loop learns a learnable reward, its log-probs and rollouts
are those of the plain model, and warnings fire when they should."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from rich.console import Console

from cotune import format as fmt
from cotune.config import load_config
from cotune.model import load
from cotune.rl.health import History, check_warnings, rollout_health
from cotune.rl.loss import LOSS_BUCKET, LossCfg, loss_batch, make_loss_fns
from cotune.rl.policy import ensure_lora, has_lora
from cotune.rl.questions import make_examples
from cotune.rl.rollout import Rollout, sample
from cotune.rl.run import train_grpo
from cotune.rl.trainer import GRPOTrainer

QUESTIONS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(8)]


def vowel_share(prompts, completions, **kw) -> list[float]:
    """Dense and learnable in a few dozen steps: the share of characters that are vowels.

    (Sparse rewards such as "first character is a digit" (~5% base rate) leave most
    groups with zero variance and made the test flaky.)"""
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


def test_reward_rises_on_learnable_task(tmp_path) -> None:
    cfg = load_config(
        None,
        [
            "rl.steps=30",
            "rl.num_generations=8",
            "rl.prompts_per_step=2",
            "rl.max_new_tokens=8",
            "rl.temperature=1.0",
            "rl.lr=0.03",
            "rl.beta=0.04",
            "rl.eval_every=1000",
            "rl.checkpoint_every=1000",
            "lora.rank=4",
            "lora.alpha=8",
        ],
    )
    model = load("tiny", seed=0)
    res = train_grpo(
        model,
        cfg,
        make_examples(QUESTIONS, model, cfg),
        [],
        tmp_path / "run",
        reward_fn=vowel_share,
        show_progress=False,
        console=Console(quiet=True),  # 8-token rollouts always trip the truncation warning
    )
    r = [s["reward_mean"] for s in res.history.steps]
    first, last = float(np.mean(r[:6])), float(np.mean(r[-6:]))
    assert last > first + 0.15, (first, last, r)
    assert all(np.isfinite(s["loss"]) and s["kl"] >= 0 for s in res.history.steps)
    assert res.history.steps[-1]["kl"] > 0  # the policy moved away from the reference
    assert (tmp_path / "run" / "rl_plot.png").stat().st_size > 1000
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 30


def test_loss_log_probs_equal_each_prompt_alone() -> None:
    """The loss batch pads prompts and completions of different lengths into one block; each
    row's completion log-probs must equal those of a forward over that row alone."""
    cfg = load_config(None, ["lora.rank=2"])
    model = ensure_lora(load("tiny"), cfg.lora)
    tok = model.tokenizer
    prompts = [tok.encode_segments(fmt.prompt_segments(q)) for q in ("2 + 2?", "What is 12 * 4?")]
    comps = [tok.encode("<reasoning>4</reasoning>") + [tok.end_of_turn_id], tok.encode("48")]
    graphdef, lora, rest = nnx.split(model.module, nnx.LoRAParam, ...)
    logps, _ = make_loss_fns(graphdef, rest, LossCfg(0.0, 0.2, 1.0, "low_var_kl"))
    got = np.asarray(logps(lora, loss_batch(prompts, comps, tok.pad_id, 12)))
    for r, (p, c) in enumerate(zip(prompts, comps, strict=True)):
        n = len(p) + len(c)
        logits, _ = model.module(
            jnp.asarray([p + c]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((n, n), bool))[None]
        )
        lp = jax.nn.log_softmax(logits[0, len(p) - 1 : n - 1].astype(jnp.float32), axis=-1)
        want = np.asarray(lp[jnp.arange(len(c)), jnp.asarray(c)])
        np.testing.assert_allclose(got[r, : len(c)], want, atol=1e-4)


def test_streamed_bf16_log_probs_and_gradient_match_float32() -> None:
    """``bf16=True`` streams the vocabulary instead of materialising ``[B, C, vocab]``
    logits; its log-probs and its loss gradient must be those of the float32 path up to
    bf16 rounding, at a temperature other than 1 (folded into the hidden states)."""
    cfg = load_config(None, ["lora.rank=2"])
    model = ensure_lora(load("tiny"), cfg.lora)
    tok = model.tokenizer
    prompts = [tok.encode_segments(fmt.prompt_segments(q)) for q in ("2 + 2?", "What is 12 * 4?")]
    comps = [tok.encode("<reasoning>4</reasoning>") + [tok.end_of_turn_id], tok.encode("48")]
    graphdef, lora, rest = nnx.split(model.module, nnx.LoRAParam, ...)
    # LoRA B starts at zero; perturb it so the adapters' gradient path is exercised
    leaves, tree = jax.tree.flatten(lora)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    lora = jax.tree.unflatten(
        tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )
    lb = loss_batch(prompts, comps, tok.pad_id, 12)
    out = {}
    for bf16 in (False, True):
        lp_fn, grad_fn = make_loss_fns(graphdef, rest, LossCfg(0.04, 0.2, 0.7, "low_var_kl", bf16))
        lp = lp_fn(lora, lb)
        adv = jnp.asarray([1.0, -1.0])
        (loss, _), grads = grad_fn(lora, lb, adv, lp - 0.01, lp + 0.02)
        out[bf16] = (np.asarray(lp) * np.asarray(lb.mask), float(loss), grads)
    np.testing.assert_allclose(out[True][0], out[False][0], atol=0.05)
    assert out[True][1] == pytest.approx(out[False][1], rel=0.02, abs=1e-3)
    g32 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(out[False][2])])
    g16 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(out[True][2])])
    assert np.linalg.norm(g32) > 0
    cos = g16 @ g32 / (np.linalg.norm(g16) * np.linalg.norm(g32))
    assert cos > 0.99, cos


def test_loss_without_old_log_probs_is_the_first_iteration_loss() -> None:
    """``old_lp=None`` (one optimizer step per rollout) must give the loss and gradient of
    passing the current policy's own log-probs, and rows of every length share one bucket."""
    cfg = load_config(None, ["lora.rank=2"])
    model = ensure_lora(load("tiny"), cfg.lora)
    tok = model.tokenizer
    prompts = [tok.encode_segments(fmt.prompt_segments(q)) for q in ("2 + 2?", "What is 12 * 4?")]
    comps = [tok.encode("<reasoning>4</reasoning>") + [tok.end_of_turn_id], tok.encode("48")]
    graphdef, lora, rest = nnx.split(model.module, nnx.LoRAParam, ...)
    leaves, tree = jax.tree.flatten(lora)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    lora = jax.tree.unflatten(
        tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )
    lb = loss_batch(prompts, comps, tok.pad_id, 12)
    assert lb.tokens.shape[1] % LOSS_BUCKET == 0
    assert loss_batch(prompts[:1], comps[:1], tok.pad_id, 12).tokens.shape[1] == lb.tokens.shape[1]
    lp_fn, grad_fn = make_loss_fns(graphdef, rest, LossCfg(0.04, 0.2, 1.0, "low_var_kl"))
    lp = lp_fn(lora, lb)
    adv = jnp.asarray([0.5, -1.5])
    (want, _), g_want = grad_fn(lora, lb, adv, lp, lp + 0.1)
    (got, _), g_got = grad_fn(lora, lb, adv, None, lp + 0.1)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert any(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g_got))


def test_micro_batches_give_the_whole_batch_loss_and_gradient() -> None:
    """Rows in passes of ``micro_batch`` (3 rows in passes of 2: the last one filled up with
    a masked copy) must give the loss, metrics and gradient of one pass over all rows."""
    cfg = load_config(None, ["lora.rank=2"])
    model = ensure_lora(load("tiny"), cfg.lora)
    tok = model.tokenizer
    qs = ("2 + 2?", "What is 12 * 4?", "What is 7 - 3?")
    prompts = [tok.encode_segments(fmt.prompt_segments(q)) for q in qs]
    comps = [tok.encode("<reasoning>4</reasoning>"), tok.encode("48"), tok.encode("4 and more")]
    graphdef, lora, rest = nnx.split(model.module, nnx.LoRAParam, ...)
    leaves, tree = jax.tree.flatten(lora)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    lora = jax.tree.unflatten(
        tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )
    lb = loss_batch(prompts, comps, tok.pad_id, 12)
    adv = jnp.asarray([0.5, -1.5, 1.0])
    out = {}
    for micro in (None, 2):
        lp_fn, grad_fn = make_loss_fns(
            graphdef, rest, LossCfg(0.04, 0.2, 1.0, "low_var_kl"), micro_batch=micro
        )
        lp = lp_fn(lora, lb)
        (loss, aux), grads = grad_fn(lora, lb, adv, lp - 0.05, lp + 0.1)
        out[micro] = (np.asarray(lp), float(loss), {k: float(v) for k, v in aux.items()}, grads)
    whole, parts = out[None], out[2]
    assert parts[0].shape == whole[0].shape == (3, 12)
    np.testing.assert_allclose(parts[0], whole[0], rtol=1e-5, atol=1e-5)
    assert parts[1] == pytest.approx(whole[1], rel=1e-4, abs=1e-6)  # float32 sums, reordered
    assert parts[2] == pytest.approx(whole[2], rel=1e-5)
    assert whole[2]["kl"] > 0
    for a, b in zip(jax.tree.leaves(parts[3]), jax.tree.leaves(whole[3]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_forced_tokens_are_out_of_the_loss_mask_only() -> None:
    """The calculator's tokens stay in the rows (later tokens read them) but get mask 0;
    indices past the completion or the loss length change nothing."""
    tok = load("tiny").tokenizer
    prompts = [tok.encode_segments(fmt.prompt_segments(q)) for q in ("2 + 2?", "What is 12 * 4?")]
    comps = [tok.encode("<reasoning>2 + 2 = 4</reasoning>"), tok.encode("48 / 2 = 24")]
    plain = loss_batch(prompts, comps, tok.pad_id, 12)
    forced = [(1, 3, 40), (0, len(comps[1]) - 1)]
    lb = loss_batch(prompts, comps, tok.pad_id, 12, forced)
    want = np.asarray(plain.mask).copy()
    want[0, [1, 3]] = 0.0
    want[1, [0, len(comps[1]) - 1]] = 0.0
    np.testing.assert_array_equal(np.asarray(lb.mask), want)
    assert np.asarray(plain.mask).sum() - np.asarray(lb.mask).sum() == 4
    for a, b in ((lb.tokens, plain.tokens), (lb.starts, plain.starts)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(lb.completions), np.asarray(plain.completions))
    same = loss_batch(prompts, comps, tok.pad_id, 12, [(), ()])
    np.testing.assert_array_equal(np.asarray(same.mask), np.asarray(plain.mask))
    with pytest.raises(ValueError, match="forced"):
        loss_batch(prompts, comps, tok.pad_id, 12, [()])


def test_grpo_with_the_calculator_samples_with_it_and_trains_around_it(monkeypatch) -> None:
    """``eval.calculator``: training rollouts and the held-out evaluation generate with the
    calculator, and the loss leaves out exactly the tokens it wrote. The random tiny model
    writes no claim of its own, so a stand-in forces one after its first token (as
    tests/test_generate_calculator.py does), then the real calculator writes its value."""
    from cotune.generate import api, host
    from cotune.rl import trainer as trainer_mod

    prefix = "<reasoning>48 / 2 ="
    monkeypatch.setattr(
        api,
        "calculator_text",
        lambda t: prefix if "<reasoning>" not in t else host.calculator_text(t),
    )
    sampled: list[tuple[bool, Rollout]] = []
    real_sample = trainer_mod.sample

    def spy_sample(*a, **k):
        ro = real_sample(*a, **k)
        sampled.append((k.get("calculator", False), ro))
        return ro

    batches = []
    real_batch = trainer_mod.loss_batch

    def spy_batch(*a, **k):
        batches.append(real_batch(*a, **k))
        return batches[-1]

    monkeypatch.setattr(trainer_mod, "sample", spy_sample)
    monkeypatch.setattr(trainer_mod, "loss_batch", spy_batch)
    n = 16
    cfg = load_config(
        None,
        ["lora.rank=2", "rl.num_generations=2", "rl.prompts_per_step=2",
         f"rl.max_new_tokens={n}", "rl.temperature=1.0", "eval.calculator=true"],
    )  # fmt: skip
    model = ensure_lora(load("tiny"), cfg.lora)
    tr = GRPOTrainer(
        model,
        cfg,
        make_examples(QUESTIONS, model, cfg),
        make_examples(QUESTIONS[:2], model, cfg),
        reward_fn=vowel_share,
    )
    rec = tr.train_step()
    tr.evaluate()
    assert [c for c, _ in sampled] == [True, True]
    ro = sampled[0][1]
    value = model.tokenizer.encode(prefix) + model.tokenizer.encode(" 24")
    assert sum(bool(f) for f in ro.forced) >= 2, ro.texts  # most rows got the claim
    mask = np.asarray(batches[0].mask)
    for i, (ids, f) in enumerate(zip(ro.completion_ids, ro.forced, strict=True)):
        if f:
            assert f == tuple(range(1, 1 + len(value))) and ids[1 : 1 + len(value)] == value
        want = np.zeros(n, np.float32)
        want[: len(ids)] = 1.0
        want[list(f)] = 0.0
        np.testing.assert_array_equal(mask[i], want)
    total = sum(len(c) for c in ro.completion_ids)
    assert rec["forced_frac"] == pytest.approx(sum(map(len, ro.forced)) / total)
    assert np.isfinite(rec["loss"])
    assert any(sampled[1][1].forced)  # the held-out evaluation had the calculator too


def test_greedy_rollouts_equal_decoding_without_cache(reference_greedy) -> None:
    """Rollouts come from cotune.generate: greedy ones are the plain model's greedy tokens,
    cut after the end token or the closing answer tag."""
    model = load("tiny")
    tok = model.tokenizer
    prompts = [
        tok.encode_segments(fmt.prompt_segments(q)) for q in ("What is 3 + 4?", "What is 12 * 4?")
    ]
    ro = sample(model, prompts, max_new_tokens=10, temperature=0.0, seed=0)
    want = reference_greedy(model, prompts, 10)
    assert ro.forced == [(), ()]  # no calculator, nothing forced
    for ids, ref, text, truncated in zip(
        ro.completion_ids, want, ro.texts, ro.truncated, strict=True
    ):
        assert ids == ref[: len(ids)]
        ended = ids[-1] in tok.end_ids or text.endswith("</answer>")
        assert truncated == (not ended) and (ended or len(ids) == 10)


def test_lora_required_and_reference_is_initial_policy() -> None:
    cfg = load_config(None, ["lora.rank=2"])
    model = load("tiny")
    with pytest.raises(ValueError, match="LoRA"):
        GRPOTrainer(model, cfg, make_examples(QUESTIONS, model, cfg))
    model = ensure_lora(model, cfg.lora)
    assert has_lora(model)
    assert ensure_lora(model, cfg.lora) is model  # SFT LoRA is kept, not stacked


def _hist(rewards: list[float], accs: list[tuple[int, float]]) -> History:
    steps = [{"step": i + 1, "reward_mean": r} for i, r in enumerate(rewards)]
    evals = [{"step": s, "eval_accuracy": a} for s, a in accs]
    return History(steps, evals)


def test_warns_when_reward_rises_but_accuracy_falls() -> None:
    h = _hist([0.1] * 5 + [0.9] * 5, [(5, 0.5), (10, 0.3)])
    msgs = check_warnings(h, None, h.evals[-1])
    assert any("reward hacking" in m for m in msgs)
    h = _hist([0.1] * 5 + [0.9] * 5, [(5, 0.5), (10, 0.6)])
    assert check_warnings(h, None, h.evals[-1]) == []


def test_warns_on_empty_duplicated_and_truncated_answers() -> None:
    ro = Rollout(
        [[1]] * 4,
        [[1]] * 4,
        [
            "<reasoning>x</reasoning>\n<answer></answer>",
            "<reasoning>x</reasoning>\n<answer>1</answer><answer>2</answer>",
            "<reasoning>x",
            "<reasoning>1 + 1 = 2</reasoning>\n<answer>2</answer>",
        ],
        [False, False, True, False],
    )
    assert ro.forced == [()] * 4  # left out: nothing forced
    health = rollout_health(ro, "tags", 2)
    assert health["empty_answer_frac"] == 0.25
    assert health["duplicated_answer_frac"] == 0.25
    assert health["truncated_frac"] == 0.25
    msgs = " | ".join(check_warnings(History(), health, None))
    assert "EMPTY" in msgs and "SEVERAL" in msgs and "max_new_tokens" in msgs
