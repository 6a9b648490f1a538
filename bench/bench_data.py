"""Data-layer throughput: verified generation, cleaning and the full GSM8K import.

    .venv/bin/python bench/bench_data.py [--n 100000]

Writes bench/results/data.json. Target: 100,000 verified examples in under 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from itertools import islice
from pathlib import Path

from cotune import data

GSM8K = Path(os.environ.get("COTUNE_GSM8K", Path(__file__).resolve().parents[1] / "data" / "gsm8k"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "data.json"))
    args = ap.parse_args()
    res: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}

    t = time.perf_counter()
    recs = list(islice(data.iter_generate("all", seed=0), args.n))  # every example verified
    dt = time.perf_counter() - t
    res["generate"] = {
        "n": args.n,
        "tasks": "all",
        "seconds": round(dt, 2),
        "examples_per_s": round(args.n / dt),
    }
    print(f"generate: {args.n} verified examples in {dt:.1f} s = {args.n / dt:,.0f}/s")

    t = time.perf_counter()
    kept, report = data.clean(recs)
    dt = time.perf_counter() - t
    res["clean_generated"] = {
        "seconds": round(dt, 2),
        "records_per_s": round(len(recs) / dt),
        **report.to_dict(),
    }
    print(f"clean: {len(recs) / dt:,.0f} records/s; {report.n_out} kept ({dict(report.reasons)})")

    if (GSM8K / "train.jsonl").is_file():
        t = time.perf_counter()
        train = data.import_file("gsm8k", GSM8K / "train.jsonl")
        test = data.import_file("gsm8k", GSM8K / "test.jsonl")
        kept, report = data.clean(train, exclude=test)
        dt = time.perf_counter() - t
        res["gsm8k_train_import"] = {"seconds": round(dt, 2), **report.to_dict()}
        print(
            f"gsm8k train: {report.n_out} valid of {report.n_in} in {dt:.1f} s ({dict(report.reasons)})"
        )

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
