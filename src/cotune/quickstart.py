"""The main job, end to end on one machine: data -> base eval -> LoRA SFT -> eval -> report.

``cotune quickstart`` (and ``make demo``) runs this on the embedded Gemma 3 270M. Every
stage leaves its artefacts in the run folder, so a user can open the data, the checkpoints,
both evaluation reports and the before/after comparison afterwards:

    runs/quickstart/
      data/{train,val,test}.jsonl   generated, verified, split with no question overlap
      eval_base/                    report.json, report.md, predictions.jsonl, charts
      sft/                          checkpoints, best/, metrics.jsonl, loss.png, config.yaml
      eval_tuned/                   the same report for the fine-tuned model
      compare/                      compare.md/.json/.png: before vs after
      summary.json                  headline numbers and wall time per stage

The base model is evaluated with exactly the prompt the fine-tuned model sees (same
instruction and template, zero-shot), so the comparison is fair; pass ``few_shot`` to give
the base model worked examples as well (the report records which prompt was used).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cotune import data
from cotune.config import RunConfig, load_config
from cotune.outputs import atomic_dir, check_output

DEFAULT_CONFIG = Path(__file__).resolve().parent / "assets" / "quickstart.yaml"


@dataclass
class QuickstartResult:
    out: Path
    base: dict[str, Any]
    tuned: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def _split_data(cfg: RunConfig, n_test: int) -> dict[str, list[data.Record]]:
    """Train/val/test from the configured generators, disjoint by normalized question."""
    pool = data.mix(cfg.data.train, seed=cfg.data.seed, difficulty=cfg.data.difficulty)
    extra = data.generate(
        sorted({s.generator for s in cfg.data.train if s.generator}) or ["arithmetic"],
        n=4 * n_test,
        seed=cfg.data.seed + 7919,
        difficulty=cfg.data.difficulty,
    )
    train_keys = {data.question_key(r.question) for r in pool}
    test = [r for r in extra if data.question_key(r.question) not in train_keys][:n_test]
    n_val = max(cfg.data.val_size_for_accuracy, 1)
    val, train = pool[:n_val], pool[n_val:]
    return {"train": train, "val": val, "test": test}


def _headline(report: Any) -> dict[str, Any]:
    """The numbers the README table shows, from a :class:`cotune.eval.Report`."""
    from cotune.eval.report import HEADLINE, metric_at

    out = {label: metric_at(report.metrics, path) for label, path, _ in HEADLINE}
    out["n_examples"] = report.metrics.get("n_examples")
    return {k: v for k, v in out.items() if v is not None}


def quickstart(
    out: str | Path = "runs/quickstart",
    *,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    force: bool = False,
    n_test: int = 64,
    few_shot: int = 0,
    max_new_tokens: int | None = None,
    console: Console | None = None,
) -> QuickstartResult:
    """Run the whole pipeline; returns the before/after headline metrics.

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
        return _pipeline(work, out, cfg, console or Console(), n_test, few_shot, max_new_tokens)


def _pipeline(
    work: Path,
    out: Path,
    cfg: RunConfig,
    con: Console,
    n_test: int,
    few_shot: int,
    max_new_tokens: int | None,
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
    parts = _split_data(cfg, n_test)
    for name, recs in parts.items():
        data.write_jsonl(work / "data" / f"{name}.jsonl", recs)
    con.print(
        f"train {len(parts['train'])}, val {len(parts['val'])}, test {len(parts['test'])} "
        f"examples -> {out / 'data'}"
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
    )
    stage("eval_base", "3/5  Evaluating the base model (same instruction, before training)")
    base = evaluate(
        model,
        parts["test"],
        few_shot=few_shot,
        few_shot_pool=parts["train"] if few_shot else None,
        meta={"model": f"{cfg.model.name} (base)"},
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
    tuned = evaluate(
        result.model,
        parts["test"],
        meta={"model": f"{cfg.model.name} + LoRA ({out / 'sft'})"},
        **eval_kw,
    )
    write_report(tuned, work / "eval_tuned")
    done("eval_tuned")

    cmp = compare(work / "eval_base", work / "eval_tuned", work / "compare")
    seconds["total"] = time.perf_counter() - t_all
    hb, ht = _headline(base), _headline(tuned)
    table = Table(
        title=f"{cfg.model.name}: before vs after LoRA SFT ({len(parts['test'])} held-out questions)"
    )
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("fine-tuned", justify="right")
    table.add_column("change", justify="right")

    def fmt_v(v: float | None, share: bool) -> str:
        return "–" if v is None else (f"{100 * v:.1f}%" if share else f"{v:.1f}")

    for label, va, vb, delta, share in cmp.rows:
        fmt_d = "–" if delta is None else (f"{100 * delta:+.1f} pts" if share else f"{delta:+.1f}")
        table.add_row(label, fmt_v(va, share), fmt_v(vb, share), fmt_d)
    con.print(table)
    con.print(
        f"wall time: {seconds['total'] / 60:.1f} min  ({', '.join(f'{k} {v:.0f}s' for k, v in seconds.items() if k != 'total')})"
    )
    con.print(f"everything is in {out}/ (compare/compare.md, eval_*/report.md, sft/loss.png)")
    summary = {
        "model": cfg.model.name,
        "base": hb,
        "tuned": ht,
        "seconds": seconds,
        "n_train": len(parts["train"]),
        "n_test": len(parts["test"]),
        "sft_steps": result.steps,
        "sft_final_loss": result.final_loss,
        "sft_tokens_per_s": result.tokens_per_s,
        "comparison_md": str(out / "compare" / "compare.md"),
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return QuickstartResult(out, hb, ht, seconds)
