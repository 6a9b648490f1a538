"""SFT step throughput, cotune vs Hugging Face transformers + PEFT, side by side in one run.

Same weights (the HF side loads the safetensors folder cotune's loader cached), same
records, same tokenization (cotune's prompt + completion + end token), LoRA rank 16 on
attention + MLP, batch 8 x 128. cotune packs examples into its rows and computes the
output projection only at trained positions; HF runs the way its users run it: padded
batches, labels -100 on prompt and padding, loss through its own LM head, bf16 weights
(its fastest configuration on this CPU). Reports, for both: trained (completion) tokens/s,
all real (non-padding) tokens/s and s/step, and the ratios. Writes
bench/results/train_vs_hf.json.

Why each side runs in its own child process: measured here, torch's step ran ~1.5x slower
in a process where JAX had already run (two runtimes' thread pools and allocators in one
process), which would flatter cotune. So every round starts a fresh process per side, the
sides alternate (cotune, hf, then hf, cotune, ...) so drift on this shared 2-core machine
hits both, and the medians over rounds are compared.

    .venv/bin/python -m bench.compare_train [--steps 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "RESULT "


def _pairs(model, recs) -> list[tuple[list[int], list[int]]]:
    from cotune.config import load_config
    from cotune.train.plan import tokenize

    cfg = load_config(None, ["format.max_seq_len=128"])
    examples, _ = tokenize(cfg, model.tokenizer, recs)
    return [
        (list(map(int, e.tokens[: e.prompt_len])), list(map(int, e.tokens[e.prompt_len :])))
        for e in examples
    ]


def side_cotune(steps: int) -> dict:
    from bench.bench_train import records, run
    from cotune.model import load
    from cotune.runtime import enable_compilation_cache

    enable_compilation_cache()
    model = load("gemma3-270m")
    r = run(model, records(600), pack=True, bf16=True, steps=steps)
    return {
        "s_per_step": r["step_s_mean"],
        "trained_tokens_per_s": r["trained_tokens_per_s"],
        "real_tokens_per_s": r["tokens_per_s"],
        "losses": r["losses"],
    }


def side_hf(steps: int) -> dict:
    from cotune import runtime

    runtime.tune_malloc()  # if enabled (see _SIDE_ENV), before torch starts its threads
    import torch

    from bench.bench_train import records
    from bench.hf_reference import load_hf, lora_wrap, padded_batches, train_steps
    from cotune.model import load

    torch.set_num_threads(os.cpu_count() or 1)
    model = load("gemma3-270m")  # tokenizer + the cached safetensors folder; then dropped
    folder = Path(model.meta.get("cache") or model.meta["source"])
    pairs = _pairs(model, records(600))
    del model
    import gc

    gc.collect()
    hf = lora_wrap(load_hf(folder, "bfloat16"))
    r = train_steps(hf, padded_batches(pairs, 8, pad_id=0, max_len=128), steps)
    r["torch"] = torch.__version__
    return r


# The sides a round runs. "hf" gets cotune's allocator settings too (cotune/runtime.py):
# they make torch's step faster here as well, and the reference is HF at its fastest.
# "hf_glibc" is HF with the default allocator, as most of its users run it (--with-hf-glibc).
_SIDE_ENV = {
    "cotune": {"COTUNE_MALLOC_TUNING": "1"},
    "hf": {"COTUNE_MALLOC_TUNING": "1"},
    "hf_glibc": {"COTUNE_MALLOC_TUNING": "0"},
}


def _child(side: str, steps: int) -> dict:
    fn = "hf" if side.startswith("hf") else side
    cmd = [sys.executable, "-m", "bench.compare_train", "--side", fn, "--steps", str(steps)]
    env = {**os.environ, **_SIDE_ENV[side]}
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(MARK)]
    if p.returncode != 0 or not lines:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"compare_train: the {side} side failed (exit {p.returncode})")
    return json.loads(lines[-1][len(MARK) :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per side and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--side", choices=["cotune", "hf"], help=argparse.SUPPRESS)
    ap.add_argument(
        "--with-hf-glibc", action="store_true", help="also time HF with the default allocator"
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_vs_hf.json"))
    args = ap.parse_args()
    if args.side:
        fn = side_cotune if args.side == "cotune" else side_hf
        print(MARK + json.dumps(fn(args.steps)), flush=True)
        return

    sides = ["cotune", "hf"] + (["hf_glibc"] if args.with_hf_glibc else [])
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(args.rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            res = _child(side, args.steps)
            runs[side].append(res)
            shown = {k: round(v, 2) for k, v in res.items() if isinstance(v, float)}
            print(f"round {r} {side}: {shown}", flush=True)

    def med(side: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[side])

    c = {
        k: round(med("cotune", k), 3)
        for k in ("s_per_step", "trained_tokens_per_s", "real_tokens_per_s")
    }
    h = {
        k: round(med("hf", k), 3)
        for k in ("s_per_step", "trained_tokens_per_s", "real_tokens_per_s")
    }
    extra = {}
    if args.with_hf_glibc:
        extra["hf_peft_default_allocator"] = {
            k: round(med("hf_glibc", k), 3)
            for k in ("s_per_step", "trained_tokens_per_s", "real_tokens_per_s")
        }
    out = {
        "bench": "SFT LoRA step, Gemma 3 270M, rank 16 attention+MLP, batch 8 x 128",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"python -m bench.compare_train --steps {args.steps} --rounds {args.rounds}"
        + (" --with-hf-glibc" if args.with_hf_glibc else ""),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "method": "each side in a fresh child process per round, sides alternating; medians",
        "cotune": {
            **c,
            "mode": "packed rows, loss at trained positions only, bf16 matmuls (f32 accum)",
        },
        "hf_peft": {
            **h,
            "mode": "padded batches of 8 examples, bf16 weights, PEFT LoRA, torch AdamW, "
            "cotune's allocator settings (faster for torch too)",
        },
        **extra,
        "ratio_cotune_over_hf": {
            "trained_tokens_per_s": round(c["trained_tokens_per_s"] / h["trained_tokens_per_s"], 2),
            "real_tokens_per_s": round(c["real_tokens_per_s"] / h["real_tokens_per_s"], 2),
        },
        "per_round_trained_ratio": [
            round(a["trained_tokens_per_s"] / b["trained_tokens_per_s"], 2)
            for a, b in zip(runs["cotune"], runs["hf"], strict=True)
        ],
        "rounds": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("cotune", "hf_peft", "ratio_cotune_over_hf")}, indent=2))


if __name__ == "__main__":
    main()
