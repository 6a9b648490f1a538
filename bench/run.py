"""`make bench`: every benchmark, one after the other, then one Markdown table.

Each comparison runs both sides within one run, on the same weights and inputs, each side in
its own fresh child process (torch measured ~1.5x slower in a process where JAX had run),
alternating sides over rounds, and reports the ratio of medians (this 2-core machine is
noisy: absolute numbers drift, ratios much less).
Results land in bench/results/*.json; the table goes to bench/results/README.md and into
the project README between the BENCH markers.

    .venv/bin/python -m bench.run [--only train,generate,data,scaling] [--table-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STEPS = {
    "data": [sys.executable, "bench/bench_data.py"],
    "train": [
        sys.executable,
        "-m",
        "bench.compare_train",
        "--rounds",
        "3",
        "--with-hf-glibc",
    ],
    "generate": [
        sys.executable,
        "bench/compare_generate.py",
        "--hf-dtypes",
        "float32,bfloat16",
        "--cotune-modes",
        "float32,bfloat16",
        "--with-hf-glibc",
    ],
    "load": [sys.executable, "bench/bench_generate.py", "--cold"],
    "packing": [
        sys.executable,
        "bench/bench_train.py",
        "--modes",
        "packed-bf16,padded-bf16",
        "--batch",
        "4",
        "--seq",
        "256",
        "--steps",
        "3",
        "--out",
        "bench/results/train_packing.json",
    ],
    "scaling": [sys.executable, "-m", "bench.scaling"],
}


def _load(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def _f(v, nd: int = 1) -> str:
    return "–" if v is None else f"{v:,.{nd}f}"


def table() -> str:
    """The Markdown summary of whatever results exist."""
    lines = [
        f"Measured on {platform.machine()}, {os.cpu_count()} cores, no GPU; "
        f"table written {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `make bench` "
        "(`python -m bench.run`). Comparisons: each side in its own fresh process, sides "
        "alternating over rounds, medians; ratios are cotune / Hugging Face.",
        "",
        "| benchmark | cotune | Hugging Face | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    t = _load("train_vs_hf.json")
    if t:
        c, h, r = t["cotune"], t["hf_peft"], t["ratio_cotune_over_hf"]
        lines += [
            f"| SFT LoRA r16, 270M, 8x128: trained tokens/s | {_f(c['trained_tokens_per_s'])} "
            f"| {_f(h['trained_tokens_per_s'])} | **{r['trained_tokens_per_s']:.2f}x** |",
            f"| SFT: all real (non-padding) tokens/s | {_f(c['real_tokens_per_s'])} "
            f"| {_f(h['real_tokens_per_s'])} | **{r['real_tokens_per_s']:.2f}x** |",
            f"| SFT: s/step | {_f(c['s_per_step'], 2)} | {_f(h['s_per_step'], 2)} | |",
        ]
        hg = t.get("hf_peft_default_allocator")
        if hg:  # HF without cotune's allocator settings, as it runs out of the box
            lines.append(
                f"| SFT trained tokens/s vs HF with glibc's default allocator "
                f"| {_f(c['trained_tokens_per_s'])} | {_f(hg['trained_tokens_per_s'])} "
                f"| **{c['trained_tokens_per_s'] / hg['trained_tokens_per_s']:.2f}x** |"
            )
    g = _load("generate_vs_hf.json")
    if g:
        for key, row in g.get("summary", {}).items():
            best = max(
                (
                    v
                    for k, v in row.items()
                    if k.startswith("cotune_") and k.endswith("tokens_per_s")
                ),
                default=None,
            )
            lines.append(
                f"| greedy generation, {key.replace('_', ' ')}, {g['new_tokens']} new tokens: "
                f"tokens/s (HF: {row['hf_reference']}) | {_f(best)} | {_f(row['hf_tokens_per_s'])} "
                f"| **{row['best_ratio']:.2f}x** |"
            )
            if "best_ratio_vs_hf_glibc" in row:
                lines.append(
                    f"| same, vs HF bfloat16 sdpa with glibc's default allocator | {_f(best)} "
                    f"| {_f(row['hf_glibc_bfloat16_sdpa_tokens_per_s'])} "
                    f"| **{row['best_ratio_vs_hf_glibc']:.2f}x** |"
                )
    pk = _load("train_packing.json")
    if pk:
        by = {r["mode"]: r for r in pk["results"]}
        p, q = by.get("packed-bf16"), by.get("padded-bf16")
        if p and q:
            lines.append(
                f"| cotune SFT packed vs padded rows (4 x 256): real tokens/s | "
                f"{_f(p['tokens_per_s'])} | padded: {_f(q['tokens_per_s'])} | "
                f"**{p['tokens_per_s'] / q['tokens_per_s']:.2f}x** |"
            )
    d = _load("data.json")
    if d:
        lines.append(
            f"| verified examples generated / s | {_f(d['generate']['examples_per_s'], 0)} | | |"
        )
    s = _load("scaling.json")
    if s:
        m = s.get("memory", {})
        lines.append(f"| peak RSS, LoRA training (MB) | {_f(m.get('train_peak_rss_mb'), 0)} | | |")
        lines.append(
            f"| peak RSS, generation b32 (MB) | {_f(m.get('generate_peak_rss_mb'), 0)} | | |"
        )
    ld = _load("generate.json")
    if ld and "load_cached_s" in ld:
        first = ld.get("load_first_s")  # --cold: the GGUF converted and cached in this run
        label = "first load (convert + cache)" if first is not None else "first call of this run"
        lines.append(
            f"| 270M load (s): {label} / cached | "
            f"{_f(first if first is not None else ld.get('load_s'))} / "
            f"{_f(ld.get('load_cached_s'))} | | |"
        )
    if s:
        lines += ["", "Training throughput against shape (bf16 matmuls, packed rows):", ""]
        lines += [
            "| rows x seq_len | s/step | real tokens/s | trained tokens/s |",
            "| --- | ---: | ---: | ---: |",
        ]
        for row in s["rows"]:
            lines.append(
                f"| {row['batch']} x {row['seq_len']} | {_f(row['s_per_step'], 2)} "
                f"| {_f(row['real_tokens_per_s'])} | {_f(row['trained_tokens_per_s'])} |"
            )
    return "\n".join(lines) + "\n"


def write_table() -> str:
    md = table()
    (RESULTS / "README.md").write_text("# Benchmark results\n\n" + md)
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- BENCH:START -->", "<!-- BENCH:END -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{md}{end}{tail}")
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(STEPS))
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if not args.table_only:
        for name in args.only.split(","):
            print(f"== bench {name}: {' '.join(STEPS[name][1:])}", flush=True)
            subprocess.run(STEPS[name], cwd=ROOT, check=True)
    print(write_table())


if __name__ == "__main__":
    main()
