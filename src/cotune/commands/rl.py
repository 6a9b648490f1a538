"""``cotune rl``: GRPO with verifiable rewards, after SFT (or from a preset, for testing)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from cotune.config import ConfigError, RunConfig, load_config


def _read_jsonl(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: data file not found")
    out = []
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})") from None
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
    init: str = typer.Option(..., "--init", help="SFT run folder, or a model preset (e.g. tiny)"),
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
        grpo.copy_tree_fresh(out, force, resume)
        train, held = load_rl_records(cfg)
        console.print(f"loading [bold]{init}[/] ...")
        model = grpo.resolve_init(init)
    except (ConfigError, FileExistsError, ValueError, FileNotFoundError) as e:
        console.print(f"[red]cotune rl: {e}[/]")
        raise typer.Exit(2) from None
    train_ex = grpo.make_examples(train, model, cfg)
    held_ex = grpo.make_examples(held, model, cfg)
    console.print(
        f"GRPO: {len(train_ex)} training questions, {len(held_ex)} held-out; "
        f"{cfg.rl.steps} steps x {cfg.rl.prompts_per_step} questions x "
        f"{cfg.rl.num_generations} generations"
    )
    from cotune.train.checkpoint import CheckpointError
    from cotune.train.sft import TrainError

    try:
        res = grpo.train_grpo(
            model, cfg, train_ex, held_ex, out, resume=resume, init=init, console=console
        )
    except (TrainError, CheckpointError, OSError) as e:
        console.print(f"[red]cotune rl: {e}[/]")
        raise typer.Exit(1) from None
    steps, evals = res.history.steps, res.history.evals
    msg = f"[green]done[/]: {out}"
    if steps:
        msg += f"  reward {steps[0]['reward_mean']:+.3f} -> {steps[-1]['reward_mean']:+.3f}"
    if evals:
        msg += f", held-out accuracy {evals[0]['eval_accuracy']:.1%} -> {evals[-1]['eval_accuracy']:.1%}"
    console.print(msg)
