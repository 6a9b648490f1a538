"""PNG charts for reports, drawn headless (matplotlib's Agg backend: no display needed).

Charts are rendered from report dicts (report.json) only, so any saved report can be
re-drawn or compared later without the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _pct(v: Any) -> float | None:
    return None if v is None else 100.0 * float(v)


def _bars(ax, labels: list[str], series: list[tuple[str, list[float | None]]]) -> None:
    """Grouped bars; a missing value (None, e.g. no claims to check) is labelled n/a."""
    width = 0.8 / max(len(series), 1)
    for i, (name, vals) in enumerate(series):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        bars = ax.bar(xs, [0.0 if v is None else v for v in vals], width, label=name)
        texts = ["n/a" if v is None else f"{v:.0f}" for v in vals]
        ax.bar_label(bars, labels=texts, fontsize=7, padding=1)
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=30 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    ax.set_ylim(0, 118)
    ax.set_ylabel("%")
    ax.legend(fontsize=8)


def accuracy_by_task_chart(report: dict[str, Any], path: str | Path) -> Path:
    """Strict and lenient accuracy (and majority vote when sampled) per task."""
    tasks = list(report["by_task"])
    groups = [report["by_task"][t] for t in tasks]
    series = [
        ("strict", [_pct(g["accuracy_strict"]) for g in groups]),
        ("lenient", [_pct(g["accuracy_lenient"]) for g in groups]),
    ]
    if report["metrics"].get("majority_accuracy") is not None:
        series.append(("majority vote", [_pct(g["majority_accuracy"]) for g in groups]))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(tasks) + 2), 3.6))
    _bars(ax, tasks, series)
    ax.set_title(f"Accuracy by task: {report['meta'].get('model') or 'predictions'}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def overview_chart(report: dict[str, Any], path: str | Path) -> Path:
    """Format, accuracy, step validity and truncation in one bar chart."""
    m = report["metrics"]
    items = [
        ("format\nstrict", m["format_strict"]),
        ("format\nlenient", m["format_lenient"]),
        ("acc\nstrict", m["accuracy_strict"]),
        ("acc\nlenient", m["accuracy_lenient"]),
        ("step\nvalidity", m["steps"]["step_validity"]),
        ("truncated", m["truncated_rate"]),
    ]
    if m.get("majority_accuracy") is not None:
        items.insert(4, ("majority", m["majority_accuracy"]))
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    _bars(ax, [k for k, _ in items], [("all", [_pct(v) for _, v in items])])
    ax.get_legend().remove()
    ax.set_title(f"Overview: {report['meta'].get('model') or 'predictions'}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def compare_chart(
    label_a: str, label_b: str, rows: list[tuple[str, Any, Any]], path: str | Path
) -> Path:
    """Before/after bars: ``rows`` are (label, share in A, share in B)."""
    labels = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.2))
    _bars(
        ax, labels, [(label_a, [_pct(r[1]) for r in rows]), (label_b, [_pct(r[2]) for r in rows])]
    )
    ax.set_title(f"{label_a} → {label_b}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
