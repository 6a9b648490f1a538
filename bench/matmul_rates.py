"""Matrix-product rates on this CPU: XLA (jit) in float32, bf16 -> bf16, bf16 with float32
accumulation, and torch bf16 (oneDNN) when the bench extra is installed. These bound what
any step built from XLA products can reach here.

    .venv/bin/python -m bench.matmul_rates [--m 1024 --k 640 --n 65536]
    .venv/bin/python -m bench.matmul_rates --decode [--m 32] [--dtype float32]

Prints GFLOP/s, mean of 5 calls after a warm-up; no file is written. ``--decode`` times
the greedy decode step's products instead, on ``[m, 640]`` hidden states (bf16 unless
``--dtype float32``): the output projection against the 270M's 262,144 x 640 table as
``h @ E.T`` and as the vocabulary-major ``E @ h.T`` that ``cotune.generate.gemma3.logits``
uses, each with and without its greedy argmax; one plain read of the table (what any
projection must at least spend); and the 18 layers' fused projections as the decoder lays
them out (q/k/v, output, gate/up, down; ``[out, in]``).
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
    ap.add_argument("--m", type=int, help="rows (default 1024; with --decode, 32)")
    ap.add_argument("--k", type=int, default=640)
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--decode", action="store_true")
    ap.add_argument("--dtype", default="bfloat16", help="--decode: table and hidden dtype")
    a = ap.parse_args()
    if a.decode:
        return decode_projection(a.m or 32, dtype=a.dtype)
    a.m = a.m or 1024
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


def decode_projection(m: int, v: int = 262_144, d: int = 640, dtype: str = "bfloat16") -> None:
    """Milliseconds per call (median of 7) of the decode step's products."""
    import numpy as np

    from cotune.generate.sampling import argmax

    rng = np.random.default_rng(0)
    e = jnp.asarray(rng.standard_normal((v, d), np.float32)).astype(dtype)
    h = jnp.asarray(rng.standard_normal((m, d), np.float32)).astype(dtype)

    def dot(a, b):
        return jax.lax.dot_general(
            a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
        )

    variants = {
        "h @ E.T  [m, V]": jax.jit(lambda h, e: dot(h, e)),
        "E @ h.T  [V, m]": jax.jit(lambda h, e: dot(e, h)),
        "h @ E.T + argmax": jax.jit(lambda h, e: argmax(dot(h, e))),
        "E @ h.T + column argmax": jax.jit(lambda h, e: argmax(dot(e, h), axis=0)),
        "read the table once (a sum: the memory floor)": jax.jit(
            lambda h, e: jnp.sum(e, dtype=jnp.float32)
        ),
    }
    # the decoder's per-layer weights (cotune.generate.gemma3.fuse): [out, in], 18 distinct layers,
    # passed as an argument (closed over, jit would compile 200 MB of them in as constants)
    shapes = [(1536, d), (d, 1024), (4096, d), (d, 2048)]
    layers = [
        [jnp.asarray(rng.standard_normal(s, np.float32)).astype(dtype) for s in shapes]
        for _ in range(18)
    ]

    @jax.jit
    def layer_products(h, layers):
        x = jnp.tile(h, (1, 4))  # [m, 2560]: wide enough for every layer's input
        return sum(dot(x[:, : w.shape[1]], w).sum() for ws in layers for w in ws)

    runs = {name: (f, (h, e)) for name, f in variants.items()}
    runs["18 layers' projections (q/k/v, out, gate/up, down)"] = (layer_products, (h, layers))
    print(f"decode projection, m = {m}: [{m}, {d}] x [{v}, {d}] {dtype}, float32 results")
    for name, (f, args) in runs.items():
        jax.block_until_ready(f(*args))
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - t0)
        print(f"{name}: {sorted(times)[3] * 1e3:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
