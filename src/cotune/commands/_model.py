"""Loading ``--model`` / ``--init`` for every command, with one way of failing.

All commands resolve a model through :func:`cotune.runs.resolve`; a spec that names nothing
loadable (or a run whose checkpoints cannot be read) ends the command with one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

from typing import Any, NoReturn

import typer

WHICH_HELP = "for a run folder: best, last or a checkpoint step number"


def load_model(
    spec: str, which: str, command: str, dtype: str | None = None, console: Any = None
) -> Any:
    """The model ``spec`` names, or exit 2 with ``cotune COMMAND: <what was wrong>``.

    With a rich ``console``, says what is being loaded once the spec is known to name
    something (a wrong spec prints the error line alone).
    """
    from cotune.runs import ResolveError, locate

    try:
        locate(spec, which)
    except ResolveError as e:
        fail(command, str(e))
    if console is not None:
        from rich.markup import escape

        console.print(f"loading [bold]{escape(spec)}[/] ...")
    from cotune.model.convert import WeightsError
    from cotune.runs import resolve
    from cotune.train.checkpoint_integrity import CheckpointError
    from cotune.train.errors import TrainError

    try:
        return resolve(spec, which, dtype)
    except (ResolveError, WeightsError, TrainError, CheckpointError, OSError, ValueError) as e:
        fail(command, str(e))


def use_calculator(flag: bool | None, model: Any) -> bool:
    """``--calculator/--no-calculator`` when given, else what the model's run recorded
    (``eval.calculator``: a run trained on ``tool`` traces leaves its arithmetic to the
    calculator, so generating without it would not be what it was trained for)."""
    return bool(model.meta.get("calculator")) if flag is None else flag


def fail(command: str, message: str) -> NoReturn:
    """One line on stderr (whitespace folded, so a wrapped message stays one line), exit 2."""
    typer.echo(f"cotune {command}: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)
