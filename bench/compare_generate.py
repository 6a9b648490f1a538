"""cotune generation vs Hugging Face ``generate``: same weights, same prompts, one process each.

Run: ``.venv/bin/python bench/compare_generate.py [--new 128] [--batches 1,32] [--rounds 2]``
(``--hf-dtypes bfloat16,float32``, ``--hf-attn sdpa,eager``, ``--cotune-modes
float32,bfloat16``). Writes ``bench/results/generate_vs_hf.json``.

Why a child process per side: torch measured ~1.5x slower in a process where JAX had run
(both keep thread pools busy-waiting on the same 2 cores), so each side runs alone, in its
own ``python bench/compare_generate.py --side cotune|hf --spec FILE`` that prints one JSON
line. The parent (which never computes) alternates the sides for ``--rounds`` rounds,
swapping which goes first every round, and reports per-configuration medians: this 2-core
machine is shared, so numbers taken minutes apart drift, and alternating spreads the drift
over both sides. Inside a child every configuration gets one warm-up call per shape
(cotune: compilation; HF: oneDNN kernel choice) before its timed call.

Prompts: 32 reasoning prompts from every generator task, built with
``cotune.format.prompt_segments`` + the tokenizer as ``cotune eval`` builds them; batch
``b`` uses the first ``b``. Both sides get the same token ids, left-padded.

Token counting: HF runs with ``min_new_tokens = max_new_tokens`` (end tokens suppressed),
so it always generates ``--new`` tokens per row. cotune has no such switch (its end tokens
are part of its behaviour), so a cotune row that emits an end token stops, and only the
tokens it actually generated are counted: a conservative count for cotune, because its
batch keeps computing until every row is done. Both sides are greedy with no stop strings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- parent


def build_spec(args) -> dict:
    """Prompt ids and settings for both children (tokenizer only: no model compute here)."""
    from types import SimpleNamespace

    from cotune.data.generators import TASKS
    from cotune.data.generators import generate as make_records
    from cotune.generate import encode_prompts
    from cotune.model import _cache_folder, _cached_default, _default_sha, load
    from cotune.model.safetensors_loader import tokenizer_bytes
    from cotune.model.tokenizer import Tokenizer

    batches = [int(x) for x in args.batches.split(",") if x]
    if not _cached_default():  # first use: convert the GGUF once (writes the HF folder)
        load("gemma3-270m")
    folder = _cache_folder(_default_sha())
    tok = Tokenizer(tokenizer_bytes(folder))
    recs = make_records(list(TASKS), max(batches), seed=0)
    ids = encode_prompts(
        SimpleNamespace(tokenizer=tok), [r.question for r in recs], template="chat", schema="tags"
    )
    return {
        "folder": str(folder),
        "ids": ids,
        "pad_id": tok.pad_id,
        "end_ids": list(tok.end_ids),
        "new": args.new,
        "batches": batches,
        "cotune_modes": [m for m in args.cotune_modes.split(",") if m],
        "hf_configs": [
            f"{d}_{a}" for d in args.hf_dtypes.split(",") if d for a in args.hf_attn.split(",") if a
        ],
    }


# "hf" and "cotune" run with cotune's allocator settings (cotune/runtime.py; they speed up
# torch here too, so HF is measured at its fastest); "hf_glibc" is HF with glibc's default
# allocator, as its users run it (--with-hf-glibc; bf16 + sdpa only, its best setting).
_SIDE_ENV = {
    "cotune": {"COTUNE_MALLOC_TUNING": "1"},
    "hf": {"COTUNE_MALLOC_TUNING": "1"},
    "hf_glibc": {"COTUNE_MALLOC_TUNING": "0"},
}


def run_child(side: str, spec_path: str) -> dict:
    """One side in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--spec", spec_path]
    t = time.perf_counter()
    env = {**os.environ, **_SIDE_ENV[side]}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{side} child failed with exit code {proc.returncode}")
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    res = json.loads(lines[-1])
    res["wall_s"] = round(time.perf_counter() - t, 1)
    return res


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


