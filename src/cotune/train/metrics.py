"""A run's metrics: ``metrics.jsonl`` (the record) and TensorBoard events under ``tb/``.

SFT and RL log through the same :class:`MetricsLogger`. W&B is never switched on: cotune
does not import it, and Tunix's trainers (which would) are not used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cotune.outputs import atomic_open


class MetricsLogger:
    """Appends one JSON object per logged step to ``metrics.jsonl`` and mirrors its numbers
    to TensorBoard under ``tb/`` (tags prefixed by ``tb_prefix``).

    ``resumed_at``: the step a resumed run restarts from. Lines past it were written by a
    session that was interrupted before its next checkpoint; the steps they describe are
    trained again, so those lines are dropped rather than left beside the new ones.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        resumed_at: int | None = None,
        tb_prefix: str = "",
        tensorboard: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        if resumed_at is not None and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resumed_at]
            with atomic_open(self.path) as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        self._fh = self.path.open("a", encoding="utf-8")
        self._prefix = tb_prefix
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
                    self._tb.add_scalar(self._prefix + k, float(v), step)
            self._tb.flush()

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The logged records; a line cut short (the process was killed mid-write) is skipped."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
