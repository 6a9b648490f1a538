"""bf16 matmuls (custom VJPs) give the same loss and gradients as float32, within bf16 error."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cotune.config import LoraCfg
from cotune.model import load
from cotune.train import lora as lora_lib
from cotune.train.loss import summed_loss


def _batch(vocab: int) -> dict:
    rng = np.random.default_rng(0)
    b, t, k = 2, 24, 20
    return {
        "tokens": jnp.asarray(rng.integers(5, vocab, (b, t)), jnp.int32),
        "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)),
        "segments": jnp.ones((b, t), jnp.int32),
        "gather": jnp.asarray(rng.choice(b * t, k, replace=False), jnp.int32),
        "labels": jnp.asarray(rng.integers(5, vocab, k), jnp.int32),
        "weights": jnp.ones((k,), jnp.float32),
    }


def _loss_and_grads(module, bf16: bool, filt, mb):
    lora_lib.set_bf16_matmul(module, bf16)
    gd, tr, fr = nnx.split(module, filt, ...)
    lora_lib.set_bf16_matmul(module, False)

    def f(tr):
        return summed_loss(nnx.merge(gd, tr, fr), mb, bf16)

    return jax.jit(jax.value_and_grad(f))(tr)


def _cos(a, b) -> float:
    """Cosine between flattened gradients: bf16 rounding (~0.4% per product, amplified by the
    tiny model's large random norm gains) moves them a few percent; a wrong transpose or a
    missing LoRA term turns them."""
    a, b = np.concatenate([np.ravel(x) for x in a]), np.concatenate([np.ravel(x) for x in b])
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_bf16_lora_grads_match_f32() -> None:
    model = load("tiny")
    module = lora_lib.apply_lora(model.module, LoraCfg(rank=4, alpha=8.0))
    state = nnx.state(module, nnx.LoRAParam)
    keys = iter(jax.random.split(jax.random.key(3), len(jax.tree.leaves(state))))
    nnx.update(module, jax.tree.map(lambda x: 0.3 * jax.random.normal(next(keys), x.shape), state))
    mb = _batch(model.config.num_embed)
    l32, g32 = _loss_and_grads(module, False, nnx.LoRAParam, mb)
    l16, g16 = _loss_and_grads(module, True, nnx.LoRAParam, mb)
    assert abs(float(l16) - float(l32)) / float(l32) < 1e-2
    assert _cos(jax.tree.leaves(g16), jax.tree.leaves(g32)) > 0.995
    # The explicit LoRA path really adds the adapters: zeroing B changes the loss.
    nnx.update(module, jax.tree.map(lambda x: jnp.zeros_like(x), state))
    l0, _ = _loss_and_grads(module, True, nnx.LoRAParam, mb)
    assert abs(float(l0) - float(l16)) > 1e-3


def test_bf16_full_finetune_grads_match_f32() -> None:
    model = load("tiny")
    mb = _batch(model.config.num_embed)
    l32, g32 = _loss_and_grads(model.module, False, nnx.Param, mb)
    l16, g16 = _loss_and_grads(model.module, True, nnx.Param, mb)
    assert abs(float(l16) - float(l32)) / float(l32) < 1e-2
    assert _cos(jax.tree.leaves(g16), jax.tree.leaves(g32)) > 0.995
