"""cotune generation vs Hugging Face ``generate``: same process, same weights, same prompts.

Run: ``.venv/bin/python bench/compare_generate.py [--new 128] [--batches 1,32] [--repeats 1]``
(``--hf-dtypes bfloat16,float32``, ``--cotune-modes float32,bfloat16``).
Writes ``bench/results/generate_vs_hf.json``.

Why one process, one side after the other: this 2-core machine is shared with other jobs,
so numbers taken minutes apart in different processes are not comparable. Within one
repeat every configuration runs back to back on the same 32 reasoning prompts (built with
``cotune.format.prompt_segments`` + the tokenizer, as ``cotune eval`` builds them); with
``--repeats > 1`` the configurations are interleaved and the medians reported.

Token counting: HF runs with ``min_new_tokens = max_new_tokens`` (end tokens suppressed),
so it always generates ``--new`` tokens per row. cotune has no such switch (its end tokens
are part of its behaviour), so a cotune row that emits an end token stops, and only the
tokens it actually generated are counted: a conservative count for cotune, because its
batch keeps computing until every row is done. Both sides are greedy with no stop strings.
Timings exclude compilation / warm-up (one warm-up call per shape on each side).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from hf_reference import load_hf  # noqa: E402

from cotune.data.generators import TASKS  # noqa: E402
from cotune.data.generators import generate as make_records  # noqa: E402
from cotune.generate import compile_counts, encode_prompts, generate_detailed  # noqa: E402
from cotune.model import _cache_folder, _default_sha, load  # noqa: E402
from cotune.train.sft import enable_compilation_cache  # noqa: E402


def prompts_ids(model, n: int, seed: int = 0) -> list[list[int]]:
    """``n`` realistic reasoning prompts (every generator task), as cotune formats them."""
    recs = make_records(list(TASKS), n, seed=seed)
    return encode_prompts(model, [r.question for r in recs], template="chat", schema="tags")


def run_cotune(model, ids, new: int, logits_dtype: str) -> tuple[float, int, list[list[int]]]:
    """Seconds, generated tokens, token ids per row (end token included if emitted)."""
    t = time.perf_counter()
    out = generate_detailed(
        model, ids, max_new_tokens=new, stop_strings=[], logits_dtype=logits_dtype
    )
    dt = time.perf_counter() - t
    return dt, sum(len(g.token_ids) for g in out), [g.token_ids for g in out]


def run_hf(hf, ids, new: int, pad_id: int) -> tuple[float, int, list[list[int]]]:
    """HF ``generate`` greedy on a left-padded batch; exactly ``new`` tokens per row."""
    b, width = len(ids), max(len(p) for p in ids)
    x = torch.full((b, width), pad_id, dtype=torch.long)
    attn = torch.zeros((b, width), dtype=torch.long)
    for r, p in enumerate(ids):
        x[r, width - len(p) :] = torch.tensor(p)
        attn[r, width - len(p) :] = 1
    with torch.inference_mode():
        t = time.perf_counter()
        out = hf.generate(
            input_ids=x,
            attention_mask=attn,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=pad_id,
        )
        dt = time.perf_counter() - t
    gen = out[:, width:].tolist()
    return dt, sum(len(g) for g in gen), gen


def cut_at_end(ids: list[int], end_ids) -> list[int]:
    for k, t in enumerate(ids):
        if t in end_ids:
            return ids[:k]
    return list(ids)


def agreement(a: list[list[int]], b: list[list[int]], end_ids) -> dict:
    """Greedy agreement of two runs: identical rows, and matching prefix length per row
    (compared up to the first end token of either, since HF suppresses end tokens)."""
    same_rows, prefix, total = 0, 0, 0
    for x, y in zip(a, b, strict=True):
        x, y = cut_at_end(x, end_ids), cut_at_end(y, end_ids)
        n = min(len(x), len(y))
        k = next((i for i in range(n) if x[i] != y[i]), n)
        same_rows += int(x == y)
        prefix += k
        total += max(len(x), len(y))
    return {
        "identical_rows": same_rows,
        "rows": len(a),
        "matching_prefix_tokens": prefix,
        "compared_tokens": total,
        "prefix_agreement": round(prefix / max(total, 1), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--hf-dtypes", default="bfloat16,float32")
    ap.add_argument("--cotune-modes", default="float32,bfloat16", help="logits_dtype values")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "generate_vs_hf.json"))
    args = ap.parse_args()
    enable_compilation_cache()
    batches = [int(x) for x in args.batches.split(",")]
    modes = [m for m in args.cotune_modes.split(",") if m]
    hf_dtypes = [d for d in args.hf_dtypes.split(",") if d]

    model = load("gemma3-270m")
    tok = model.tokenizer
    ids = prompts_ids(model, max(batches))
    folder = _cache_folder(_default_sha())
    hfs = {d: load_hf(folder, dtype=d) for d in hf_dtypes}
    for hf in hfs.values():
        hf.eval()
        hf.config.use_cache = True

    res: dict = {
        "model": "gemma3-270m (same safetensors folder on both sides)",
        "new_tokens": args.new,
        "prompt_tokens": [len(p) for p in ids],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
        "repeats": args.repeats,
        "command": "python bench/compare_generate.py " + " ".join(sys.argv[1:]),
    }
    # Warm-up: compile every cotune shape, let HF/oneDNN pick its kernels.
    warm = {}
    for b in batches:
        for m in modes:
            t = time.perf_counter()
            generate_detailed(
                model, ids[:b], max_new_tokens=args.new, stop_strings=[], logits_dtype=m
            )
            warm[f"cotune_{m}_b{b}_first_call_s"] = round(time.perf_counter() - t, 2)
        for hf in hfs.values():
            run_hf(hf, ids[:b], 4, tok.pad_id)
    res["warmup"] = warm
    print(warm, flush=True)

    times: dict[str, list[float]] = {}
    outs: dict[str, list[list[int]]] = {}
    for rep in range(args.repeats):
        for b in batches:
            for m in modes:
                dt, n, gen = run_cotune(model, ids[:b], args.new, m)
                key = f"cotune_{m}_b{b}"
                times.setdefault(key, []).append(n / dt)
                outs[key] = gen
                print(rep, key, f"{n} tokens {dt:.1f} s {n / dt:.1f} tok/s", flush=True)
            for d, hf in hfs.items():
                dt, n, gen = run_hf(hf, ids[:b], args.new, tok.pad_id)
                key = f"hf_{d}_b{b}"
                times.setdefault(key, []).append(n / dt)
                outs[key] = gen
                print(rep, key, f"{n} tokens {dt:.1f} s {n / dt:.1f} tok/s", flush=True)

    tps = {k: round(statistics.median(v), 2) for k, v in times.items()}
    res["tokens_per_s_median"] = tps
    res["tokens_per_s_all"] = {k: [round(x, 2) for x in v] for k, v in times.items()}
    summary = {}
    for b in batches:
        hf_best = max(hf_dtypes, key=lambda d: tps[f"hf_{d}_b{b}"])
        cot_best = max(modes, key=lambda m: tps[f"cotune_{m}_b{b}"])
        row = {
            "hf_reference": f"hf_{hf_best}",
            "hf_tokens_per_s": tps[f"hf_{hf_best}_b{b}"],
        }
        for m in modes:
            row[f"cotune_{m}_tokens_per_s"] = tps[f"cotune_{m}_b{b}"]
            row[f"ratio_cotune_{m}_vs_hf_best"] = round(
                tps[f"cotune_{m}_b{b}"] / tps[f"hf_{hf_best}_b{b}"], 2
            )
        row["best_ratio"] = row[f"ratio_cotune_{cot_best}_vs_hf_best"]
        summary[f"batch_{b}"] = row
    res["summary"] = summary
    agree = {}
    big = max(batches)
    ref = f"cotune_float32_b{big}"
    if ref in outs:
        for key in outs:
            if key != ref and key.endswith(f"_b{big}"):
                agree[f"{key}_vs_{ref}"] = agreement(outs[key], outs[ref], tok.end_ids)
        res["end_token_rows_cotune_float32"] = sum(
            any(t in tok.end_ids for t in g) for g in outs[ref]
        )
    res["agreement"] = agree
    res["compiles"] = compile_counts()
    res["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: res[k] for k in ("summary", "agreement")}, indent=2))


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    main()
