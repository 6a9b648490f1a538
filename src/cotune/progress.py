"""The one progress bar for cotune's long loops: training, RL and evaluation.

Every loop shows the same columns (what runs, the bar, done/total, time spent and left)
followed by its own live numbers in the task description, so the three read alike.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(label: str, *, console: Console | None = None, enabled: bool = True) -> Progress:
    """A rich ``Progress`` headed ``label``; ``enabled=False`` draws nothing (tests, --quiet).

    Put the loop's live numbers (loss, reward, ...) in the task's ``description``.
    """
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=not enabled,
    )
