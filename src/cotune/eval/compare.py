"""Two evaluation reports side by side: every headline metric and per-task accuracy as
A, B and B minus A, with warnings when the two were not measured alike (other data,
template, schema, sampling, calculator).

Written as ``compare.json`` (the numbers), ``compare.md`` and ``compare.png``, all from the
two ``report.json`` files alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotune.eval.charts import compare_chart
from cotune.eval.report import HEADLINE, fmt, fmt_metric, load_report, md_table, metric_at

COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"


@dataclass
class Comparison:
    """Two reports side by side: ``rows`` are (label, a, b, delta, is_share)."""

    a: dict[str, Any]
    b: dict[str, Any]
    label_a: str
    label_b: str
    rows: list[tuple[str, Any, Any, Any, bool]]
    by_task: list[tuple[str, Any, Any, Any]]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.label_a,
            "b": self.label_b,
            "metrics": [
                {"metric": r[0], "a": r[1], "b": r[2], "delta": r[3], "share": r[4]}
                for r in self.rows
            ],
            "by_task_accuracy_strict": [
                {"task": t, "a": a, "b": b, "delta": d} for t, a, b, d in self.by_task
            ],
            "warnings": self.warnings,
        }


def _delta(a: Any, b: Any) -> Any:
    ok = isinstance(a, int | float) and isinstance(b, int | float)
    return b - a if ok and not isinstance(a, bool) and not isinstance(b, bool) else None


def _label(report: dict[str, Any], path: Path) -> str:
    return str(report["meta"].get("model") or path.name or path)


def compare_reports(
    a: dict[str, Any], b: dict[str, Any], label_a: str = "A", label_b: str = "B"
) -> Comparison:
    """Line up two report dicts metric by metric (B minus A) and per task."""
    rows = []
    for label, path, share in HEADLINE:
        va, vb = metric_at(a["metrics"], path), metric_at(b["metrics"], path)
        if va is None and vb is None:
            continue
        rows.append((label, va, vb, _delta(va, vb), share))
    tasks = sorted(set(a["by_task"]) | set(b["by_task"]))
    by_task = []
    for t in tasks:
        va = a["by_task"].get(t, {}).get("accuracy_strict")
        vb = b["by_task"].get(t, {}).get("accuracy_strict")
        by_task.append((t, va, vb, _delta(va, vb)))
    warnings = []
    fa, fb = a["meta"].get("data_fingerprint"), b["meta"].get("data_fingerprint")
    if fa and fb and fa != fb:
        warnings.append("the two reports were computed on different data")
    for key in ("template", "schema", "few_shot", "samples", "temperature", "max_new_tokens"):
        if a["meta"].get(key) != b["meta"].get(key):
            warnings.append(f"{key} differs: {a['meta'].get(key)!r} vs {b['meta'].get(key)!r}")
    ca, cb = _calculator(a["meta"]), _calculator(b["meta"])
    if ca != cb:
        warnings.append(
            f"calculator differs: {ca!r} vs {cb!r} (model alone and with the calculator are "
            "different measurements)"
        )
    return Comparison(a, b, label_a, label_b, rows, by_task, warnings)


def _calculator(meta: dict[str, Any]) -> str | None:
    """Whether the report's completions were generated with the calculator: "on", "off", or
    None when unknown (completions scored as given). A generated report without the key
    is taken as "off", the default."""
    value = meta.get("calculator")
    if value is None and meta.get("mode") == "generate":
        return "off"
    return value


def _signed(v: Any, share: bool) -> str:
    if v is None:
        return "–"
    if share:
        return f"{100 * v:+.1f} pts"
    return f"{v:+.1f}" if isinstance(v, float) else f"{v:+d}"


def comparison_markdown(c: Comparison) -> str:
    paths = {label: path for label, path, _ in HEADLINE}
    out = [f"# cotune eval: {c.label_a} vs {c.label_b}", ""]
    out += [
        md_table(
            ["metric", c.label_a, c.label_b, "difference"],
            [
                [
                    lab,
                    fmt_metric(c.a["metrics"], paths[lab], share) if lab in paths else fmt(va),
                    fmt_metric(c.b["metrics"], paths[lab], share) if lab in paths else fmt(vb),
                    _signed(d, share),
                ]
                for lab, va, vb, d, share in c.rows
            ],
        ),
        "",
        "## Strict accuracy by task",
        "",
        md_table(
            ["task", c.label_a, c.label_b, "difference"],
            [
                [
                    t,
                    fmt_metric(c.a["by_task"].get(t, {}), ("accuracy_strict",)),
                    fmt_metric(c.b["by_task"].get(t, {}), ("accuracy_strict",)),
                    _signed(d, True),
                ]
                for t, va, vb, d in c.by_task
            ],
        ),
        "",
    ]
    if c.warnings:
        out += ["## Warnings", ""] + [f"- {w}" for w in c.warnings] + [""]
    return "\n".join(out)


def comparison_table(c: Comparison):
    """A rich Table of the comparison, differences coloured by sign."""
    from rich.table import Table

    table = Table(title=f"{c.label_a} → {c.label_b}")
    for col in ("metric", c.label_a, c.label_b, "difference"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for lab, va, vb, d, share in c.rows:
        colour = "" if not d else ("green" if d > 0 else "red")
        if lab in ("truncated", "right answer via a wrong step") and colour:
            colour = "red" if colour == "green" else "green"  # fewer is better
        diff = _signed(d, share)
        table.add_row(
            lab, fmt(va, share), fmt(vb, share), f"[{colour}]{diff}[/]" if colour else diff
        )
    for t, va, vb, d in c.by_task:
        colour = "" if not d else ("green" if d > 0 else "red")
        diff = _signed(d, True)
        table.add_row(
            f"acc strict: {t}", fmt(va), fmt(vb), f"[{colour}]{diff}[/]" if colour else diff
        )
    return table


def compare(dir_a: str | Path, dir_b: str | Path, out_dir: str | Path | None = None) -> Comparison:
    """Compare two report directories; with ``out_dir`` write compare.{json,md,png} there."""
    pa, pb = Path(dir_a), Path(dir_b)
    a, b = load_report(pa), load_report(pb)
    la, lb = _label(a, pa), _label(b, pb)
    if la == lb:
        la, lb = f"{la} ({pa.name})", f"{lb} ({pb.name})"
    c = compare_reports(a, b, la, lb)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / COMPARE_JSON).write_text(json.dumps(c.to_dict(), indent=2) + "\n", encoding="utf-8")
        (out / COMPARE_MD).write_text(comparison_markdown(c), encoding="utf-8")
        rows = [(lab, va, vb) for lab, va, vb, _, share in c.rows if share]
        rows += [(f"acc: {t}", va, vb) for t, va, vb, _ in c.by_task]
        compare_chart(c.label_a, c.label_b, rows, out / COMPARE_PNG)
    return c
