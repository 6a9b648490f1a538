"""Matrix-product rates on this CPU: XLA (jit) in float32, bf16 -> bf16, bf16 with float32
accumulation, and torch bf16 (oneDNN) when the bench extra is installed. These bound what
any step built from XLA products can reach here.

    .venv/bin/python -m bench.matmul_rates [--m 1024 --k 640 --n 65536]

Prints GFLOP/s, mean of 5 calls after a warm-up; no file is written.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp


def _rate(f, args, flops: float, n: int = 5) -> float:
    jax.block_until_ready(f(*args))
    t0 = time.perf_counter()
    for _ in range(n):
        jax.block_until_ready(f(*args))
    return flops / ((time.perf_counter() - t0) / n) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--m", type=int, default=1024)
    ap.add_argument("--k", type=int, default=640)
    ap.add_argument("--n", type=int, default=65536)
    a = ap.parse_args()
    flops = 2.0 * a.m * a.k * a.n
    x = jnp.ones((a.m, a.k), jnp.bfloat16)
    w = jnp.ones((a.k, a.n), jnp.bfloat16)
    variants = {
        "xla float32": jax.jit(lambda x, w: x.astype(jnp.float32) @ w.astype(jnp.float32)),
        "xla bf16 -> bf16": jax.jit(lambda x, w: x @ w),
        "xla bf16, float32 accumulation": jax.jit(
            lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32)
        ),
    }
    print(f"[{a.m}, {a.k}] @ [{a.k}, {a.n}]")
    for name, f in variants.items():
        print(f"{name}: {_rate(f, (x, w), flops):.0f} GFLOP/s", flush=True)
    try:
        import torch
    except ImportError:
        print("torch bf16: not installed (pip install -e .[bench])")
        return
    tx = torch.ones(a.m, a.k, dtype=torch.bfloat16)
    tw = torch.ones(a.k, a.n, dtype=torch.bfloat16)
    tx @ tw
    t0 = time.perf_counter()
    for _ in range(5):
        tx @ tw
    print(f"torch bf16 (oneDNN): {flops / ((time.perf_counter() - t0) / 5) / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
