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

from cotune.data.generators import TASKS
from cotune.data.generators import generate as make_records
from cotune.generate import encode_prompts, gemma3, generate_detailed, kv_cache
from cotune.generate.caches import decoder_parts
from cotune.model import load
from cotune.runtime import enable_compilation_cache


def cut_logits(w, h):
    """The same product over 4,096 vocabulary rows instead of 262,144."""
    return gemma3.logits({"emb": w.get("emb_out", w["emb"])[:4096]}, h)


def cut_attention(w, x, q, keys, values, mask):
    """Attention over the first 16 cache slots only."""
    k_layout, v_layout = kv_cache.layouts(keys.dtype)
    keys = kv_cache.first_slots(keys, k_layout, 16)
    values = kv_cache.first_slots(values, v_layout, 16)
    return gemma3.attend(w, x, q, keys, values, mask[..., :16])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    enable_compilation_cache()
    model = load("gemma3-270m")
    recs = make_records(list(TASKS), args.batch, seed=0)
    ids = encode_prompts(model, [r.question for r in recs])

    def run(n: int) -> float:
        t = time.perf_counter()
        generate_detailed(model, ids, max_new_tokens=n, stop_strings=[], compute_dtype=args.dtype)
        return time.perf_counter() - t

    variants = {
        "whole step": {},
        "projection cut to 4,096 rows": {"logits": cut_logits},
        "attention cut to 16 cache slots": {"attend": cut_attention},
    }
    for name, parts in variants.items():
        with decoder_parts(**parts):  # compiled once per variant
            run(128)
            run(1)
            t1, t128 = min(run(1) for _ in range(2)), min(run(128) for _ in range(2))
        step_ms = (t128 - t1) / 127 * 1e3
        print(f"{name}: {step_ms:.1f} ms per step; prefill + 1 token {t1:.2f} s", flush=True)


if __name__ == "__main__":
    main()
