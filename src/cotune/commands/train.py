"""``cotune train``: supervised LoRA fine-tuning from a YAML run config."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console()


def _show_example(ex, tokenizer, title: str) -> None:
    """Prompt tokens dim, trained tokens (completion + end) in bold green."""
    text = Text()
    for t, m in zip(ex.tokens.tolist(), ex.loss_mask.tolist(), strict=True):
        piece = tokenizer.id_to_piece(t).replace("▁", " ")
        if piece.startswith("<0x") and piece.endswith(">"):
            try:
                piece = bytes([int(piece[3:-1], 16)]).decode("utf-8", "replace")
            except ValueError:
                pass
        text.append(piece, style="bold green" if m else "dim")
    console.rule(title)
    console.print(text)
    console.print(
        f"[dim]{len(ex)} tokens: {ex.prompt_len} prompt (masked), {ex.n_trained} trained "
        "(completion + end token)[/dim]"
    )


def _dry_run(cfg, title: str) -> None:
    from cotune.model.tokenizer import tiny_tokenizer
    from cotune.train.plan import dry_run, load_records

    if cfg.model.name == "tiny":
        tok = tiny_tokenizer()
    else:
        from cotune.model import load

        tok = load(cfg.model.name, dtype=cfg.model.dtype).tokenizer
    train_recs, val_recs = load_records(cfg)
    dr = dry_run(cfg, tok, train_recs)
    for i, ex in enumerate(dr.examples[:2]):
        _show_example(ex, tok, f"example {i + 1} (green = trained, dim = masked)")
    s = dr.stats.summary()
    table = Table(title=f"dry run: {title} (no compute, nothing written)")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("records (train / val)", f"{s['records']} / {len(val_recs)}"),
        ("kept", s["kept"]),
        ("dropped: longer than max_seq_len", s["dropped_overlong"]),
        ("reasoning truncated", s["truncated_reasoning"]),
        (
            "tokens per example min / mean / p95 / max",
            f"{s['len_min']} / {s['len_mean']:.1f} / {s['len_p95']:.0f} / {s['len_max']}",
        ),
        ("trained tokens total", s["trained_tokens_total"]),
        (
            "rows per epoch (packed)" if cfg.format.pack else "rows per epoch",
            dr.plan.rows_per_epoch,
        ),
        ("steps per epoch", dr.plan.steps_per_epoch),
        ("total steps", len(dr.plan)),
        ("padding share of row positions", f"{dr.plan.pad_fraction:.1%}"),
        ("gather bucket (trained positions / micro-batch)", dr.plan.bucket),
    ]
    for k, v in rows:
        table.add_row(k, str(v))
    console.print(table)


def _next_commands(out: Path, val_path: Path | None) -> None:
    """What to run on the trained model, with this run's real paths."""
    data = str(val_path) if val_path is not None else "<held-out JSONL>"
    console.print("next:", highlight=False)
    for cmd in (
        f"cotune chat --model {out}",
        f"cotune eval --model {out} --data {data} --out {out / 'eval'}",
        f"cotune export --model {out} --format gguf --out {Path('export') / out.name}",
    ):
        # soft_wrap: a command is copied whole, never broken across lines
        console.print(f"  {cmd}", soft_wrap=True, highlight=False, markup=False)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _error(prefix: str, e: BaseException | str) -> None:
    """One message per line, never parsed as rich markup (errors quote `[...]` freely)."""
    for line in str(e).splitlines() or [""]:
        console.print(f"[red]{prefix}[/red] {escape(line)}", soft_wrap=True, highlight=False)


def train(
    config: Path = typer.Option(..., "--config", "-c", help="run config YAML"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="run folder (required, except with --dry-run)"
    ),
    set_: list[str] = typer.Option(None, "--set", help="override, e.g. optim.lr=1e-4"),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="continue from the latest checkpoint (a larger train.steps extends the run)",
    ),
    force_config: bool = typer.Option(
        False,
        "--force-config",
        help="with --resume: accept settings that differ from the run's config.yaml",
    ),
    force: bool = typer.Option(False, "--force", help="start over in an existing run folder"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show data and plan, no compute"),
) -> None:
    """Supervised fine-tuning (LoRA on Tunix Gemma) on reasoning data."""
    from cotune.config import ConfigError, load_config

    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as e:
        _error("config error:", e)
        raise typer.Exit(2) from None
    if out is None and not dry_run:
        _error("cotune train:", "--out is required (except with --dry-run)")
        raise typer.Exit(2)
    if force_config and not resume:
        _error("cotune train:", "--force-config only applies with --resume")
        raise typer.Exit(2)
    from cotune.outputs import OutputError, check_output, set_aside
    from cotune.train.checkpoint_integrity import CheckpointError
    from cotune.train.errors import ConfigChanged, TrainError

    if not dry_run:
        # Before any compute: the run folder must be writable, never one of the inputs, and
        # an existing run is continued (--resume) or replaced only once the new one is done.
        inputs = [config, cfg.data.val, *(s.path for s in cfg.data.train if s.path)]
        try:
            check_output(
                out,
                "dir",
                force=force or resume,
                inputs=inputs,
                in_place=resume,
                exists_hint="use --resume to continue it or --force to start over",
            )
        except OutputError as e:
            _error("cotune train:", e)
            raise typer.Exit(2) from None
    old: Path | None = None
    try:
        if dry_run:
            _dry_run(cfg, str(out or config))
            return
        from cotune.train.sft import train as run_train

        with set_aside(out) if force and not resume else _nothing() as old:
            res = run_train(
                cfg,
                out,
                resume=resume,
                force=force,
                force_config=force_config,
                log=lambda m: console.print(m, soft_wrap=True, highlight=False, markup=False),
            )
    except ConfigError as e:  # the mesh does not fit this machine
        _error("config error:", e)
        raise typer.Exit(2) from None
    except ConfigChanged as e:
        _error("cotune train:", e)
        raise typer.Exit(2) from None
    except (TrainError, CheckpointError, ValueError, OSError) as e:
        _error("cotune train:", e)
        if old is not None:
            _error("cotune train:", f"the run that was there is kept in {old}")
        raise typer.Exit(1) from None
    if res.already_complete:
        # train() has said "already complete at step N"; here: how to go on
        console.print(
            f"to train longer: cotune train --config {config} --out {out} --resume "
            f"--set train.steps=<more than {res.steps}>",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    else:
        loss = f"{res.final_loss:.4f}" if res.final_loss is not None else "n/a"
        msg = f"[green]done[/green]: {res.steps} steps, final loss {loss}"
        if res.resumed_from is not None:
            msg += f" (resumed from step {res.resumed_from})"
        if res.tokens_per_s:
            msg += f", {res.tokens_per_s:,.0f} tok/s ({res.trained_tokens_per_s:,.0f} trained)"
        if res.best_accuracy is not None:
            msg += f", best val accuracy {res.best_accuracy:.1%} at step {res.best_step}"
        console.print(msg)
        console.print(
            f"run folder: {out} (metrics.jsonl, tb/, loss_curve.png, checkpoints/, best/)"
        )
    _next_commands(out, res.val_path)
