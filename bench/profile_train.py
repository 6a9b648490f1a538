"""Where an SFT step's time goes on the real 270M: hidden-state forward, its backward, and
the full LoRA loss gradient (8 x 128 tokens, 512 trained positions, bf16 matmuls); the
output projection + loss alone, with materialized ``[512, 262144]`` logits and streamed
over the vocabulary; and the step's gradient with adapters on attention only (what the MLP
adapters cost).

    .venv/bin/python -m bench.profile_train [--f32]

Prints the best of three timings per piece (after a compile call); no file is written.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cotune.config import load_config
from cotune.model import load
from cotune.train import lora as lora_lib
from cotune.train.batches import attention_mask
from cotune.train.loss import frozen_projected_ce_bf16, projected_ce_bf16, summed_loss
from cotune.train.sft import enable_compilation_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--f32", action="store_true", help="float32 matmuls instead of bf16")
    bf16 = not ap.parse_args().f32
    enable_compilation_cache()
    base = load("gemma3-270m").module
    module = lora_lib.apply_lora(base, load_config(None).lora)
    gd, tr, fr = lora_lib.split_for_training(module, True, bf16)
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
        return lora_lib.hidden_states(m, mb["tokens"], mb["positions"], mask).sum()

    def loss(tr, fr, mb):
        return summed_loss(nnx.merge(gd, tr, fr), mb, bf16)

    emb = fr["embedder"]["input_embedding"].get_value()
    h = jnp.asarray(rng.normal(size=(k, emb.shape[1])), jnp.float32)

    def head(ce):
        return jax.jit(jax.grad(lambda h, e, y: jnp.sum(ce(h, e, y))))

    attn_only = load_config(None).lora.model_copy(
        update={"targets": ".*q_einsum|.*kv_einsum|.*attn_vec_einsum"}
    )
    gd_a, tr_a, fr_a = lora_lib.split_for_training(  # adapters on the base model, not on top
        lora_lib.apply_lora(base, attn_only), True, bf16
    )

    def loss_attn(tr, fr, mb):
        return summed_loss(nnx.merge(gd_a, tr, fr), mb, bf16)

    pieces = {
        "hidden forward": (jax.jit(hidden), (tr, fr, mb)),
        "hidden forward+backward": (jax.jit(jax.grad(hidden)), (tr, fr, mb)),
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
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - t0)
        print(f"{name}: {min(times):.2f} s", flush=True)


if __name__ == "__main__":
    main()
