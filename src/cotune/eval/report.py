"""Evaluation reports: the numbers, where they came from, and how they are written.

A :class:`Report` is the aggregate metrics plus breakdowns, a failure gallery, the
per-example rows and ``meta`` (model, data, prompt template, schema, instruction and
few-shot examples), because a number without the prompt that produced it cannot be
compared with anything. ``report.json`` is the machine-readable source of truth; the
markdown and the PNG charts are rendered from it, and so is a comparison
(:mod:`cotune.eval.compare`): two runs made months apart need nothing but their directories.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotune.eval.charts import accuracy_by_task_chart, overview_chart
from cotune.eval.inputs import EvalInputError
from cotune.eval.metrics import (
    CI_SUFFIX,
    GALLERY_KINDS,
    ExampleRow,
    aggregate,
    breakdown,
    gallery,
)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PREDICTIONS = "predictions.jsonl"
CHART_BY_TASK = "accuracy_by_task.png"
CHART_OVERVIEW = "overview.png"


@dataclass
class Report:
    """An evaluation: ``meta`` + ``metrics`` + breakdowns + gallery (+ per-example rows)."""

    meta: dict[str, Any]
    metrics: dict[str, Any]
    by_task: dict[str, dict[str, Any]]
    by_difficulty: dict[str, dict[str, Any]]
    gallery: dict[str, list[dict[str, Any]]]
    rows: list[ExampleRow] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """What goes into report.json (rows go to predictions.jsonl instead)."""
        return {
            "meta": self.meta,
            "metrics": self.metrics,
            "by_task": self.by_task,
            "by_difficulty": self.by_difficulty,
            "gallery": self.gallery,
        }


def build_report(
    rows: Sequence[ExampleRow],
    meta: dict[str, Any],
    *,
    length_unit: str = "words",
    gallery_size: int = 5,
) -> Report:
    """Aggregate scored rows into a report."""
    rows = list(rows)
    return Report(
        meta={**meta, "length_unit": length_unit},
        metrics=aggregate(rows, length_unit=length_unit),
        by_task=breakdown(rows, lambda r: r.task, length_unit=length_unit),
        by_difficulty=breakdown(
            rows,
            lambda r: "none" if r.difficulty is None else r.difficulty,
            length_unit=length_unit,
        ),
        gallery=gallery(rows, size=gallery_size),
        rows=rows,
    )


# --------------------------------------------------------------------------- formatting


def fmt(value: Any, pct: bool = True) -> str:
    """A cell: shares as percentages, counts as integers, missing as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{100 * value:.1f}%" if pct else f"{value:.1f}"
    return str(value)


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# (label, path into metrics, is a share)
HEADLINE: list[tuple[str, tuple[str, ...], bool]] = [
    ("format (strict)", ("format_strict",), True),
    ("format (lenient)", ("format_lenient",), True),
    ("accuracy (strict)", ("accuracy_strict",), True),
    ("accuracy (lenient)", ("accuracy_lenient",), True),
    ("majority-vote accuracy", ("majority_accuracy",), True),
    ("any sample correct", ("any_correct",), True),
    ("step validity (true claims)", ("steps", "step_validity"), True),
    ("traces with all claims true", ("steps", "trace_validity"), True),
    ("right answer via a wrong step", ("steps", "right_answer_wrong_step"), False),
    ("truncated", ("truncated_rate",), True),
    ("reasoning length (mean)", ("reasoning_length", "mean"), False),
]


def metric_at(metrics: dict[str, Any], path: Sequence[str]) -> Any:
    v: Any = metrics
    for p in path:
        if not isinstance(v, dict):
            return None
        v = v.get(p)
    return v


def interval_at(metrics: dict[str, Any], path: Sequence[str]) -> dict[str, Any] | None:
    """The ``{"successes", "n", "lo", "hi"}`` interval stored next to a share, if any
    (reports written before intervals existed have none)."""
    if not path:
        return None
    ci = metric_at(metrics, [*path[:-1], path[-1] + CI_SUFFIX])
    return ci if isinstance(ci, dict) and {"lo", "hi", "n"} <= set(ci) else None


