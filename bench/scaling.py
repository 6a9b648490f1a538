"""Training throughput against sequence length and batch, and peak memory of train/generate.

Sequence length at a constant 1,024 token positions per step (8 x 128, 4 x 256, 2 x 512,
1 x 1024), then batch at 128 tokens (4, 8, 16 rows). Each setting times a few steps after
its compile step. Peak RSS comes from fresh subprocesses, so one stage's memory does not
hide another's. Writes bench/results/scaling.json.

    .venv/bin/python -m bench.scaling [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_train import records, run

SETTINGS = [(8, 128), (4, 256), (2, 512), (1, 1024), (4, 128), (16, 128)]

_RSS_TRAIN = """
from bench.bench_train import records, run
from cotune.model import load
run(load("gemma3-270m"), records(200), pack=True, bf16=True, steps=1)
"""
_RSS_GENERATE = """
from cotune.model import load
from cotune.generate import generate
m = load("gemma3-270m")
generate(m, [f"What is {i} + {2 * i}?" for i in range(32)], max_new_tokens=64, stop_strings=[])
"""


def peak_rss_mb(code: str) -> float:
    """Peak resident memory of a fresh Python running ``code`` (MB), as the child reports it.

    From ``VmHWM`` in ``/proc/self/status``, which belongs to the child's own address space:
    ``ru_maxrss`` survives fork + exec, so a child of a large parent reported the parent's
    peak (both rows read 6,053 MB once the parent held its heap, cotune/runtime.py).
    """
    tail = (
        "\nfor line in open('/proc/self/status'):\n"
        "    if line.startswith('VmHWM:'):\n"
        "        print('PEAK_RSS_KB', line.split()[1])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code + tail], check=True, capture_output=True, text=True
    ).stdout
    kb = int(out.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return round(kb / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scaling.json"))
    args = ap.parse_args()
    from cotune.model import load

    model = load("gemma3-270m")
    recs = records(600)
    rows = []
    for batch, seq in SETTINGS:
        t = time.perf_counter()
        r = run(model, recs, pack=True, bf16=True, steps=args.steps, batch=batch, seq=seq)
        row = {
            "batch": batch,
            "seq_len": seq,
            "s_per_step": r["step_s_mean"],
            "real_tokens_per_s": r["tokens_per_s"],
            "trained_tokens_per_s": r["trained_tokens_per_s"],
            "wall_s": round(time.perf_counter() - t, 1),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    del model
    mem = {
        "train_peak_rss_mb": peak_rss_mb(_RSS_TRAIN),
        "generate_peak_rss_mb": peak_rss_mb(_RSS_GENERATE),
    }
    print(json.dumps(mem))
    out = {
        "bench": "LoRA SFT step throughput vs shape, Gemma 3 270M, bf16 matmuls",
        "rows": rows,
        "memory": mem,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
