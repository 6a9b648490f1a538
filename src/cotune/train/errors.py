"""Training failures phrased for the user: the CLI prints them without a traceback."""

from __future__ import annotations

from pathlib import Path


class TrainError(RuntimeError):
    """A training problem phrased for the user (the CLI prints it without a traceback)."""


class TrainingDiverged(TrainError):
    """Loss or weights became NaN/inf; the last good checkpoint is kept on disk."""


class ConfigChanged(TrainError):
    """``--resume`` with settings that would change the result (overridable: force_config)."""


def diverged(
    step: str, what: str, checkpoints: Path, latest: int | None, knobs: str
) -> TrainingDiverged:
    """The error that stops a run at a non-finite step, before it can reach a checkpoint.

    ``step`` names the step (``"step 7"``, ``"rl step 3"``), ``what`` what went wrong,
    ``knobs`` the settings that usually cure it.
    """
    return TrainingDiverged(
        f"{step}: {what}; stopped. The last good checkpoint is kept in {checkpoints} "
        f"(step {latest}). Try a lower {knobs}."
    )
