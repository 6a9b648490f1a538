"""Greedy evaluation in rounds against one pass per batch, side by side on one model.

Run (after ``make demo``, which leaves a fine-tuned run in ``runs/quickstart``)::

    .venv/bin/python -m bench.bench_eval_rounds --model runs/quickstart/sft \
        --data runs/quickstart/data/test.jsonl --out bench/results/eval_rounds.json

Generates completions for the questions of ``--data`` exactly as ``cotune eval`` does
(chat template, tags schema, its stop string, batches of ``--batch-size``), once with
``round_tokens=None`` (every batch decodes until its longest row ends) and once with
rounds of ``--round-tokens`` (:mod:`cotune.generate.api`), alternating, ``--repeats``
times each; one warm-up pass of each first, so compiles are not timed. Writes seconds per
pass, the ratio, and how many completions differ between the two (greedy either way, so
only bfloat16 rounding in the re-prefilled text can make one differ).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from cotune.data.records import read_jsonl
from cotune.generate import generate_detailed
from cotune.runs import resolve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runs/quickstart/sft")
    ap.add_argument("--data", default="runs/quickstart/data/test.jsonl")
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--round-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval_rounds.json"))
    args = ap.parse_args()
    model = resolve(args.model)
    questions = [r.question for r in read_jsonl(args.data)][: args.limit]
    kw = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    modes = {"one_pass": None, f"rounds_{args.round_tokens}": args.round_tokens}
    outs: dict[str, list] = {}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for name, rt in modes.items():  # warm-up: compiles every shape this workload uses
        outs[name] = generate_detailed(model, questions, round_tokens=rt, **kw)
    for _ in range(args.repeats):
        for name, rt in modes.items():
            t = time.perf_counter()
            generate_detailed(model, questions, round_tokens=rt, **kw)
            times[name].append(round(time.perf_counter() - t, 2))
    a, b = (outs[m] for m in modes)
    differ = sum(x.token_ids != y.token_ids for x, y in zip(a, b, strict=True))
    lengths = [len(g.token_ids) for g in a]
    one, rounds = (statistics.median(times[m]) for m in modes)
    res = {
        "command": "python -m bench.bench_eval_rounds "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "model": args.model,
        "data": args.data,
        "n_questions": len(questions),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "seconds": times,
        "median_s": {m: statistics.median(times[m]) for m in modes},
        "speedup": round(one / rounds, 3),
        "completions_differing": differ,
        "completion_tokens": {
            "mean": round(statistics.mean(lengths), 1),
            "max": max(lengths),
            "at_budget": sum(n >= args.max_new_tokens for n in lengths),
        },
    }
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
