"""``train.loss_vocab: data``: the training loss's softmax over the data's target tokens.

The restricted loss must equal cross-entropy over exactly those columns of the full logits
(values and gradients, f32 and the bf16 streamed path), the vocabulary must hold every
trained target and nothing from prompts, and a run records what it used.
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
from cotune.train.loss import data_vocabulary, output_logits, summed_loss, token_losses
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


def _reference(module, mb, vocab: np.ndarray) -> jax.Array:
    """Cross-entropy over the ``vocab`` columns of the float32 full-vocabulary logits."""
    h = forward.hidden_states(
        module, mb["tokens"], mb["positions"], attention_mask(mb["segments"], jnp)
    )
    b, n, d = h.shape
    picked = jnp.take(h.reshape(b * n, d), mb["gather"], axis=0)
    logits = output_logits(picked, module.embedder.input_embedding[...])[:, vocab]
    col = jnp.asarray(np.searchsorted(vocab, np.asarray(mb["labels"])).clip(0, len(vocab) - 1))
    lp = jax.nn.log_softmax(logits, axis=-1)
    return -lp[jnp.arange(lp.shape[0]), col]


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


@pytest.mark.parametrize("bf16", [False, True])
def test_restricted_loss_is_ce_over_those_columns(setup, bf16: bool) -> None:
    module, exs, mb = setup
    vocab = data_vocabulary(exs)
    w = np.asarray(mb["weights"]) > 0
    assert set(np.asarray(mb["labels"])[w].tolist()) <= set(vocab.tolist())
    ref = np.asarray(_reference(module, mb, vocab))[w]
    got = np.asarray(token_losses(module, mb, bf16, True, jnp.asarray(vocab)))[w]
    np.testing.assert_allclose(got, ref, rtol=2e-2 if bf16 else 1e-4, atol=2e-2 if bf16 else 1e-4)
    # Fewer columns in the softmax: every restricted loss is below the full one.
    full = np.asarray(token_losses(module, mb, False))[w]
    assert np.all(got < full + (2e-2 if bf16 else 1e-5))
    assert np.mean(full - got) > 0.1


def test_whole_vocabulary_as_data_vocabulary_is_the_full_loss(setup) -> None:
    module, _, mb = setup
    every = jnp.arange(module.embedder.input_embedding[...].shape[0], dtype=jnp.int32)
    np.testing.assert_allclose(
        np.asarray(token_losses(module, mb, False, True, every)),
        np.asarray(token_losses(module, mb, False)),
        rtol=1e-5,
    )


@pytest.mark.parametrize("bf16", [False, True])
def test_restricted_loss_gradients(setup, bf16: bool) -> None:
    module, exs, mb = setup
    vocab = data_vocabulary(exs)
    forward.set_bf16_matmul(module, bf16)
    gd, tr, fr = nnx.split(module, nnx.LoRAParam, ...)
    forward.set_bf16_matmul(module, False)
    gd32, tr32, fr32 = nnx.split(module, nnx.LoRAParam, ...)
    got = jax.grad(lambda t: summed_loss(nnx.merge(gd, t, fr), mb, bf16, True, jnp.asarray(vocab)))(
        tr
    )
    ref = jax.grad(
        lambda t: jnp.sum(_reference(nnx.merge(gd32, t, fr32), mb, vocab) * mb["weights"])
    )(tr32)
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(got)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(ref)])
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


def test_loss_vocab_rejects_unknown_mode(cfg) -> None:
    with pytest.raises(ConfigError, match="loss_vocab"):
        cfg("train.loss_vocab=some")
