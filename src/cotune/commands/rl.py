"""``cotune rl``: GRPO with verifiable rewards, after SFT (or from a preset, for testing)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer
from rich.console import Console

from cotune.commands._model import WHICH_HELP, load_model
from cotune.config import ConfigError, RunConfig, load_config, parse_overrides
from cotune.outputs import check_output, set_aside


def _calculator_from_init(cfg: RunConfig, meta: dict, overrides: list[str] | None) -> bool:
    """Turn ``eval.calculator`` on in ``cfg`` when the ``--init`` model was trained for the
    calculator (its ``meta["calculator"]``) and the user did not set it with ``--set``;
    whether it was turned on.

    Such a policy writes the plans of its claims and leaves the values to the calculator:
    rollouts without it would contain values it never learned to write, and the rewards
    would judge those. On in ``cfg``, it is recorded in the RL run's ``config.yaml`` (so a
    resume checks it, and commands on the run generate with it). Only ``--set`` counts as
    the user's choice: a config file's ``eval.calculator: false`` is the default's value
    (configs and dumped run configs carry it without meaning it for this init)."""
    if cfg.eval.calculator or not meta.get("calculator"):
        return False
    given = parse_overrides(overrides).get("eval")
    if isinstance(given, dict) and "calculator" in given:
        return False
    cfg.eval.calculator = True
    return True


def rl(
    config: Path = typer.Option(..., "--config", help="run config YAML (see configs/rl.yaml)"),
    init: str = typer.Option(
        ..., "--init", help="model to start from: SFT run or quickstart folder, or a preset (tiny)"
    ),
    which: str = typer.Option("best", "--which", help="for an --init run folder: " + WHICH_HELP),
    out: Path = typer.Option(..., "--out", help="run folder to write"),
    resume: bool = typer.Option(
        False, "--resume", help="continue from the latest checkpoint (a larger rl.steps extends it)"
    ),
    force_config: bool = typer.Option(
        False,
        "--force-config",
        help="with --resume: accept settings that differ from the run's config.yaml",
    ),
    force: bool = typer.Option(False, "--force", help="overwrite an existing run folder"),
    set_: list[str] = typer.Option(None, "--set", help="override a config key, e.g. rl.lr=1e-5"),
) -> None:
    """GRPO on the LoRA weights with format / correctness / step / length rewards."""
    console = Console(stderr=True)
    from cotune.rl import run as rl_run
    from cotune.rl.questions import load_rl_records, make_examples

    if force_config and not resume:
        console.print("[red]cotune rl: --force-config only applies with --resume[/]")
        raise typer.Exit(2)
    try:
        cfg = load_config(config, set_)
        data_files = [src.path for src in cfg.data.train] + [cfg.data.val]
        check_output(
            out, "dir", force=force or resume, in_place=resume,
            inputs=[config, init if Path(init).exists() else None, *data_files],
            exists_hint="use --resume to continue it or --force to start over",
        )  # fmt: skip
        train, held = load_rl_records(cfg)
    except (ConfigError, FileExistsError, ValueError, FileNotFoundError) as e:
        console.print(f"[red]cotune rl: {e}[/]")
        raise typer.Exit(2) from None
    model = load_model(init, which, "rl", console=console)
    # rl.json records exactly what was loaded (an absolute checkpoint path for a run), so the
    # RL run rebuilds from any working directory and names the SFT step it started from
    init = model.meta.get("resolved", init)
    if _calculator_from_init(cfg, model.meta, set_):
        console.print(
            "eval.calculator: on, as --init was trained for the calculator (GRPO samples and "
            "evaluates with it; --set eval.calculator=false keeps it off)",
            markup=False,
            highlight=False,
        )
    train_ex = make_examples(train, model, cfg)
    held_ex = make_examples(held, model, cfg)
    console.print(
        f"GRPO: {len(train_ex)} training questions, {len(held_ex)} held-out; "
        f"{cfg.rl.steps} steps x {cfg.rl.prompts_per_step} questions x "
        f"{cfg.rl.num_generations} generations"
    )
    from cotune.train.checkpoint_integrity import CheckpointError
    from cotune.train.errors import ConfigChanged, TrainError

    # --force keeps the old run folder (moved to a hidden sibling) until the new run has
    # finished, so a failed or killed run never costs the previous one.
    old = None
    try:
        with set_aside(out) if force and not resume else nullcontext() as old:
            res = rl_run.train_grpo(
                model, cfg, train_ex, held_ex, out,
                resume=resume, force_config=force_config, init=init, console=console,
            )  # fmt: skip
    except ConfigChanged as e:  # a usage error, like a bad --set: refused before any step
        console.print(f"cotune rl: {e}", style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except (TrainError, CheckpointError, OSError) as e:
        console.print(f"[red]cotune rl: {e}[/]")
        if old is not None:
            console.print(f"the run folder that was there is kept, unchanged, as {old}")
        raise typer.Exit(1) from None
    steps, evals = res.history.steps, res.history.evals
    msg = f"[green]done[/]: {out}"
    if steps:
        msg += f"  reward {steps[0]['reward_mean']:+.3f} -> {steps[-1]['reward_mean']:+.3f}"
    if evals:
        msg += f", held-out accuracy {evals[0]['eval_accuracy']:.1%} -> {evals[-1]['eval_accuracy']:.1%}"
    console.print(msg)
