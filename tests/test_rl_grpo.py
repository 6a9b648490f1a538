"""GRPO on the tiny model: the loop learns a learnable reward; warnings fire when they should."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from cotune.config import load_config
from cotune.model import load
from cotune.rl import grpo

QUESTIONS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(8)]


def vowel_share(prompts, completions, **kw) -> list[float]:
    """Dense and learnable in a few dozen steps: the share of characters that are vowels.

    (Sparse rewards such as "first character is a digit" (~5% base rate) leave most
    groups with zero variance and made the test flaky.)"""
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


def test_reward_rises_on_learnable_task(tmp_path) -> None:
    # Measured: mean of the first 6 steps ~0.23, of the last 6 ~0.50 (seeds 0 and 1).
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
    ex = grpo.make_examples(QUESTIONS, model, cfg)
    res = grpo.train_grpo(
        model,
        cfg,
        ex,
        [],
        tmp_path / "run",
        reward_fn=vowel_share,
        sample_fn=grpo.reference_sampler,
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


def test_left_padding_does_not_change_logits() -> None:
    """Rollouts and the loss left-pad prompts; the last prompt position must not notice."""
    import jax.numpy as jnp

    from cotune import format as fmt

    model = load("tiny")
    ids = model.tokenizer.encode_segments(fmt.prompt_segments("What is 2 + 2?"))
    n = len(ids)
    ref, _ = model.module(
        jnp.asarray([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((n, n), bool))[None]
    )
    tokens, mask = grpo._left_pad([ids], n + 13, model.tokenizer.pad_id)
    positions, attn = grpo._attention(jnp.asarray(mask))
    got, _ = model.module(jnp.asarray(tokens), positions, None, attn)
    np.testing.assert_allclose(np.asarray(got[0, -1]), np.asarray(ref[0, -1]), atol=1e-4)


def test_cut_at_end_token_and_stop_string() -> None:
    model = load("tiny")
    tok = model.tokenizer
    body = tok.encode("<reasoning>1 + 1 = 2</reasoning><answer>2</answer>")
    ids, trunc = grpo._cut(model, body + tok.encode(" junk junk"), 64, ["</answer>"])
    assert tok.decode(ids).endswith("</answer>") and not trunc
    ids, trunc = grpo._cut(model, tok.encode("abc") + [tok.end_of_turn_id, 5, 6], 64, [])
    assert ids[-1] == tok.end_of_turn_id and not trunc
    ids, trunc = grpo._cut(model, tok.encode("a b c d e f g h")[:6], 6, ["</answer>"])
    assert trunc and len(ids) == 6


def test_lora_required_and_reference_is_initial_policy() -> None:
    cfg = load_config(None, ["lora.rank=2"])
    model = load("tiny")
    with pytest.raises(ValueError, match="LoRA"):
        grpo.GRPOTrainer(model, cfg, grpo.make_examples(QUESTIONS, model, cfg))
    model = grpo.ensure_lora(model, cfg.lora)
    assert grpo.has_lora(model)
    assert grpo.ensure_lora(model, cfg.lora) is model  # SFT LoRA is kept, not stacked


def _hist(rewards: list[float], accs: list[tuple[int, float]]) -> grpo.History:
    steps = [{"step": i + 1, "reward_mean": r} for i, r in enumerate(rewards)]
    evals = [{"step": s, "eval_accuracy": a} for s, a in accs]
    return grpo.History(steps, evals)


def test_warns_when_reward_rises_but_accuracy_falls() -> None:
    h = _hist([0.1] * 5 + [0.9] * 5, [(5, 0.5), (10, 0.3)])
    msgs = grpo.check_warnings(h, None, h.evals[-1])
    assert any("reward hacking" in m for m in msgs)
    h = _hist([0.1] * 5 + [0.9] * 5, [(5, 0.5), (10, 0.6)])
    assert grpo.check_warnings(h, None, h.evals[-1]) == []


def test_warns_on_empty_duplicated_and_truncated_answers() -> None:
    ro = grpo.Rollout(
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
    health = grpo.rollout_health(ro, "tags", 2)
    assert health["empty_answer_frac"] == 0.25
    assert health["duplicated_answer_frac"] == 0.25
    assert health["truncated_frac"] == 0.25
    msgs = " | ".join(grpo.check_warnings(grpo.History(), health, None))
    assert "EMPTY" in msgs and "SEVERAL" in msgs and "max_new_tokens" in msgs


def test_cotune_sampler_matches_reference_sampler_greedy() -> None:
    """The rollout adapter over cotune.generate yields the same greedy ids as full forward."""
    from cotune import format as fmt

    model = load("tiny")
    prompts = [
        model.tokenizer.encode_segments(fmt.prompt_segments(q))
        for q in ("What is 3 + 4?", "What is 12 * 4 minus 7?")
    ]
    ref = grpo.sample(
        model, prompts, max_new_tokens=10, temperature=0.0, seed=0, sample_fn=grpo.reference_sampler
    )
    got = grpo.sample(
        model, prompts, max_new_tokens=10, temperature=0.0, seed=0, sample_fn=grpo.cotune_sampler
    )
    assert got.completion_ids == ref.completion_ids
