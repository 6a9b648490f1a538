"""Where an SFT step's time goes on the real 270M: hidden-state forward, its backward, and
the full LoRA loss gradient (8 x 128 tokens, 512 trained positions, bf16 matmuls).

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
from cotune.train.loss import summed_loss
from cotune.train.sft import enable_compilation_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--f32", action="store_true", help="float32 matmuls instead of bf16")
    bf16 = not ap.parse_args().f32
    enable_compilation_cache()
    module = lora_lib.apply_lora(load("gemma3-270m").module, load_config(None).lora)
    lora_lib.set_bf16_matmul(module, bf16)
    gd, tr, fr = nnx.split(module, nnx.LoRAParam, ...)
    if bf16:
        fr = lora_lib.bf16_frozen_weights(fr)
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

    pieces = {
        "hidden forward": jax.jit(hidden),
        "hidden forward+backward": jax.jit(jax.grad(hidden)),
        "loss forward+backward (the step's gradient)": jax.jit(jax.grad(loss)),
    }
    for name, f in pieces.items():
        jax.block_until_ready(f(tr, fr, mb))
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(f(tr, fr, mb))
            times.append(time.perf_counter() - t0)
        print(f"{name}: {min(times):.2f} s", flush=True)


if __name__ == "__main__":
    main()
