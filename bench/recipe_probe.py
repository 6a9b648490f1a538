"""One row of the reasoning-recipe study (docs/recipe.md): train a variant, score it on
validation questions, write ``bench/results/recipe/<name>.json``.

Validation only: the questions come from their own seed and never from the test seeds the
quickstart reports on, so choosing a recipe here does not peek at the test sets.

    python -m bench.recipe_probe --name NAME --style compact --steps 150 \
        --val-file bench/results/recipe/val.jsonl --set eval.max_new_tokens=160
    python -m bench.recipe_probe --name NAME --style small --steps 400 \
        --val-file bench/results/recipe/val.jsonl --set format.max_seq_len=384 \
        --set train.batch_size=3 --set eval.max_new_tokens=256
    python -m bench.recipe_probe --table     # the Markdown table of every row

With ``--val-file`` every variant is scored on the same frozen validation questions (their
records are also removed from the training pool); without it they are generated from
``VAL_SEED`` with the variant's own style and tasks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from cotune import data
from cotune.config import load_config

RESULTS = Path(__file__).resolve().parent / "results" / "recipe"
VAL_SEED = 424242  # the study's validation questions; the quickstart's test seeds differ


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--style", default=None, help="trace style (cotune.data.TRACE_STYLES)")
    ap.add_argument("--tasks", default="arithmetic,word_problems")
    ap.add_argument("--difficulty", default="1,2")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-val", type=int, default=192)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default="runs/recipe")
    ap.add_argument("--val-file", default=None, help="JSONL of validation records to score on")
    ap.add_argument("--write-val", default=None, help="write the validation records here")
    ap.add_argument(
        "--templates",
        default="all",
        choices=("all", "train"),
        help="phrasings of the training pool: all of them, or only those the quickstart trains on",
    )
    ap.add_argument(
        "--heldout-val-file",
        default=None,
        help="JSONL of questions in held-out phrasings, also scored (with the calculator when "
        "--calculator): how far the recipe reads wordings it never trained on",
    )
    ap.add_argument(
        "--drill",
        type=int,
        default=0,
        help="add this many drill records: the training traces' own claims, shuffled, 12 a record",
    )
    ap.add_argument(
        "--extra-tasks",
        default=None,
        help="tasks to weight up: --extra-n more records of these join the training pool",
    )
    ap.add_argument("--extra-n", type=int, default=1000)
    ap.add_argument(
        "--calculator",
        action="store_true",
        help="also score the trained model with the calculator filling in every claim's value "
        "(a separate entry: how often the plan is right when no fact can be wrong)",
    )
    args = ap.parse_args(argv)

    from cotune.eval import evaluate
    from cotune.model import load
    from cotune.train.sft import train

    diff = [int(d) for d in args.difficulty.split(",")]
    gen_kw = {"style": args.style} if args.style else {}
    t0 = time.perf_counter()
    gen_kw["templates"] = args.templates
    pool = data.generate(args.tasks, n=args.n_train, seed=0, difficulty=diff, **gen_kw)
    if args.extra_tasks:  # another seed: other draws of those tasks
        pool += data.generate(args.extra_tasks, n=args.extra_n, seed=1, difficulty=diff, **gen_kw)
    heldout = data.read_jsonl(args.heldout_val_file) if args.heldout_val_file else []
    held_keys = {data.question_key(r.question) for r in heldout}
    pool = [r for r in pool if data.question_key(r.question) not in held_keys]
    train_keys = {data.question_key(r.question) for r in pool}
    if args.val_file:  # one frozen validation set, so every row of the study is comparable
        val = data.read_jsonl(args.val_file)
        val_keys = {data.question_key(v.question) for v in val}
        pool = [r for r in pool if data.question_key(r.question) not in val_keys]
    else:
        val = data.generate(args.tasks, n=4 * args.n_val, seed=VAL_SEED, difficulty=diff, **gen_kw)
        val = [r for r in val if data.question_key(r.question) not in train_keys][: args.n_val]
    if args.drill:
        pool = pool + drill_records(pool, args.drill)
    if args.write_val:
        data.write_jsonl(args.write_val, val)
        return {}
    cfg = load_config(args.config, [f"train.steps={args.steps}", *args.overrides])
    model = load(cfg.model.name, dtype=cfg.model.dtype)
    t_train = time.perf_counter()
    result = train(
        cfg,
        Path(args.out) / args.name,
        force=True,
        model=model,
        train_records=pool,
        val_records=val[:16],
    )
    t_eval = time.perf_counter()
    eval_kw = {
        "max_new_tokens": cfg.eval.max_new_tokens,
        "template": cfg.format.template,
        "schema": cfg.format.schema_,
        "batch_size": cfg.eval.batch_size,
        "tokenizer": model.tokenizer,
    }
    report = evaluate(result.model, val, **eval_kw)
    t_end = time.perf_counter()
    alone = score(report)
    calc = None
    if args.calculator:
        calc = score(evaluate(result.model, val, calculator=True, **eval_kw))
        calc["seconds"] = round(time.perf_counter() - t_end, 1)
    held = None
    if heldout:
        t_held = time.perf_counter()
        held = score(evaluate(result.model, heldout, calculator=args.calculator, **eval_kw))
        held["calculator"] = args.calculator
        held["seconds"] = round(time.perf_counter() - t_held, 1)
        held["val_set_sha256_12"] = questions_sha(heldout)
    val_sha = questions_sha(val)
    out = {
        "name": args.name,
        "val_set_sha256_12": val_sha,  # rows are comparable when this matches
        "command": "python -m bench.recipe_probe "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "style": args.style,
        "steps": args.steps,
        "overrides": args.overrides,
        "drill": args.drill,
        "n_train_pool": len(pool),
        "n_val": len(val),
        "accuracy": alone["accuracy"],
        "accuracy_ci95": alone["accuracy_ci95"],
        "step_validity": alone["step_validity"],
        "per_task": alone["per_task"],
        "seconds": {
            "train": round(t_eval - t_train, 1),
            "eval": round(t_end - t_eval, 1),
            "total": round(t_end - t0, 1),
        },
        "tokens_per_s": result.tokens_per_s,
        "final_loss": result.final_loss,
        "metrics": {k: v for k, v in report.metrics.items() if not isinstance(v, dict | list)},
        "failures": alone["failures"],
        **({"calculator": calc} if calc is not None else {}),
        **({"heldout_phrasings": held} if held is not None else {}),
        "templates": args.templates,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(json.dumps({k: out[k] for k in ("name", "accuracy", "step_validity", "seconds")}))
    for k, v in out["per_task"].items():
        print(f"  {k:15s} {v['correct']:3d}/{v['n']:3d}")
    if calc is not None:
        print(json.dumps({"calculator": {k: calc[k] for k in ("accuracy", "step_validity")}}))
    if held is not None:
        print(
            json.dumps({"heldout_phrasings": {k: held[k] for k in ("accuracy", "step_validity")}})
        )
    return out


def questions_sha(records) -> str:
    """The first 12 hex digits of the SHA-256 of a set's questions: rows scored on sets with
    the same value compare like for like."""
    return hashlib.sha256("\n".join(r.question for r in records).encode()).hexdigest()[:12]


def score(report) -> dict:
    """Accuracy with its Wilson interval and step validity (the report's own), per-task
    counts and the first 40 failures of one greedy evaluation."""
    per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    fails = []
    for row in report.rows:
        s = row.samples[0]
        per_task[row.task][0] += int(s.strict_correct)
        per_task[row.task][1] += 1
        if not s.strict_correct and len(fails) < 40:
            d = s.to_dict()
            fails.append(
                {
                    "task": row.task,
                    "q": row.question,
                    "gold": row.gold,
                    "completion": d.get("completion"),
                    "false": d.get("false_claims"),
                }
            )
    metrics = report.metrics
    ci = metrics["accuracy_strict_ci95"]
    return {
        "accuracy": metrics["accuracy_strict"],
        "accuracy_ci95": [ci["lo"], ci["hi"]],
        "step_validity": (metrics.get("steps") or {}).get("step_validity"),
        "per_task": {k: {"correct": c, "n": n} for k, (c, n) in sorted(per_task.items())},
        "format_strict": metrics.get("format_strict"),
        "failures": fails,
    }


DRILL_CLAIMS = 12
DRILL_QUESTION = "Arithmetic drill: work out each step."


def drill_records(pool: list, n: int, seed: int = 0) -> list:
    """``n`` records of bare arithmetic facts: the claims of the pool's own (verified) traces,
    shuffled out of their problems and listed ``DRILL_CLAIMS`` at a time.

    Why: a trace spends most of its tokens on the problem and the plan, and the model's false
    claims are the facts themselves (a row of facts shows it three times as many per token).
    Made from the training pool only, so nothing of the validation questions gets in.
    """
    import random

    from cotune.verify import find_claims

    claims = [
        f"{c.expression} = {c.claimed}" for r in pool for c in find_claims(r.reasoning) if c.correct
    ]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        picked = rng.sample(claims, DRILL_CLAIMS)
        last = picked[-1].rsplit("= ", 1)[1]
        out.append(
            data.Record(
                id=f"drill/{seed}/{i}",
                task="drill",
                question=DRILL_QUESTION,
                reasoning=". ".join(picked) + ".",
                answer=last,
                source="generated",
                difficulty=1,
            )
        )
    return out


def table() -> str:
    """The study's rows as the Markdown table in docs/recipe.md."""
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    rows.sort(key=lambda r: (r.get("val_set_sha256_12", ""), r["seconds"]["total"]))
    out = [
        "| variant | val set | accuracy [95% CI] | step validity | with calculator [95% CI] "
        "| train s | eval s | command |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        sv = r.get("step_validity")
        calc = r.get("calculator")
        out.append(
            f"| {r['name']} | {r.get('val_set_sha256_12', 'generated')} (n={r['n_val']}) "
            f"| {_pct_ci(r)} | {'–' if sv is None else f'{100 * sv:.1f}%'} "
            f"| {_pct_ci(calc) if calc else '–'} "
            f"| {r['seconds']['train']:.0f} | {r['seconds']['eval']:.0f} | `{r['command']}` |"
        )
    return "\n".join(out)


def _pct_ci(entry: dict) -> str:
    """``38.5% [31.9, 45.6]``: an accuracy with its interval when the entry has one."""
    lo, hi = entry.get("accuracy_ci95") or (None, None)
    ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else ""
    return f"{100 * entry['accuracy']:.1f}%{ci}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        print(table())
    else:
        main()
