"""SFT training throughput on the real Gemma 3 270M: packed vs padded, batch 8 x 128.

Counts non-padding tokens/s (every real token the model reads) and trained tokens/s
(completion + end tokens, the ones the loss covers), timing steady-state steps only (the
first step, which compiles, is reported separately). Writes bench/results/train.json.
A mode is ``packed`` or ``padded``, then ``-bf16`` for bf16 matmuls, then ``-datavocab``
for ``train.loss_vocab: data``; modes run in the order given, in one process, so listing
two of them alternately times them side by side:

    .venv/bin/python bench/bench_train.py [--steps 4] [--modes packed,padded,packed-bf16]
    .venv/bin/python -m bench.bench_train --batch 3 --seq 384 --steps 6 \
        --modes packed-bf16,packed-bf16-datavocab,packed-bf16,packed-bf16-datavocab \
        --out bench/results/train_loss_vocab.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

from cotune.config import load_config
from cotune.runtime import enable_compilation_cache
from cotune.train.loss import SampledVocab
from cotune.train.mesh import put_batch
from cotune.train.plan import plan_for, tokenize
from cotune.train.step import build_state


def records(n: int) -> list[dict]:
    from cotune.data.generators import generate

    tasks = ["arithmetic", "word_problems"]
    try:
        recs = generate(tasks=tasks, n=n, seed=0)
    except Exception:  # noqa: BLE001 - fall back to a single task if a name is unknown
        recs = generate(tasks=["arithmetic"], n=n, seed=0)
    return [r.to_dict() if hasattr(r, "to_dict") else r for r in recs]


def run(
    model,
    recs,
    pack: bool,
    bf16: bool,
    steps: int,
    batch: int = 8,
    seq: int = 128,
    data_vocab: bool = False,
) -> dict:
    cfg = load_config(
        None,
        [
            f"format.max_seq_len={seq}",
            f"train.batch_size={batch}",
            f"format.pack={str(pack).lower()}",
            f"train.bf16_matmul={str(bf16).lower()}",
            f"train.steps={steps + 1}",
            "lora.rank=16",
            f"train.loss_vocab={'data' if data_vocab else 'full'}",
        ],
    )
    examples, stats = tokenize(cfg, model.tokenizer, recs)
    plan = plan_for(cfg, examples)
    vocab = SampledVocab.for_run(cfg, examples, model.module)
    state = build_state(model.module, cfg, len(plan), vocab)
    times, toks, trained, losses = [], 0, 0, []
    compile_s = None
    for s in range(len(plan)):
        b = plan.batch(examples, s, model.tokenizer.pad_id)
        arrays = put_batch(state.step_arrays(b.arrays(), s), state.mesh)
        t0 = time.perf_counter()
        loss, _ = state.step(arrays)
        loss = float(loss)
        dt = time.perf_counter() - t0
        losses.append(loss)
        if s == 0:
            compile_s = dt
            continue
        times.append(dt)
        toks += b.n_tokens
        trained += b.n_trained
    total = sum(times)
    return {
        "pack": pack,
        "bf16_matmul": bf16,
        "loss_vocab": None if vocab is None else [len(vocab.vocab), vocab.k],
        "steps_timed": len(times),
        "first_step_s": round(compile_s, 2),
        "step_s_mean": round(total / len(times), 3),
        "tokens_per_s": round(toks / total, 1),
        "trained_tokens_per_s": round(trained / total, 1),
        "positions_per_s": round(len(times) * batch * seq / total, 1),
        "non_padding_share": round(toks / (len(times) * batch * seq), 3),
        "gather_bucket": plan.bucket,
        "dropped_overlong": stats.n_dropped_overlong,
        "losses": [round(x, 4) for x in losses],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per setting")
    ap.add_argument("--modes", default="packed,padded,packed-bf16")
    ap.add_argument("--batch", type=int, default=8, help="rows per step")
    ap.add_argument("--seq", type=int, default=128, help="row length")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = ap.parse_args()
    enable_compilation_cache()
    from cotune.model import load

    t0 = time.perf_counter()
    model = load(args.model)
    load_s = time.perf_counter() - t0
    recs = records(600)
    results = []
    for mode in args.modes.split(","):
        pack = mode.startswith("packed")
        bf16 = "-bf16" in mode
        data_vocab = mode.endswith("-datavocab")
        r = run(model, recs, pack, bf16, args.steps, args.batch, args.seq, data_vocab)
        r["mode"] = mode
        print(json.dumps({k: v for k, v in r.items() if k != "losses"}), flush=True)
        results.append(r)
    out = {
        "bench": f"sft train step, LoRA rank 16 (attention + MLP), {args.batch} x {args.seq}",
        "model": args.model,
        "model_load_s": round(load_s, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()],
            "note": "2 cores shared with other concurrent jobs: expect +-30% noise",
        },
        "hf_reference_trained_tokens_per_s": {"bf16": 227, "fp32": 140},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