def summarize(spec: dict, children: list[dict]) -> dict:
    times: dict[str, list[float]] = {}
    outs: dict[str, list[list[int]]] = {}
    for c in children:
        for key, v in c["tokens_per_s"].items():
            times.setdefault(key, []).append(v)
        outs.update(c["tokens"])
    tps = {k: round(statistics.median(v), 2) for k, v in times.items()}
    summary = {}
    for b in spec["batches"]:
        hf_best = max(spec["hf_configs"], key=lambda h: tps[f"hf_{h}_b{b}"])
        cot_best = max(spec["cotune_modes"], key=lambda m: tps[f"cotune_{m}_b{b}"])
        row = {"hf_reference": f"hf_{hf_best}", "hf_tokens_per_s": tps[f"hf_{hf_best}_b{b}"]}
        for h in spec["hf_configs"]:
            row[f"hf_{h}_tokens_per_s"] = tps[f"hf_{h}_b{b}"]
        for m in spec["cotune_modes"]:
            row[f"cotune_{m}_tokens_per_s"] = tps[f"cotune_{m}_b{b}"]
            row[f"ratio_cotune_{m}_vs_hf_best"] = round(
                tps[f"cotune_{m}_b{b}"] / tps[f"hf_{hf_best}_b{b}"], 2
            )
        row["best_cotune_mode"] = cot_best
        row["best_ratio"] = row[f"ratio_cotune_{cot_best}_vs_hf_best"]
        glibc = tps.get(f"hf_glibc_bfloat16_sdpa_b{b}")
        if glibc:
            row["hf_glibc_bfloat16_sdpa_tokens_per_s"] = glibc
            row["best_ratio_vs_hf_glibc"] = round(tps[f"cotune_{cot_best}_b{b}"] / glibc, 2)
        summary[f"batch_{b}"] = row
    big, end_ids = max(spec["batches"]), spec["end_ids"]
    ref = f"cotune_float32_b{big}"
    agree = {}
    if ref in outs:
        for key in sorted(outs):
            if key != ref and key.endswith(f"_b{big}"):
                agree[f"{key}_vs_{ref}"] = agreement(outs[key], outs[ref], end_ids)
    return {
        "tokens_per_s_median": tps,
        "tokens_per_s_all": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "summary": summary,
        "agreement": agree,
        "end_token_rows_cotune_float32": (
            sum(any(t in end_ids for t in g) for g in outs[ref]) if ref in outs else None
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--rounds", type=int, default=2, help="child processes per side")
    ap.add_argument("--hf-dtypes", default="bfloat16,float32")
    ap.add_argument("--hf-attn", default="sdpa,eager", help="attn_implementation values")
    ap.add_argument("--cotune-modes", default="float32,bfloat16", help="compute_dtype values")
    ap.add_argument("--out", default=str(HERE / "results" / "generate_vs_hf.json"))
    ap.add_argument(
        "--with-hf-glibc", action="store_true", help="also time HF with the default allocator"
    )
    ap.add_argument("--side", choices=list(_SIDE_ENV), help="(child) run one side only")
    ap.add_argument("--spec", help="(child) the spec file written by the parent")
    args = ap.parse_args()
    if args.side:
        spec = json.loads(Path(args.spec).read_text())
        if args.side == "cotune":
            res = side_cotune(spec)
        elif args.side == "hf":
            res = side_hf(spec)
        else:
            res = side_hf(spec, ["bfloat16_sdpa"], prefix="hf_glibc")
        print(json.dumps(res), flush=True)
        return

    spec = build_spec(args)
    res: dict = {
        "model": "gemma3-270m (same safetensors folder on both sides)",
        "new_tokens": args.new,
        "prompt_tokens": [len(p) for p in spec["ids"]],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "rounds": args.rounds,
        "loadavg_start": os.getloadavg(),
        "command": "python bench/compare_generate.py " + " ".join(sys.argv[1:]),
    }
    children = []
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = str(Path(tmp) / "spec.json")
        Path(spec_path).write_text(json.dumps(spec))
        sides = ["cotune", "hf"] + (["hf_glibc"] if args.with_hf_glibc else [])
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else sides[::-1]:
                c = run_child(side, spec_path)
                c["round"] = r
                children.append(c)
                print(r, side, json.dumps(c["tokens_per_s"]), flush=True)
    res.update(summarize(spec, children))
    res["children"] = [{k: v for k, v in c.items() if k != "tokens"} for c in children]
    res["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: res[k] for k in ("summary", "agreement")}, indent=2))


# --------------------------------------------------------------------------- children


def _child_meta() -> dict:
    return {"loadavg": os.getloadavg(), "pid": os.getpid()}


def side_cotune(spec: dict) -> dict:
    import jax

    from cotune.generate import compile_counts, generate_detailed
    from cotune.model import load
    from cotune.runtime import enable_compilation_cache

    enable_compilation_cache()
    model = load("gemma3-270m")
    new = spec["new"]

    def run(ids, mode):
        t = time.perf_counter()
        out = generate_detailed(model, ids, max_new_tokens=new, stop_strings=[], compute_dtype=mode)
        dt = time.perf_counter() - t
        return dt, [g.token_ids for g in out]

    res = {"side": "cotune", "jax": jax.__version__, **_child_meta()}
    warm, tps, toks, secs = {}, {}, {}, {}
    for b in spec["batches"]:
        ids = spec["ids"][:b]
        for m in spec["cotune_modes"]:
            warm[f"cotune_{m}_b{b}_first_call_s"] = round(run(ids, m)[0], 2)
            dt, gen = run(ids, m)
            n = sum(len(g) for g in gen)  # includes an emitted end token, nothing after it
            key = f"cotune_{m}_b{b}"
            tps[key], toks[key], secs[key] = n / dt, gen, round(dt, 2)
            print(key, f"{n} tokens {dt:.1f} s {n / dt:.1f} tok/s", file=sys.stderr, flush=True)
    res.update(warmup=warm, tokens_per_s=tps, seconds=secs, tokens=toks)
    res["compiles"] = compile_counts()
    return res


def side_hf(spec: dict, configs: list[str] | None = None, prefix: str = "hf") -> dict:
    from cotune import runtime

    runtime.tune_malloc()  # if enabled (_SIDE_ENV), before torch starts its threads
    import torch
    from hf_reference import greedy_left_padded  # bench/ is this script's folder
    from transformers import AutoModelForCausalLM

    new, pad_id = spec["new"], spec["pad_id"]

    def run(hf, ids, n_new):
        return greedy_left_padded(hf, ids, n_new, pad_id)

    res = {
        "side": "hf",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        **_child_meta(),
    }
    tps, toks, secs = {}, {}, {}
    for cfg in configs or spec["hf_configs"]:  # "<dtype>_<attn_implementation>"
        dtype, attn_impl = cfg.split("_")
        hf = AutoModelForCausalLM.from_pretrained(
            spec["folder"], dtype=getattr(torch, dtype), attn_implementation=attn_impl
        ).eval()
        hf.config.use_cache = True
        for b in spec["batches"]:
            ids = spec["ids"][:b]
            run(hf, ids, 4)  # warm-up: let oneDNN pick its kernels for these shapes
            dt, gen = run(hf, ids, new)
            n = sum(len(g) for g in gen)
            key = f"{prefix}_{cfg}_b{b}"
            tps[key], toks[key], secs[key] = n / dt, gen, round(dt, 2)
            print(key, f"{n} tokens {dt:.1f} s {n / dt:.1f} tok/s", file=sys.stderr, flush=True)
        del hf
    res.update(tokens_per_s=tps, seconds=secs, tokens=toks)
    return res


if __name__ == "__main__":
    main()
