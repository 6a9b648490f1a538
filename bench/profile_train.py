"""Where an SFT step's time goes on the real 270M: hidden-state forward, its backward, and
the full LoRA loss gradient (8 x 128 tokens, 512 trained positions, bf16 matmuls); the
output projection + loss alone, with materialized ``[512, 262144]`` logits and streamed
over the vocabulary; the step's gradient with adapters on attention only (what the MLP
adapters cost); and the decoder's forward+backward without any adapters (what all of them
cost). Next to each time: the minor page faults of one call (``getrusage``), which
``COTUNE_MALLOC_TUNING=0`` brings back (cotune/runtime.py):

    .venv/bin/python -m bench.profile_train [--f32]
    COTUNE_MALLOC_TUNING=0 .venv/bin/python -m bench.profile_train

Prints the best of three timings per piece (after a compile call); no file is written.
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cotune.config import load_config
from cotune.lora import apply_lora
from cotune.model import load
from cotune.runtime import enable_compilation_cache
from cotune.train import forward
from cotune.train.batches import attention_mask
from cotune.train.loss import frozen_projected_ce_bf16, projected_ce_bf16, summed_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--f32", action="store_true", help="float32 matmuls instead of bf16")
    bf16 = not ap.parse_args().f32
    enable_compilation_cache()
    base = load("gemma3-270m").module
    module = apply_lora(base, load_config(None).lora)
    gd, tr, fr = forward.split_for_training(module, True, bf16)
    b, t, k = 8, 128, 512
    rng = np.random.default_rng(0)
    mb = {
        "tokens": jnp.asarray(rng.integers(10, 20000, (b, t)), jnp.int32),
        "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)),
        "segments": jnp.ones((b, t), jnp.int32),
        "gather": jnp.asarray(rng.choice(b * t, k, replace=False), jnp.int32),
        "labels": jnp.asarray(rng.integers(10, 20000, k), jnp.int32),
        "weights": jnp.ones((k,), jnp.float32),
    }

    def hidden(tr, fr, mb):
        m = nnx.merge(gd, tr, fr)
        mask = attention_mask(mb["segments"], jnp)
        return forward.hidden_states(m, mb["tokens"], mb["positions"], mask).sum()

    def loss(tr, fr, mb):
        return summed_loss(nnx.merge(gd, tr, fr), mb, bf16)

    emb = fr["embedder"]["input_embedding"].get_value()
    h = jnp.asarray(rng.normal(size=(k, emb.shape[1])), jnp.float32)

    def head(ce):
        return jax.jit(jax.grad(lambda h, e, y: jnp.sum(ce(h, e, y))))

    attn_only = load_config(None).lora.model_copy(
        update={"targets": ".*q_einsum|.*kv_einsum|.*attn_vec_einsum"}
    )
    gd_a, tr_a, fr_a = forward.split_for_training(  # adapters on the base model, not on top
        apply_lora(base, attn_only), True, bf16
    )

    def loss_attn(tr, fr, mb):
        return summed_loss(nnx.merge(gd_a, tr, fr), mb, bf16)

    # No adapters: the base model's decoder, differentiated w.r.t. the pre-attention norm
    # scales so the backward still runs through every layer.
    forward.set_bf16_matmul(base, bf16)
    norms = nnx.All(nnx.Param, nnx.PathContains("pre_attention_norm"))
    gd_n, tr_n, fr_n = nnx.split(base, norms, ...)
    forward.set_bf16_matmul(base, False)
    fr_n = forward.bf16_frozen_weights(fr_n) if bf16 else fr_n

    def hidden_base(tr, fr, mb):
        m = nnx.merge(gd_n, tr, fr)
        mask = attention_mask(mb["segments"], jnp)
        return forward.hidden_states(m, mb["tokens"], mb["positions"], mask).sum()

    pieces = {
        "hidden forward": (jax.jit(hidden), (tr, fr, mb)),
        "hidden forward+backward": (jax.jit(jax.grad(hidden)), (tr, fr, mb)),
        "  same, no adapters": (jax.jit(jax.grad(hidden_base)), (tr_n, fr_n, mb)),
        "loss forward+backward (the step's gradient)": (jax.jit(jax.grad(loss)), (tr, fr, mb)),
        "  same, adapters on attention only": (jax.jit(jax.grad(loss_attn)), (tr_a, fr_a, mb)),
        f"output projection + loss + grad, {k} positions, [N, V] logits": (
            head(projected_ce_bf16),
            (h, emb, mb["labels"]),
        ),
        f"output projection + loss + grad, {k} positions, streamed vocabulary": (
            head(frozen_projected_ce_bf16),
            (h, emb, mb["labels"]),
        ),
    }
    for name, (f, args) in pieces.items():
        jax.block_until_ready(f(*args))
        times, faults = [], []
        for _ in range(3):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - t0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        print(f"{name}: {min(times):.2f} s, {min(faults):,} page faults", flush=True)


if __name__ == "__main__":
    main()