def fmt_ci(value: Any, ci: dict[str, Any] | None, *, show_n: bool = True) -> str:
    """A share with its 95% interval: ``91.4% [88.0, 94.0] (n=256)``."""
    if not isinstance(value, float) or ci is None:
        return fmt(value)
    text = f"{100 * value:.1f}% [{100 * ci['lo']:.1f}, {100 * ci['hi']:.1f}]"
    return text + (f" (n={ci['n']})" if show_n else "")


def fmt_metric(metrics: dict[str, Any], path: Sequence[str], share: bool = True) -> str:
    """The cell for a HEADLINE metric: shares with their interval and n, others plain."""
    v = metric_at(metrics, path)
    return fmt_ci(v, interval_at(metrics, path)) if share else fmt(v, pct=False)


def _group_rows(groups: dict[str, dict[str, Any]]) -> list[list[str]]:
    def cell(m: dict[str, Any], *path: str) -> str:
        # n is the group's column unless the share counts something else (claims)
        ci = interval_at(m, path)
        other_n = ci is not None and ci["n"] != m.get("n_completions")
        return fmt_ci(metric_at(m, path), ci, show_n=other_n)

    return [
        [
            name,
            str(m["n_examples"]),
            cell(m, "format_strict"),
            cell(m, "accuracy_strict"),
            cell(m, "accuracy_lenient"),
            cell(m, "majority_accuracy"),
            cell(m, "steps", "step_validity"),
            str(m["steps"]["right_answer_wrong_step"]),
            str(m["truncated"]),
        ]
        for name, m in groups.items()
    ]


_GROUP_HEADER = [
    "n",
    "format strict",
    "acc strict",
    "acc lenient",
    "majority",
    "step validity",
    "right via wrong step",
    "truncated",
]


def _fence(text: str) -> str:
    text = (text or "").replace("```", "ʼʼʼ")
    return f"```\n{text}\n```"


