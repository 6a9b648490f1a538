"""SFT step throughput, cotune vs Hugging Face transformers + PEFT, side by side in one run.

Same weights (the HF side loads the safetensors folder cotune's loader cached), same
records, same tokenization (cotune's prompt + completion + end token), LoRA rank 16 on
attention + MLP, batch 8 x 128. cotune packs examples into its rows and computes the
output projection only at trained positions; HF runs the way its users run it: padded
batches, labels -100 on prompt and padding, loss through its own LM head, bf16 weights
(its fastest configuration on this CPU). Reports, for both: trained (completion) tokens/s,
all real (non-padding) tokens/s and s/step, and the ratios. Writes
bench/results/train_vs_hf.json.

    .venv/bin/python bench/compare_train.py [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import torch

from bench.bench_train import records, run
from bench.hf_reference import load_hf, lora_wrap, padded_batches, train_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_vs_hf.json"))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    from cotune.config import load_config
    from cotune.model import load
    from cotune.train.sft import enable_compilation_cache, tokenize

    enable_compilation_cache()
    model = load("gemma3-270m")
    folder = Path(model.meta.get("cache") or model.meta["source"])  # the cached HF folder
    recs = records(600)
    cfg = load_config(None, ["format.max_seq_len=128"])
    examples, _ = tokenize(cfg, model.tokenizer, recs)
    pairs = [
        (list(map(int, e.tokens[: e.prompt_len])), list(map(int, e.tokens[e.prompt_len :])))
        for e in examples
    ]

    results: dict[str, dict] = {}
    results["cotune"] = run(model, recs, pack=True, bf16=True, steps=args.steps)
    print("cotune", json.dumps({k: v for k, v in results["cotune"].items() if k != "losses"}))
    del model

    hf = lora_wrap(load_hf(folder, "bfloat16"))
    batches = padded_batches(pairs, 8, pad_id=0, max_len=128)
    results["hf_peft_bf16"] = train_steps(hf, batches, args.steps)
    print("hf", json.dumps(results["hf_peft_bf16"]))

    c, h = results["cotune"], results["hf_peft_bf16"]
    ratios = {
        "trained_tokens_per_s": round(c["trained_tokens_per_s"] / h["trained_tokens_per_s"], 2),
        "real_tokens_per_s": round(c["tokens_per_s"] / h["real_tokens_per_s"], 2),
    }
    out = {
        "bench": "SFT LoRA step, Gemma 3 270M, rank 16 attention+MLP, batch 8 x 128",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "make bench  (bench/compare_train.py)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "cotune": {
            "s_per_step": c["step_s_mean"],
            "trained_tokens_per_s": c["trained_tokens_per_s"],
            "real_tokens_per_s": c["tokens_per_s"],
            "mode": "packed rows, loss at trained positions only, bf16 matmuls (f32 accum)",
        },
        "hf_peft": {
            "s_per_step": round(h["s_per_step"], 3),
            "trained_tokens_per_s": round(h["trained_tokens_per_s"], 1),
            "real_tokens_per_s": round(h["real_tokens_per_s"], 1),
            "mode": "padded batches of 8 examples, bf16 weights, PEFT LoRA, torch AdamW",
        },
        "ratio_cotune_over_hf": ratios,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
