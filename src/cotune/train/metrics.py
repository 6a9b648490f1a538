"""Training metrics: JSONL (the record), TensorBoard events (live curves), a loss PNG (the end).

W&B is never switched on: cotune does not import it, and Tunix's trainer (which would) is not
used for SFT.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and mirrors scalars to
    TensorBoard under ``tb/``. Safe to reopen on ``--resume`` (appends)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self._fh = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"))
            except Exception:  # noqa: BLE001 - TensorBoard is optional comfort, never fatal
                self._tb = None

    def log(self, step: int, **values: Any) -> None:
        rec = {"step": step, **values}
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and math.isfinite(float(v)):
                    self._tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line]


def plot_loss(run_dir: str | Path) -> Path | None:
    """``loss_curve.png``: training loss (and validation accuracy, when measured) per step.

    On resume the JSONL holds the steps of every session; the last value per step wins.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    recs = read_metrics(run_dir / "metrics.jsonl")
    loss = {r["step"]: r["loss"] for r in recs if "loss" in r}
    acc = {r["step"]: r["val_accuracy"] for r in recs if "val_accuracy" in r}
    if not loss:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = sorted(loss)
    ax.plot(xs, [loss[x] for x in xs], label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (completion tokens)")
    if acc:
        ax2 = ax.twinx()
        xa = sorted(acc)
        ax2.plot(xa, [acc[x] for x in xa], "o-", color="tab:orange", label="val accuracy")
        ax2.set_ylabel("val answer accuracy")
        ax2.set_ylim(0, 1)
    ax.set_title("cotune SFT")
    fig.tight_layout()
    out = run_dir / "loss_curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
