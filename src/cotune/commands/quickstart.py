"""``cotune quickstart``: the main job (what ``make demo`` runs)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from cotune.config import ConfigError


def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="run folder"),
    config: Path | None = typer.Option(
        None, "--config", help="YAML run config (default: built-in quickstart)"
    ),
    set_: list[str] = typer.Option([], "--set", help="override a config key, e.g. train.steps=50"),
    force: bool = typer.Option(
        False, "--force", help="replace an existing run folder (once the new run has finished)"
    ),
    n_test: int = typer.Option(
        256, "--n-test", min=1, help="held-out questions the fine-tuned model is scored on"
    ),
    n_test_heldout: int = typer.Option(
        128,
        "--n-test-heldout",
        min=0,
        help="more held-out questions, in phrasings never trained on (0 = none)",
    ),
    n_base: int = typer.Option(
        64, "--n-base", min=1, help="of the --n-test questions, how many the base model answers"
    ),
    few_shot: int = typer.Option(
        0, "--few-shot", min=0, help="worked examples shown to the base model"
    ),
) -> None:
    """Generate data, evaluate the base model, LoRA fine-tune, evaluate again, compare."""
    from cotune.outputs import OutputError
    from cotune.quickstart import quickstart as run
    from cotune.train.checkpoint_integrity import CheckpointError
    from cotune.train.errors import TrainError

    try:
        run(
            out,
            config=config,
            overrides=set_,
            force=force,
            n_test=n_test,
            n_test_heldout=n_test_heldout,
            n_base=n_base,
            few_shot=few_shot,
        )
    except OutputError as e:  # --out refused before anything ran
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except (ConfigError, ValueError, OSError, TrainError, CheckpointError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo("\nnext, with the fine-tuned model (its best checkpoint):")
    for line in next_commands(out):
        typer.echo(f"  {line}")


def next_commands(out: Path) -> list[str]:
    """Commands to copy after a quickstart into ``out``: every one resolves the folder to its
    fine-tuned model (``out/sft``, best checkpoint) through :mod:`cotune.runs`."""
    q = shlex.quote
    gguf = Path(f"{out}-gguf")
    return [
        f"cotune chat --model {q(str(out))}",
        f"cotune eval --model {q(str(out))} --data {q(str(out / 'data' / 'test.jsonl'))} "
        f"--out {q(str(out / 'eval_best'))}",
        f"cotune export --model {q(str(out))} --format gguf --out {q(str(gguf))}",
    ]
