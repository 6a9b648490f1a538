"""SFT on the tiny model: packing is exact, loss falls, resume is exact, checkpoints reload."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cotune.lora import apply_lora
from cotune.model import load
from cotune.train.batches import make_plan
from cotune.train.errors import TrainError, TrainingDiverged
from cotune.train.load import load_run
from cotune.train.loss import full_logits, per_example_loss
from cotune.train.plan import tokenize
from cotune.train.sft import train


def test_packed_equals_unpacked_per_example_loss(cfg, records) -> None:
    c = cfg()
    model = load("tiny")
    module = apply_lora(model.module, c.lora)
    # Non-zero LoRA B so the adapters actually take part in the forward.
    for _, m in module.iter_modules():
        for name in [n for n in vars(m) if n.endswith("_lora_b")]:
            v = getattr(m, name)
            v[...] = 0.05 * jax.random.normal(jax.random.key(1), v[...].shape)
    exs, _ = tokenize(c, model.tokenizer, records(6))
    packed = make_plan(exs, row_len=256, rows_per_micro=3, pack=True, seed=0)
    padded = make_plan(exs, row_len=256, rows_per_micro=6, pack=False, seed=0)
    assert len(packed) == 1 and len(packed.steps[0]) <= 3  # several examples per row
    losses = {}
    for name, plan in (("packed", packed), ("padded", padded)):
        b = plan.batch(exs, 0, model.tokenizer.pad_id)
        per = per_example_loss(module, b.arrays(), b.example, b.n_examples)
        order = [i for row in plan.steps[0] for i in row]  # example index -> record index
        losses[name] = {exs[i].record_index: float(per[k]) for k, i in enumerate(order)}
    assert losses["packed"].keys() == losses["padded"].keys() and len(losses["packed"]) == 6
    for k in losses["packed"]:
        np.testing.assert_allclose(losses["packed"][k], losses["padded"][k], rtol=2e-5)
    # And both equal a plain full-logits forward of the example alone.
    ex = exs[0]
    logits = full_logits(module, jnp.asarray(ex.tokens[None]))[0]
    tgt = np.nonzero(ex.loss_mask)[0]
    lp = jax.nn.log_softmax(logits[tgt - 1], axis=-1)
    ref = -float(jnp.mean(lp[jnp.arange(len(tgt)), ex.tokens[tgt]]))
    np.testing.assert_allclose(losses["packed"][ex.record_index], ref, rtol=2e-5)


def test_loss_falls_and_run_folder(tmp_path: Path, cfg, records) -> None:
    res = train(
        cfg(),
        tmp_path / "run",
        train_records=records(),
        val_records=records(4),
        val_fn=lambda m, recs: {"val_accuracy": 0.25},
        progress=False,
    )
    assert res.steps == 30 and len(res.losses) == 30
    assert np.mean(res.losses[-5:]) < 0.7 * np.mean(res.losses[:5])
    run = tmp_path / "run"
    for name in ("config.yaml", "run.json", "metrics.jsonl", "loss_curve.png", "tb"):
        assert (run / name).exists(), name
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [
        20,
        30,
    ]
    assert res.best_step == 30  # val_fn reported once at the end
    with pytest.raises(TrainError, match="--resume"):
        train(cfg(), run, train_records=records(), progress=False)


def test_resume_matches_uninterrupted_and_reload(tmp_path: Path, cfg, records) -> None:
    c = cfg("train.steps=12", "train.checkpoint_every=4")
    full = train(c, tmp_path / "a", train_records=records(), progress=False)
    part = train(c, tmp_path / "b", train_records=records(), stop_after=6, progress=False)
    assert part.stopped_early and part.steps == 6
    done = train(c, tmp_path / "b", resume=True, train_records=records(), progress=False)
    assert done.steps == 12
    np.testing.assert_allclose(done.losses, full.losses[6:], rtol=1e-5)
    a = nnx.state(full.model.module, nnx.LoRAParam)
    b = nnx.state(done.model.module, nnx.LoRAParam)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)

    # Reload from disk: identical logits, LoRA-applied and merged.
    toks = jnp.asarray(np.arange(2, 40, dtype=np.int32)[None])
    want = full_logits(full.model.module, toks)
    again = load_run(tmp_path / "a", which="last")
    np.testing.assert_allclose(full_logits(again.module, toks), want, rtol=1e-5, atol=1e-5)
    merged = load_run(tmp_path / "a", which="last", merged=True)
    assert not nnx.state(merged.module, nnx.LoRAParam)
    np.testing.assert_allclose(full_logits(merged.module, toks), want, rtol=1e-4, atol=1e-4)


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path: Path, cfg, records, poison_loss) -> None:
    poison_loss(7, float("nan"))
    c = cfg("train.steps=10", "train.checkpoint_every=5")
    with pytest.raises(TrainingDiverged, match="step 7: loss is nan"):
        train(c, tmp_path / "r", train_records=records(), progress=False)
    steps = [p.name for p in (tmp_path / "r" / "checkpoints").iterdir() if p.name.isdigit()]
    assert steps == ["5"]


@pytest.mark.parametrize("train_embedding", [False, True])
def test_full_finetune_embedding_frozen_unless_asked(
    tmp_path: Path, cfg, records, train_embedding
) -> None:
    """A full fine-tune trains every decoder weight; the tied embedding only on request, and
    the reloaded run reproduces the trained model's logits either way."""
    c = cfg(
        "lora.enabled=false",
        "train.steps=4",
        "optim.lr=1e-3",
        "train.bf16_matmul=true",
        f"train.train_embedding={str(train_embedding).lower()}",
    )
    base = load("tiny").module
    before_emb = np.asarray(base.embedder.input_embedding[...]).copy()
    before_q = np.asarray(base.layers[0].attn.q_einsum.w[...]).copy()
    res = train(c, tmp_path / "run", train_records=records(), progress=False)
    m = res.model.module
    after_emb = np.asarray(m.embedder.input_embedding[...])
    assert not np.allclose(np.asarray(m.layers[0].attn.q_einsum.w[...]), before_q)
    assert np.array_equal(after_emb, before_emb) != train_embedding
    toks = jnp.asarray(np.arange(2, 40, dtype=np.int32)[None])
    again = load_run(tmp_path / "run", which="last")
    np.testing.assert_allclose(
        full_logits(again.module, toks), full_logits(m, toks), rtol=1e-5, atol=1e-5
    )