def render_markdown(report: dict[str, Any]) -> str:
    """report.json as a readable page: what was run, headline numbers, breakdowns, failures."""
    meta, m = report["meta"], report["metrics"]
    out = [f"# cotune eval: {meta.get('model') or meta.get('predictions') or 'predictions'}", ""]
    facts = [
        ("model", meta.get("model")),
        ("data", meta.get("data")),
        ("predictions", meta.get("predictions")),
        ("examples / completions", f"{m['n_examples']} / {m['n_completions']}"),
        ("samples per example", m["samples_per_example"]),
        ("template / schema", f"{meta.get('template')} / {meta.get('schema')}"),
        ("few-shot", f"{meta.get('few_shot', 0)} ({meta.get('few_shot_source') or 'none'})"),
        ("temperature", meta.get("temperature")),
        ("max new tokens", meta.get("max_new_tokens")),
        ("calculator", meta.get("calculator")),
    ]
    out += [md_table(["", ""], [[k, str(v)] for k, v in facts if v is not None]), ""]
    out += ["## Headline", ""]
    rows = []
    for label, path, share in HEADLINE:
        v = metric_at(m, path)
        if v is None and path[0] in ("majority_accuracy", "any_correct"):
            continue
        rows.append([label, fmt_metric(m, path, share)])
    out += [md_table(["metric", "value [95% CI] (n)"], rows), ""]
    out += [
        "Intervals are 95% Wilson score intervals over the n counted (completions, claims or "
        "traces); in the breakdowns n is the group's completions unless shown.",
        "",
    ]
    st = m["steps"]
    rl = m["reasoning_length"]
    out += [
        f"Claims checked: {st['claims']} ({st['true_claims']} true) in "
        f"{st['traces_with_claims']} traces; {st['right_answer_wrong_step']} completions reached "
        f"the right answer through at least one false step. Reasoning length in "
        f"{rl['unit']}: mean {fmt(rl['mean'], pct=False)}, median {fmt(rl['median'], pct=False)}, "
        f"max {fmt(rl['max'])}. Truncated at the token limit: {m['truncated']}.",
        "",
    ]
    ops = st.get("by_operation") or {}
    if ops:
        out += ["## Step validity by operation", ""]
        out += [
            md_table(
                ["operation", "claims", "step validity [95% CI]"],
                [
                    [
                        f"`{op}`" if op in "+-*/" else op,
                        str(v["claims"]),
                        fmt_metric(v, ("step_validity",), True),
                    ]
                    for op, v in ops.items()
                ],
            ),
            "",
        ]
    for title, groups in (
        ("By task", report["by_task"]),
        ("By difficulty", report["by_difficulty"]),
    ):
        out += [
            f"## {title}",
            "",
            md_table([title.split()[-1], *_GROUP_HEADER], _group_rows(groups)),
            "",
        ]
    if m["problems"]:
        out += ["## Format problems", ""]
        out += [
            md_table(["problem", "completions"], [[k, str(v)] for k, v in m["problems"].items()])
        ]
        out += [""]
    out += ["## Prompt", "", _fence(meta.get("prompt_example", "")), ""]
    for shot in meta.get("few_shot_examples") or []:
        out += [f"- few-shot `{shot.get('id')}`: {shot.get('question')}"]
    out += ["", "## Worst failures", ""]
    for kind in GALLERY_KINDS:
        items = report["gallery"].get(kind) or []
        out += [f"### {kind.replace('_', ' ')} ({len(items)})", ""]
        for g in items:
            out += [
                f"**{g['id']}** ({g['task']}, sample {g['sample']}): gold `{g['gold']}`, "
                f"predicted `{g['predicted']}`; {', '.join(g['failures'])}"
                + (f"; problems: {', '.join(g['problems'])}" if g["problems"] else "")
                + (f"; false claims: {', '.join(g['false_claims'])}" if g["false_claims"] else ""),
                "",
                f"> {g['question']}",
                "",
                _fence(g["completion"]),
                "",
            ]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- files


def write_predictions(rows: Sequence[ExampleRow], path: Path) -> None:
    """One line per (id, sample), re-scorable with ``cotune eval --predictions``."""
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            for i, s in enumerate(r.samples):
                line = {
                    "id": r.id,
                    "sample": i,
                    "completion": s.completion,
                    "truncated": s.truncated,
                    "task": r.task,
                    "gold": r.gold,
                    "answer": s.lenient_answer,
                    "strict_answer": s.strict_answer,
                    "correct": s.lenient_correct,
                    "strict_correct": s.strict_correct,
                    "well_formed": s.well_formed,
                    "problems": s.problems,
                    "n_claims": s.n_claims,
                    "n_true_claims": s.n_true_claims,
                }
                f.write(json.dumps(line, ensure_ascii=False) + "\n")


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md, predictions.jsonl and the PNG charts; return paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = report.to_dict()
    paths = {
        "json": out / REPORT_JSON,
        "markdown": out / REPORT_MD,
        "predictions": out / PREDICTIONS,
        "chart_by_task": out / CHART_BY_TASK,
        "chart_overview": out / CHART_OVERVIEW,
    }
    paths["json"].write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(d), encoding="utf-8")
    write_predictions(report.rows, paths["predictions"])
    accuracy_by_task_chart(d, paths["chart_by_task"])
    overview_chart(d, paths["chart_overview"])
    return paths


def load_report(path: str | Path) -> dict[str, Any]:
    """report.json from a report directory (or the file itself), checked enough to compare."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_JSON
    if not p.is_file():
        raise EvalInputError(f"{p}: no report found; expected a directory written by cotune eval")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EvalInputError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
    for key in ("meta", "metrics", "by_task"):
        if not isinstance(d, dict) or not isinstance(d.get(key), dict):
            raise EvalInputError(f"{p}: key {key!r} missing; expected a cotune eval report.json")
    return d
