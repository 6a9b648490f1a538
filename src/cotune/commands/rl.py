"""``cotune rl``: GRPO with verifiable rewards, after SFT (or from a preset, for testing)."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import typer
from rich.console import Console

from cotune.commands._model import WHICH_HELP, load_model
from cotune.config import ConfigError, RunConfig, load_config
from cotune.outputs import check_output, set_aside


def _read_jsonl(path: str) -> list[dict]:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, expected a data file")
    if not p.is_file():
        raise ConfigError(f"{p}: data file not found")
    out = []
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # skip a BOM
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text (byte {e.start})") from None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError) as e:  # also >4300-digit ints, deep nesting
            raise ConfigError(
                f"{p}:{i}: not valid JSON ({getattr(e, 'msg', type(e).__name__)})"
            ) from None
        if not isinstance(rec, dict) or "question" not in rec or "answer" not in rec:
            raise ConfigError(f"{p}:{i}: expected a record with 'question' and 'answer'")
        if not isinstance(rec["question"], str) or not rec["question"].strip():
            raise ConfigError(f"{p}:{i}: field 'question': expected non-empty text")
        out.append(rec)
    return out


def _generate(tasks: list[str], n: int, seed: int) -> list[dict]:
    try:
        from cotune.data import generate
    except ImportError:
        raise ConfigError(
            "data generators (cotune.data) are not installed: give data.train as JSONL paths"
        ) from None
    recs = generate(tasks=tasks, n=n, seed=seed)
    return [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in recs]


def load_rl_records(cfg: RunConfig) -> tuple[list[dict], list[dict]]:
    """Training and held-out questions: JSONL sources as given, generators via cotune.data.

    Held-out questions come from ``data.val`` or from the generators with another seed;
    any held-out question that also appears in training is dropped.
    """
    rl = cfg.rl
    train: list[dict] = []
    tasks = list(rl.tasks or [])
    for src in cfg.data.train:
        if src.path:
            train.extend(_read_jsonl(src.path))
        elif rl.tasks is None and src.generator:
            tasks.append(src.generator)
    if tasks:
        train.extend(_generate(tasks, rl.train_size, cfg.data.seed))
    if not train:
        raise ConfigError("rl: no training questions (data.train and rl.tasks are both empty)")
    if cfg.data.val:
        held = _read_jsonl(cfg.data.val)
    elif tasks:
        held = _generate(tasks, rl.eval_size * 2, cfg.data.seed + 10_007)
    else:
        held = train[-rl.eval_size :]
        train = train[: -rl.eval_size] or train
    seen = {r["question"] for r in train}
    held = [r for r in held if r["question"] not in seen][: rl.eval_size]
    return train, held


def rl(
    config: Path = typer.Option(..., "--config", help="run config YAML (see configs/rl.yaml)"),
    init: str = typer.Option(
        ..., "--init", help="model to start from: SFT run or quickstart folder, or a preset (tiny)"
    ),
    which: str = typer.Option("best", "--which", help="for an --init run folder: " + WHICH_HELP),
    out: Path = typer.Option(..., "--out", help="run folder to write"),
    resume: bool = typer.Option(False, "--resume", help="continue from the latest checkpoint"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing run folder"),
    set_: list[str] = typer.Option(None, "--set", help="override a config key, e.g. rl.lr=1e-5"),
) -> None:
    """GRPO on the LoRA weights with format / correctness / step / length rewards."""
    console = Console(stderr=True)
    from cotune.rl import grpo

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
    train_ex = grpo.make_examples(train, model, cfg)
    held_ex = grpo.make_examples(held, model, cfg)
    console.print(
        f"GRPO: {len(train_ex)} training questions, {len(held_ex)} held-out; "
        f"{cfg.rl.steps} steps x {cfg.rl.prompts_per_step} questions x "
        f"{cfg.rl.num_generations} generations"
    )
    from cotune.train.checkpoint import CheckpointError
    from cotune.train.sft import TrainError

    # --force keeps the old run folder (moved to a hidden sibling) until the new run has
    # finished, so a failed or killed run never costs the previous one.
    old = None
    try:
        with set_aside(out) if force and not resume else nullcontext() as old:
            res = grpo.train_grpo(
                model, cfg, train_ex, held_ex, out, resume=resume, init=init, console=console
            )
    except (TrainError, CheckpointError, OSError) as e:
        console.print(f"[red]cotune rl: {e}[/]")
        if old is not None:
            console.print(f"the previous run folder is kept, unchanged, as {old}")
        raise typer.Exit(1) from None
    steps, evals = res.history.steps, res.history.evals
    msg = f"[green]done[/]: {out}"
    if steps:
        msg += f"  reward {steps[0]['reward_mean']:+.3f} -> {steps[-1]['reward_mean']:+.3f}"
    if evals:
        msg += f", held-out accuracy {evals[0]['eval_accuracy']:.1%} -> {evals[-1]['eval_accuracy']:.1%}"
    console.print(msg)
