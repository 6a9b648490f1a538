"""A run's curve, drawn from its ``metrics.jsonl`` at the end of a session: a training
signal on the left axis, held-out accuracy on the right (SFT: loss and validation
accuracy, ``loss_curve.png``; RL: mean reward and held-out accuracy, ``rl_plot.png``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cotune.train.metrics import read_metrics


@dataclass(frozen=True)
class Plot:
    """Which two metrics.jsonl fields to draw (``left``, ``right``: field, axis label)."""

    name: str
    title: str
    left: tuple[str, str]
    right: tuple[str, str]


SFT_PLOT = Plot(
    "loss_curve.png", "cotune SFT", ("loss", "train loss"), ("val_accuracy", "val answer accuracy")
)
RL_PLOT = Plot(
    "rl_plot.png",
    "GRPO: training reward vs held-out accuracy",
    ("reward_mean", "mean reward"),
    ("eval_accuracy", "held-out accuracy"),
)


def plot_run(run_dir: str | Path, plot: Plot) -> Path | None:
    """Draw ``plot.left`` (and ``plot.right`` when measured) per step into its PNG.

    Values are keyed by step (should a step be logged twice, the last line wins). Returns
    None when nothing to draw was logged.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    recs = read_metrics(run_dir / "metrics.jsonl")
    (left, left_label), (right, right_label) = plot.left, plot.right
    ys = {r["step"]: r[left] for r in recs if left in r}
    acc = {r["step"]: r[right] for r in recs if right in r}
    if not ys:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = sorted(ys)
    ax.plot(xs, [ys[x] for x in xs], label=left_label, color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel(left_label, color="tab:blue")
    if acc:
        ax2 = ax.twinx()
        xa = sorted(acc)
        ax2.plot(xa, [acc[x] for x in xa], "o-", color="tab:orange", label=right_label)
        ax2.set_ylabel(right_label, color="tab:orange")
        ax2.set_ylim(-0.02, 1.02)
    ax.set_title(plot.title)
    fig.tight_layout()
    out = run_dir / plot.name
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
