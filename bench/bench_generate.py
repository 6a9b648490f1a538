"""Generation speed of the real Gemma 3 270M: tokens/s at batch 1 and 32, load times.

Run: ``.venv/bin/python bench/bench_generate.py [--new 128] [--batches 1,32]``.
Writes ``bench/results/generate.json``. For cotune vs Hugging Face on the same weights and
reasoning prompts (each side in its own process), see ``bench/compare_generate.py``. Timings exclude compilation (one warm-up call per
shape) and count only generated tokens; greedy, no stop strings, so every row runs all
``--new`` steps unless it emits an end token.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import jax

from cotune.generate import compile_counts, generate_detailed
from cotune.model import _cache_folder, _default_sha, load

PROMPTS = [
    "The capital of France is Paris. The capital of Germany is",
    "Question: What is 12 * 4?\nAnswer:",
    "12 + 7 = 19\n25 + 13 = 38\n41 + 16 =",
    "Once upon a time, in a small village by the sea,",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--cold", action="store_true", help="delete the converted cache first")
    ap.add_argument("--compute-dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "generate.json"))
    args = ap.parse_args()
    res: dict = {
        "model": "gemma3-270m",
        "dtype": "float32",
        "compute_dtype": args.compute_dtype,
        "new_tokens": args.new,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
    }
    if args.cold:
        shutil.rmtree(_cache_folder(_default_sha()), ignore_errors=True)
    t = time.perf_counter()
    m = load("gemma3-270m")
    res["load_first_s" if not m.meta.get("cache_hit") else "load_s"] = round(
        time.perf_counter() - t, 2
    )
    t = time.perf_counter()
    m = load("gemma3-270m")
    res["load_cached_s"] = round(time.perf_counter() - t, 2)
    runs = []
    for b in [int(x) for x in args.batches.split(",")]:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(b)]
        kw = dict(
            raw=True, max_new_tokens=args.new, stop_strings=[], compute_dtype=args.compute_dtype
        )
        t = time.perf_counter()
        generate_detailed(m, prompts, **kw)
        first = time.perf_counter() - t
        t = time.perf_counter()
        out = generate_detailed(m, prompts, **kw)
        dt = time.perf_counter() - t
        n = sum(len(g.token_ids) for g in out)
        runs.append(
            {
                "batch": b,
                "generated_tokens": n,
                "seconds": round(dt, 2),
                "tokens_per_s": round(n / dt, 1),
                "first_call_s_incl_compile": round(first, 2),
                "sample": out[0].text[:80],
            }
        )
        print(runs[-1], flush=True)
    res["runs"] = runs
    res["compiles"] = compile_counts()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
