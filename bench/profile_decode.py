"""Where a batch-32 greedy decode step's time goes on the real 270M: the whole step, the
step with the output projection cut from the 262,144-row vocabulary to its first 4,096 rows
(the difference is what reading and multiplying the full embedding costs per step), and the
step with attention cut to the cache's first 16 slots (the difference is what attention
over the cache, with its copies, costs).

    .venv/bin/python -m bench.profile_decode [--batch 32] [--dtype bfloat16]

Per-step time = (time for 128 new tokens - time for 1) / 127, best of two, after a compile
call; no file is written. The cut variants produce different tokens (they only exist to
time the rest of the step).
"""

from __future__ import annotations

import argparse
import time

from cotune import generate as gen
from cotune.data.generators import TASKS
from cotune.data.generators import generate as make_records
from cotune.model import load
from cotune.train.sft import enable_compilation_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    enable_compilation_cache()
    model = load("gemma3-270m")
    recs = make_records(list(TASKS), args.batch, seed=0)
    ids = gen.encode_prompts(model, [r.question for r in recs])
    full_logits, full_rest = gen._g3_logits, gen._g3_rest

    def cut_logits(w, h):  # same product, 4,096 vocabulary rows instead of 262,144
        return full_logits({"emb": w.get("emb_out", w["emb"])[:4096]}, h)

    def cut_attention(w, x, q, keys, values, mask):  # the first 16 cache slots only
        k_layout, v_layout = gen._kv_layout(keys.dtype)
        keys = gen._first_slots(keys, k_layout, 16)
        values = gen._first_slots(values, v_layout, 16)
        return full_rest(w, x, q, keys, values, mask[..., :16])

    def run(n: int) -> float:
        t = time.perf_counter()
        gen.generate_detailed(
            model, ids, max_new_tokens=n, stop_strings=[], compute_dtype=args.dtype
        )
        return time.perf_counter() - t

    variants = {
        "whole step": (full_logits, full_rest),
        "projection cut to 4,096 rows": (cut_logits, full_rest),
        "attention cut to 16 cache slots": (full_logits, cut_attention),
    }
    for name, (logits, rest) in variants.items():
        gen._g3_logits, gen._g3_rest = logits, rest
        gen._G3_JITTED.clear()  # recompile with this variant
        run(128)
        run(1)
        t1, t128 = min(run(1) for _ in range(2)), min(run(128) for _ in range(2))
        step_ms = (t128 - t1) / 127 * 1e3
        print(f"{name}: {step_ms:.1f} ms per step; prefill + 1 token {t1:.2f} s", flush=True)
    gen._g3_logits, gen._g3_rest = full_logits, full_rest


if __name__ == "__main__":
    main()
