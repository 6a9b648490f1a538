"""``train.loss_vocab: data``: a sampled softmax over the data's target tokens + drawn ones.

The restricted loss must equal cross-entropy over exactly those columns of the full logits,
with the drawn tokens' weight added to their logits (values and gradients, f32 and the bf16
streamed path); drawing every other token once gives the full loss back; the vocabulary
holds every trained target and nothing from prompts; draws are seeded by step; a run
records what it used.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cotune.config import ConfigError, LoraCfg
from cotune.lora import apply_lora
from cotune.model import load
from cotune.train import forward
from cotune.train.batches import attention_mask, make_plan
from cotune.train.loss import (
    SampledVocab,
    data_vocabulary,
    output_logits,
    summed_loss,
    token_losses,
)
from cotune.train.plan import tokenize
from cotune.train.sft import train


@pytest.fixture(scope="module")
def setup(cfg, records):
    c = cfg()
    model = load("tiny")
    module = apply_lora(model.module, LoraCfg(rank=4, alpha=8.0))
    for _, m in module.iter_modules():  # non-zero B: the adapters take part in the forward
        for name in [n for n in vars(m) if n.endswith("_lora_b")]:
            v = getattr(m, name)
            v[...] = 0.05 * jax.random.normal(jax.random.key(2), v[...].shape)
    exs, _ = tokenize(c, model.tokenizer, records(8))
    plan = make_plan(exs, row_len=256, rows_per_micro=2, pack=True, seed=0)
    batch = plan.batch(exs, 0, model.tokenizer.pad_id)
    mb = {k: jnp.asarray(v[0]) for k, v in batch.arrays().items()}
    return module, exs, mb


def _reference(module, mb, vocab: np.ndarray, negatives=None, log_weight: float = 0.0):
    """Cross-entropy over the ``vocab`` (+ ``negatives``, their logits raised by
    ``log_weight``) columns of the float32 full-vocabulary logits."""
    mask = attention_mask(mb["segments"], jnp)
    h = forward.hidden_states(module, mb["tokens"], mb["positions"], mask)
    b, n, d = h.shape
    picked = jnp.take(h.reshape(b * n, d), mb["gather"], axis=0)
    full = output_logits(picked, module.embedder.input_embedding[...])
    logits = full[:, vocab]
    if negatives is not None:
        logits = jnp.concatenate([logits, full[:, negatives] + log_weight], axis=1)
    col = jnp.asarray(np.searchsorted(vocab, np.asarray(mb["labels"])).clip(0, len(vocab) - 1))
    lp = jax.nn.log_softmax(logits, axis=-1)
    return -lp[jnp.arange(lp.shape[0]), col]


def _sampled(exs, module, k: int = 50) -> SampledVocab:
    return SampledVocab.build(exs, module.embedder.input_embedding[...].shape[0], k, seed=1)


def test_data_vocabulary_is_the_trained_targets_only(setup) -> None:
    _, exs, _ = setup
    vocab = data_vocabulary(exs)
    targets = {int(t) for e in exs for t in e.tokens[e.loss_mask]}
    assert vocab.tolist() == sorted(targets)
    # Prompt-only tokens (the question's words) are not in it.
    prompt_only = {int(t) for e in exs for t in e.tokens[~e.loss_mask]} - targets
    assert prompt_only and not prompt_only & set(vocab.tolist())
    with pytest.raises(ValueError, match="no training targets"):
        data_vocabulary([])


def test_draws_come_from_the_rest_and_are_seeded_by_step(setup) -> None:
    module, exs, _ = setup
    sv = _sampled(exs, module)
    v = module.embedder.input_embedding[...].shape[0]
    assert sorted(sv.vocab.tolist() + sv.rest.tolist()) == list(range(v))
    a = sv.negatives(3, 2)
    assert a.shape == (2, 50) and not set(a.ravel().tolist()) & set(sv.vocab.tolist())
    np.testing.assert_array_equal(a, sv.negatives(3, 2))  # a resumed run draws the same
    assert not np.array_equal(a, sv.negatives(4, 2))
    assert sv.log_weight == pytest.approx(np.log(len(sv.rest) / 50))


@pytest.mark.parametrize("bf16", [False, True])
def test_sampled_loss_is_ce_over_those_columns(setup, bf16: bool) -> None:
    module, exs, mb = setup
    sv = _sampled(exs, module)
    neg = sv.negatives(0, 1)[0]
    w = np.asarray(mb["weights"]) > 0
    assert set(np.asarray(mb["labels"])[w].tolist()) <= set(sv.vocab.tolist())
    ref = np.asarray(_reference(module, mb, sv.vocab, neg, sv.log_weight))[w]
    got = token_losses(
        module, {**mb, "negatives": jnp.asarray(neg)}, bf16, True, jnp.asarray(sv.vocab),
        sv.log_weight,
    )  # fmt: skip
    tol = 2e-2 if bf16 else 1e-4
    np.testing.assert_allclose(np.asarray(got)[w], ref, rtol=tol, atol=tol)
    # Without the drawn tokens the loss is lower than the full one (fewer columns): that gap
    # is what the drawn tokens estimate.
    alone = np.asarray(token_losses(module, mb, False, True, jnp.asarray(sv.vocab)))[w]
    full = np.asarray(token_losses(module, mb, False))[w]
    assert np.all(alone < full) and np.mean(full - alone) > 0.1
    np.testing.assert_allclose(alone, np.asarray(_reference(module, mb, sv.vocab))[w], rtol=1e-4)


def test_every_other_token_drawn_once_is_the_full_loss(setup) -> None:
    module, exs, mb = setup
    sv = _sampled(exs, module, k=1)
    rest = jnp.asarray(sv.rest)  # k = len(rest): each stands for itself (log weight 0)
    got = token_losses(module, {**mb, "negatives": rest}, False, True, jnp.asarray(sv.vocab), 0.0)
    w = np.asarray(mb["weights"]) > 0  # bucket padding's label is no target: not compared
    np.testing.assert_allclose(
        np.asarray(got)[w], np.asarray(token_losses(module, mb, False))[w], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("bf16", [False, True])
def test_sampled_loss_gradients(setup, bf16: bool) -> None:
    module, exs, mb = setup
    sv = _sampled(exs, module)
    neg = sv.negatives(0, 1)[0]
    vocab = jnp.asarray(sv.vocab)
    mbn = {**mb, "negatives": jnp.asarray(neg)}
    forward.set_bf16_matmul(module, bf16)
    gd, tr, fr = nnx.split(module, nnx.LoRAParam, ...)
    forward.set_bf16_matmul(module, False)
    gd32, tr32, fr32 = nnx.split(module, nnx.LoRAParam, ...)

    def f(t):
        return summed_loss(nnx.merge(gd, t, fr), mbn, bf16, True, vocab, sv.log_weight)

    def g(t):
        ce = _reference(nnx.merge(gd32, t, fr32), mb, sv.vocab, neg, sv.log_weight)
        return jnp.sum(ce * mb["weights"])

    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.grad(f)(tr))])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.grad(g)(tr32))])
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cos > (0.98 if bf16 else 0.99999), cos
    np.testing.assert_allclose(np.linalg.norm(a), np.linalg.norm(b), rtol=0.05 if bf16 else 1e-4)


def test_sft_with_data_vocabulary_learns_and_records_it(tmp_path: Path, cfg, records) -> None:
    res = train(
        cfg("train.loss_vocab=data", "train.bf16_matmul=true"),
        tmp_path / "run",
        train_records=records(),
        val_records=records(4),
        val_fn=lambda m, recs: {"val_accuracy": 0.0},
        progress=False,
    )
    assert np.mean(res.losses[-5:]) < 0.7 * np.mean(res.losses[:5])
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    n = info["loss_vocab"]["data"]
    assert 10 < n < load("tiny").module.embedder.input_embedding[...].shape[0]
    assert info["loss_vocab"]["negatives"] == 16384


def test_loss_vocab_rejects_unknown_mode(cfg) -> None:
    with pytest.raises(ConfigError, match="loss_vocab"):
        cfg("train.loss_vocab=some")
