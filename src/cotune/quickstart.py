"""The main job, end to end on one machine: data -> base eval -> LoRA SFT -> eval -> report.

``cotune quickstart`` (and ``make demo``) runs this on the embedded Gemma 3 270M. Every
stage leaves its artefacts in the run folder, so a user can open the data, the checkpoints,
both evaluation reports and the before/after comparison afterwards:

    runs/quickstart/
      data/train.jsonl, val.jsonl   the training mixture, phrased with training templates only
      data/test.jsonl               held-out questions (own seed), balanced over every task
                                    and test difficulty, training phrasings
      data/test_heldout_templates.jsonl
                                    more held-out questions (another seed) phrased only with
                                    templates never used for training
      eval_base/                    report.json, report.md, predictions.jsonl, charts
      sft/                          checkpoints, best/, metrics.jsonl, loss.png, config.yaml
      eval_tuned/                   the same report for the fine-tuned model on test.jsonl
      eval_tuned_heldout_templates/ ... and on test_heldout_templates.jsonl
      compare/                      compare.md/.json/.png: before vs after, same questions
      summary.json                  headline numbers (95% intervals) and wall time per stage

No question (normalized as :func:`cotune.data.question_key`) is in two of the files. The
base model is evaluated with exactly the prompt the fine-tuned model sees (same instruction
and template, zero-shot), so the comparison is fair; pass ``few_shot`` to give the base
model worked examples as well (the report records which prompt was used). Generating with
the base model is slow and its scores are near zero, so by default it sees only the first
``n_base`` test questions (a balanced prefix); ``compare/`` then scores the fine-tuned
model's answers to those same questions (``compare/tuned_same_questions/``).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cotune import data
from cotune.config import RunConfig, load_config
from cotune.data.generators import DIFFICULTIES
from cotune.outputs import atomic_dir, check_output

DEFAULT_CONFIG = Path(__file__).resolve().parent / "assets" / "quickstart.yaml"


@dataclass
class QuickstartResult:
    out: Path
    base: dict[str, Any]
    tuned: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    tuned_heldout_templates: dict[str, Any] = field(default_factory=dict)


# Offsets from data.seed for the two test sets: streams of their own, never training's.
TEST_SEED = 7919
HELDOUT_TEMPLATES_SEED = 104_729


def _balanced(
    tasks: list[str],
    levels: list[int],
    n: int,
    *,
    seed: int,
    templates: str,
    style: str | None,
    exclude: set[str],
) -> list[data.Record]:
    """``n`` generated questions spread evenly over every (task, level) cell, none whose
    normalized question is in ``exclude`` (which grows with every pick). The cells are
    interleaved in a shuffled order, so any prefix of the list is balanced too."""
    cells = [(t, d) for t in tasks for d in levels]
    random.Random(seed).shuffle(cells)  # a short prefix is not all from the first task
    per, extra = divmod(n, len(cells))
    picked: list[list[data.Record]] = []
    for j, (task, level) in enumerate(cells):
        want, got, misses = per + (j < extra), [], 0
        stream = data.iter_generate(
            task,
            seed=seed * 1000 + j,
            difficulty=level,
            unique=True,
            templates=templates,
            **({"style": style} if style else {}),
        )
        while len(got) < want and misses < 1000:  # a tiny question space gives fewer
            r = next(stream)
            key = data.question_key(r.question)
            if key in exclude:
                misses += 1
                continue
            exclude.add(key)
            got.append(r)
        picked.append(got)
    depth = max(map(len, picked), default=0)
    return [cell[i] for i in range(depth) for cell in picked if i < len(cell)]


def _split_data(
    cfg: RunConfig, n_test: int, n_test_heldout: int = 0
) -> dict[str, list[data.Record]]:
    """Train, val and two test sets, no normalized question in two of them.

    * ``train``, ``val``: the configured mixture, phrased with training templates only;
    * ``test``: ``n_test`` questions from a seed of their own, training phrasings, balanced
      over every trained task and ``data.test_difficulty`` level (default: the training
      levels): new numbers and new questions, familiar wording;
    * ``test_heldout_templates``: ``n_test_heldout`` more from another seed, phrased only
      with held-out templates (:mod:`cotune.data.phrasing`): wording never trained on.
    """
    style = getattr(cfg.data, "style", None)
    pool = data.mix(
        cfg.data.train,
        seed=cfg.data.seed,
        difficulty=cfg.data.difficulty,
        templates="train",
        **({"style": style} if style else {}),
    )
    n_val = max(cfg.data.val_size_for_accuracy, 1)
    val = pool[:n_val]
    seen = {data.question_key(r.question) for r in val}
    train = [r for r in pool[n_val:] if data.question_key(r.question) not in seen]
    seen |= {data.question_key(r.question) for r in train}
    gens = sorted({s.generator for s in cfg.data.train if s.generator}) or ["arithmetic"]
    tasks = data.resolve_tasks(gens)
    levels = list(cfg.data.test_difficulty or cfg.data.difficulty or DIFFICULTIES)
    kw = {"style": style, "exclude": seen}
    test = _balanced(tasks, levels, n_test, seed=cfg.data.seed + TEST_SEED, templates="train", **kw)
    held = _balanced(
        tasks,
        levels,
        n_test_heldout,
        seed=cfg.data.seed + HELDOUT_TEMPLATES_SEED,
        templates="heldout",
        **kw,
    )
    return {"train": train, "val": val, "test": test, "test_heldout_templates": held}


def _headline(report: Any) -> dict[str, Any]:
    """The numbers the README table shows, from a :class:`cotune.eval.Report`, with the
    95% interval of every share under ``ci95`` (``{"lo", "hi", "n"}``)."""
    from cotune.eval.report import HEADLINE, interval_at, metric_at

    out = {label: metric_at(report.metrics, path) for label, path, _ in HEADLINE}
    out["n_examples"] = report.metrics.get("n_examples")
    out = {k: v for k, v in out.items() if v is not None}
    ci = {}
    for label, path, share in HEADLINE:
        iv = interval_at(report.metrics, path) if share and label in out else None
        if iv is not None:
            ci[label] = {"lo": iv["lo"], "hi": iv["hi"], "n": iv["n"]}
    return {**out, "ci95": ci}


def _same_questions(tuned: Any, records: list[data.Record], **eval_kw: Any) -> Any:
    """The fine-tuned model's answers to ``records`` (a subset of what it was evaluated
    on), re-scored without generating again, so base and tuned compare on equal terms."""
    from cotune.eval import evaluate

    rows = {r.id: r for r in tuned.rows}
    keep = (
        "model",
        "temperature",
        "top_k",
        "top_p",
        "seed",
        "max_new_tokens",
        "samples",
        "calculator",
    )
    return evaluate(
        None,
        records,
        completions={r.id: [s.completion for s in rows[r.id].samples] for r in records},
        truncated={r.id: [s.truncated for s in rows[r.id].samples] for r in records},
        meta={**{k: tuned.meta.get(k) for k in keep}, "rescored_from": "eval_tuned"},
        progress=False,
        **{k: v for k, v in eval_kw.items() if k not in ("batch_size", "calculator")},
    )


def quickstart(
    out: str | Path = "runs/quickstart",
    *,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    n_test: int = 256,
    n_test_heldout: int = 128,
    n_base: int | None = 64,
    few_shot: int = 0,
    max_new_tokens: int | None = None,
    console: Console | None = None,
) -> QuickstartResult:
    """Run the whole pipeline; returns the before/after headline metrics.

    ``n_test`` held-out questions and ``n_test_heldout`` questions in held-out phrasings
    (0 = none) are generated; the fine-tuned model is evaluated on both, the base model on
    the first ``n_base`` test questions (None = all of them).

    An existing non-empty ``out`` is refused unless ``force`` (:class:`OutputError`), and
    never replaced if it holds the config or a data file. Everything is written into a
    temporary sibling folder that becomes ``out`` only once the pipeline has finished, so
    an interrupted run leaves the previous results as they were.
    """
    out = Path(out)
    cfg = load_config(config or DEFAULT_CONFIG, overrides)
    data_files = [s.path for s in cfg.data.train] + [cfg.data.val]
    check_output(out, "dir", force=force, inputs=[config, *data_files])
    with atomic_dir(out) as work:
        return _pipeline(
            work,
            out,
            cfg,
            console or Console(),
            n_test,
            few_shot,
            max_new_tokens,
            n_test_heldout=n_test_heldout,
            n_base=n_base,
        )


def _pipeline(
    work: Path,
    out: Path,
    cfg: RunConfig,
    con: Console,
    n_test: int,
    few_shot: int,
    max_new_tokens: int | None,
    *,
    n_test_heldout: int = 0,
    n_base: int | None = None,
) -> QuickstartResult:
    """The stages, writing into ``work``; ``out`` is where the results will be (for labels)."""
    from cotune.eval import compare, evaluate, write_report
    from cotune.model import load
    from cotune.train.sft import train

    max_new = max_new_tokens or cfg.eval.max_new_tokens
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str, title: str) -> float:
        con.rule(f"[bold cyan]{title}")
        seconds[name] = -time.perf_counter()
        return seconds[name]

    def done(name: str) -> None:
        seconds[name] += time.perf_counter()
        con.print(f"[dim]{name}: {seconds[name]:.1f} s")

    stage("data", "1/5  Generating verified reasoning data")
    parts = _split_data(cfg, n_test, n_test_heldout)
    for name, recs in parts.items():
        data.write_jsonl(work / "data" / f"{name}.jsonl", recs)
    test, held = parts["test"], parts["test_heldout_templates"]
    base_set = test if n_base is None else test[:n_base]
    con.print(
        f"train {len(parts['train'])}, val {len(parts['val'])}, test {len(test)}, "
        f"test in held-out phrasings {len(held)} examples -> {out / 'data'}"
    )
    ex = parts["train"][0]
    con.print(
        f"[dim]e.g. {ex.question}\n     <reasoning>{ex.reasoning}</reasoning><answer>{ex.answer}</answer>"
    )
    done("data")

    stage("load", f"2/5  Loading {cfg.model.name}")
    model = (
        load(cfg.model.name)
        if cfg.model.name == "tiny"
        else load(cfg.model.name, dtype=cfg.model.dtype)
    )
    done("load")

    eval_kw = dict(
        max_new_tokens=max_new,
        template=cfg.format.template,
        schema=cfg.format.schema_,
        batch_size=cfg.eval.batch_size,
        tokenizer=model.tokenizer,
        calculator=cfg.eval.calculator,
    )
    stage("eval_base", "3/5  Evaluating the base model (same instruction, before training)")
    base = evaluate(
        model,
        base_set,
        few_shot=few_shot,
        few_shot_pool=parts["train"] if few_shot else None,
        meta={
            "model": f"{cfg.model.name} (base)",
            "data": f"data/test.jsonl (first {len(base_set)} of {len(test)})",
        },
        **eval_kw,
    )
    write_report(base, work / "eval_base")
    done("eval_base")

    stage("sft", "4/5  LoRA fine-tuning on Tunix")
    result = train(
        cfg,
        work / "sft",
        force=True,
        model=model,
        train_records=parts["train"],
        val_records=parts["val"],
    )
    done("sft")

    stage("eval_tuned", "5/5  Evaluating the fine-tuned model")
    tuned_name = f"{cfg.model.name} + LoRA ({out / 'sft'})"
    tuned = evaluate(
        result.model, test, meta={"model": tuned_name, "data": "data/test.jsonl"}, **eval_kw
    )
    write_report(tuned, work / "eval_tuned")
    held_report = None
    if held:
        held_report = evaluate(
            result.model,
            held,
            meta={"model": tuned_name, "data": "data/test_heldout_templates.jsonl"},
            **eval_kw,
        )
        write_report(held_report, work / "eval_tuned_heldout_templates")
    done("eval_tuned")

    if len(base_set) < len(test):
        same = work / "compare" / "tuned_same_questions"
        write_report(_same_questions(tuned, base_set, **eval_kw), same)
    else:
        same = work / "eval_tuned"
    cmp = compare(work / "eval_base", same, work / "compare")
    seconds["total"] = time.perf_counter() - t_all
    hb, ht = _headline(base), _headline(tuned)
    hh = _headline(held_report) if held_report is not None else {}
    con.print(_final_table(cfg.model.name, cmp, base, tuned, held_report, cfg.eval.calculator))
    con.print(
        f"wall time: {seconds['total'] / 60:.1f} min  ({', '.join(f'{k} {v:.0f}s' for k, v in seconds.items() if k != 'total')})"
    )
    con.print(f"everything is in {out}/ (compare/compare.md, eval_*/report.md, sft/loss.png)")
    summary = {
        "model": cfg.model.name,
        "base": hb,
        "tuned": ht,
        "seconds": seconds,
        "tuned_heldout_templates": hh,
        "n_train": len(parts["train"]),
        "n_test": len(test),
        "n_test_heldout_templates": len(held),
        "n_base": len(base_set),
        "test_difficulty": sorted({r.difficulty for r in test}),
        "calculator": cfg.eval.calculator,
        "sft_steps": result.steps,
        "sft_final_loss": result.final_loss,
        "sft_tokens_per_s": result.tokens_per_s,
        "comparison_md": str(out / "compare" / "compare.md"),
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return QuickstartResult(out, hb, ht, seconds, hh)


def _final_table(
    model: str, cmp: Any, base: Any, tuned: Any, held: Any | None, calculator: bool = False
) -> Table:
    """Base (first questions) and fine-tuned (all questions, and held-out phrasings), each
    share with its 95% interval; "change" is on the questions both models answered. The
    title says when both generated with the calculator."""
    from cotune.eval.report import HEADLINE, fmt_ci, fmt_metric, interval_at, metric_at

    nb, nt = base.metrics["n_examples"], tuned.metrics["n_examples"]
    cols = [("base", base, nb), ("fine-tuned", tuned, nt)]
    if held is not None:
        cols.append(("fine-tuned, unseen phrasings", held, held.metrics["n_examples"]))
    how = ", both with the calculator" if calculator else ""
    table = Table(title=f"{model}: before vs after LoRA SFT (95% intervals{how})")
    table.add_column("metric")
    for name, _, n in cols:
        table.add_column(f"{name}\n({n} q)", justify="right")
    table.add_column(f"change\n(same {nb} q)", justify="right")
    deltas = {label: (delta, share) for label, _, _, delta, share in cmp.rows}
    for label, path, share in HEADLINE:
        values = [metric_at(r.metrics, path) for _, r, _ in cols]
        if all(v is None for v in values):
            continue
        cells = [
            fmt_ci(metric_at(r.metrics, path), interval_at(r.metrics, path), show_n=False)
            if share
            else fmt_metric(r.metrics, path, share=False)
            for _, r, _ in cols
        ]
        delta, _ = deltas.get(label, (None, share))
        change = "–" if delta is None else (f"{100 * delta:+.1f} pts" if share else f"{delta:+.1f}")
        table.add_row(label, *cells, change)
    return table
