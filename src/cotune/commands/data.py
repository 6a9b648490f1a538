"""``cotune data``: generate, import, validate, show, split and mix reasoning data.

A thin shell over :mod:`cotune.data`. Bad input stops with ``file:line: what was expected``
and exit code 1 (never a traceback); ``--skip-invalid`` writes the bad lines to
``<out>.rejects.jsonl`` instead. Records dropped by cleaning always go to that sidecar and
are counted by reason, so nothing disappears silently.

Outputs go through :mod:`cotune.outputs`: an existing output (or sidecar) is refused without
``--force``, an input is never overwritten, and an unwritable ``--out`` is an error (exit 2)
before anything is computed; files are replaced atomically.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cotune import data as D
from cotune.config import DataSource
from cotune.outputs import OutputError, atomic_open, check_output

app = typer.Typer(
    help="Generate, import, validate, show and mix reasoning data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out_console = Console()
err_console = Console(stderr=True)


def _fail(msg: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


_FORCE = typer.Option(False, "--force", help="overwrite existing output files")


def _check_outputs(
    outs: list[Path], force: bool, inputs: list[Path | str | None], flag: str = "--out"
) -> None:
    """Refuse (exit 2) before any work if an output exists, is an input or is unwritable."""
    try:
        for o in outs:
            check_output(o, "file", force=force, inputs=inputs, flag=flag)
    except OutputError as e:
        _fail(str(e), 2)


def _write_error(e: OSError, out: Path) -> None:
    _fail(f"{e.filename or out}: could not write ({e.strerror or e})", 1)


def _difficulty(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        ds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected levels like '1' or '1,2', got {text!r}") from None
    if not ds or any(d not in (1, 2, 3) for d in ds):
        raise typer.BadParameter(f"levels must be 1, 2 or 3, got {text!r}")
    return ds


def _report_table(report: D.Report, title: str) -> Table:
    t = Table(title=title, show_header=True)
    t.add_column("reason")
    t.add_column("records", justify="right")
    t.add_row("kept", str(report.n_out), style="green")
    for reason, k in report.reasons.most_common():
        t.add_row(reason, str(k), style="yellow")
    return t


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    )  # fmt: skip


# --------------------------------------------------------------------------- generate


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="output JSONL of canonical records"),
    tasks: str = typer.Option(
        "arithmetic", help="comma-separated groups or tasks: " + ", ".join(D.GROUPS)
    ),
    n: int = typer.Option(1000, "--n", min=1, help="number of records"),
    seed: int = typer.Option(0, help="same seed -> same data"),
    difficulty: str = typer.Option(None, help="levels, e.g. '1' or '1,2' (default: all)"),
    force: bool = _FORCE,
) -> None:
    """Generate verified synthetic reasoning examples."""
    _check_outputs([out], force, [])
    try:
        stream = D.iter_generate(tasks, seed=seed, difficulty=_difficulty(difficulty), unique=True)
        recs = []
        with _progress() as prog:
            bar = prog.add_task("generating", total=n)
            for r in stream:
                recs.append(r)
                if len(recs) % 1000 == 0:
                    prog.update(bar, completed=len(recs))
                if len(recs) >= n:
                    break
    except ValueError as e:
        _fail(str(e))
    try:
        D.write_jsonl(out, recs)
    except OSError as e:
        _write_error(e, out)
    by_task = Counter(r.task for r in recs)
    out_console.print(
        f"wrote {len(recs)} records to {out}: "
        + ", ".join(f"{t} {k}" for t, k in sorted(by_task.items()))
    )


# --------------------------------------------------------------------------- import


_IMPORT_KINDS = "gsm8k | prompt-completion | messages | columns (csv) | jsonl"


@app.command("import")
def import_cmd(
    kind: str = typer.Argument(..., help=_IMPORT_KINDS),
    path: Path = typer.Argument(
        ...,
        help="input: .jsonl, .csv (columns), .parquet, .arrow, or a folder saved by datasets' "
        "save_to_disk or holding .parquet files",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="output JSONL of canonical records"),
    split: str = typer.Option(
        None, help="split of a datasets folder (dataset_dict.json) or of a Parquet folder"
    ),
    skip_invalid: bool = typer.Option(
        False, help="write bad lines/rows to <out>.rejects.jsonl instead of stopping"
    ),
    exclude: list[Path] = typer.Option(
        None, help="drop questions that appear in this file (e.g. the test set); repeatable"
    ),
    exclude_kind: str = typer.Option(
        None, help="format of --exclude files (default: same as KIND)"
    ),
    max_reasoning_tokens: int = typer.Option(256, help="drop longer reasoning (estimated tokens)"),
    answers_only: bool = typer.Option(
        None, help="allow empty reasoning (default: only for columns/csv)"
    ),
    check_claims: bool = typer.Option(
        None,
        help="drop records with a false or unreadable 'a op b = c' claim "
        "(default: on for gsm8k, whose calculator notes become claims; off otherwise)",
    ),
    force: bool = _FORCE,
) -> None:
    """Import another format into canonical records, normalized and cleaned."""
    _check_outputs([out, D.rejects_path(out)], force, [path, *(exclude or [])])
    rejects: list[D.Reject] = []
    warnings: list[str] = []
    notes: Counter = Counter()
    try:
        recs = D.import_file(
            kind, path, skip_invalid=skip_invalid, rejects=rejects, warnings=warnings,
            split=split, notes=notes,
        )  # fmt: skip
        banned: list[D.Record] = []
        for ex in exclude or []:
            banned += D.import_file(exclude_kind or kind, ex, skip_invalid=True)
    except D.DataError as e:
        hint = f"\n(use --skip-invalid to write bad lines to {D.rejects_path(out)} and continue)"
        _fail(f"{e}{hint if e.line else ''}")
    table_kind = kind.replace("_", "-") in ("csv", "columns")
    allow_empty = table_kind if answers_only is None else answers_only
    claims = kind == "gsm8k" if check_claims is None else check_claims
    kept, report = D.clean(
        recs, max_reasoning_tokens=max_reasoning_tokens, require_reasoning=not allow_empty,
        check_claims=claims, exclude=banned,
    )  # fmt: skip
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    try:
        D.write_jsonl(out, kept)
        side = D.write_rejects(out, rejects + report.rejects)
    except OSError as e:
        _write_error(e, out)
    table = _report_table(report, f"{path} -> {out}")
    for key, k in sorted(notes.items()):
        if key.startswith("repaired_"):
            table.add_row(f"repaired: {key.removeprefix('repaired_')}", str(k), style="cyan")
    out_console.print(table)
    conv = {k.removeprefix("note_"): v for k, v in notes.items() if k.startswith("note_")}
    if conv:
        order = ("carried", "restated", "inserted", "no_operation", "unplaced")
        out_console.print(
            "calculator notes: "
            + ", ".join(f"{conv[k]} {k.replace('_', ' ')}" for k in order if conv.get(k))
            + " (docs/data.md)"
        )
    if rejects:
        out_console.print(f"skipped {len(rejects)} invalid line(s)")
    out_console.print(f"wrote {len(kept)} records to {out}; rejects in {side}")


# --------------------------------------------------------------------------- validate


@app.command()
def validate(
    file: Path = typer.Argument(..., help="JSONL of canonical records"),
    answers_only: bool = typer.Option(False, help="allow empty reasoning (evaluation sets)"),
    max_reasoning_tokens: int = typer.Option(
        256, help="longest allowed reasoning (estimated tokens)"
    ),
    check_claims: bool = typer.Option(False, help="also fail on a false 'a op b = c' claim"),
    show: int = typer.Option(20, help="how many problems to list"),
) -> None:
    """Check every record; exit 1 naming file and line if any is invalid."""
    bad_lines: list[str] = []
    recs, lines = [], []
    try:
        for i, item, _ in D.records.iter_jsonl(file):
            if isinstance(item, D.Record):
                recs.append(item)
                lines.append(i)
            else:
                bad_lines.append(str(item))
    except D.DataError as e:
        _fail(str(e))
    kept, report = D.clean(
        recs, max_reasoning_tokens=max_reasoning_tokens, require_reasoning=not answers_only,
        check_claims=check_claims,
    )  # fmt: skip
    problems = bad_lines + [
        f"{file}:{lines[r.index] if r.index is not None else '?'}: {r.reason}: {r.detail}"
        for r in report.rejects
    ]
    if problems:
        out_console.print(_report_table(report, str(file)))
        for p in problems[:show]:
            err_console.print(p, highlight=False, soft_wrap=True, markup=False)
        if len(problems) > show:
            err_console.print(f"... and {len(problems) - show} more")
        total = len(recs) + len(bad_lines)
        _fail(f"{file}: {len(problems)} invalid record(s) out of {total}")
    out_console.print(f"{file}: all {len(kept)} records valid")


# --------------------------------------------------------------------------- show


def _highlight(reasoning: str) -> Text:
    """Reasoning with each checkable claim coloured by whether it is true."""
    from cotune.verify import find_claims

    text, pos = Text(), 0
    for c in find_claims(reasoning):
        k = reasoning.find(c.text, pos)
        if k < 0:
            continue
        text.append(reasoning[pos:k])
        text.append(c.text, style="green" if c.correct else "bold red")
        pos = k + len(c.text)
    text.append(reasoning[pos:])
    return text


@app.command()
def show(
    file: Path = typer.Argument(..., help="JSONL of canonical records"),
    n: int = typer.Option(5, "--n", min=1, help="how many records"),
    task: str = typer.Option(None, help="only this task"),
) -> None:
    """Pretty-print records: question, reasoning (claims green/red) and answer."""
    try:
        recs = D.read_jsonl(file)
    except D.DataError as e:
        _fail(str(e))
    if task:
        recs = [r for r in recs if r.task == task]
    for r in recs[:n]:
        body = Text()
        body.append("Q: ", style="bold")
        body.append(r.question + "\n")
        body.append("R: ", style="bold")
        body.append_text(_highlight(r.reasoning) if r.reasoning else Text("(none)", style="dim"))
        body.append("\nA: ", style="bold")
        body.append(r.answer, style="bold cyan")
        title = (
            f"{r.id}  [{r.task}"
            + (f", level {r.difficulty}" if r.difficulty else "")
            + f", {r.source}]"
        )
        out_console.print(Panel(body, title=title, title_align="left"))
    out_console.print(f"{min(n, len(recs))} of {len(recs)} records shown")


# --------------------------------------------------------------------------- split


@app.command("split")
def split_cmd(
    file: Path = typer.Argument(..., help="JSONL of canonical records"),
    out_dir: Path = typer.Option(
        ..., "--out-dir", help="writes train.jsonl, val.jsonl, test.jsonl"
    ),
    fractions: str = typer.Option("0.9,0.05,0.05", help="train,val,test"),
    seed: int = typer.Option(0),
    force: bool = _FORCE,
) -> None:
    """Deterministic train/val/test split by hashed normalized question (no overlap)."""
    _check_outputs([out_dir / f"{k}.jsonl" for k in ("train", "val", "test")], force, [file], "")
    try:
        fr = tuple(float(x) for x in fractions.split(","))
        recs = D.read_jsonl(file)
        parts = D.split(recs, fr, seed=seed)  # type: ignore[arg-type]
    except (ValueError, D.DataError) as e:
        _fail(str(e))
    # All three files are written to temporary files first and renamed together at the end,
    # so an interrupted split never mixes new and old parts.
    try:
        with ExitStack() as stack:
            for name, rs in parts.items():
                f = stack.enter_context(atomic_open(out_dir / f"{name}.jsonl"))
                f.writelines(D.records.jsonl_line(r) for r in rs)
    except OSError as e:
        _write_error(e, out_dir)
    out_console.print(", ".join(f"{k} {len(v)}" for k, v in parts.items()) + f" -> {out_dir}")


# --------------------------------------------------------------------------- mix


def _weighted(spec: str, what: str) -> tuple[str, float]:
    """``name:0.5`` -> (name, 0.5); no weight -> 1.0 (a path may itself contain ':')."""
    name, _, w = spec.rpartition(":")
    if name:
        try:
            weight = float(w)
        except ValueError:
            return spec, 1.0
        if weight <= 0:
            raise typer.BadParameter(f"{what} {spec!r}: weight must be > 0")
        return name, weight
    return spec, 1.0


@app.command("mix")
def mix_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="output JSONL"),
    inputs: list[str] = typer.Option(
        None, "--in", help="FILE[:WEIGHT] of canonical records; repeatable"
    ),
    gens: list[str] = typer.Option(
        None, "--gen", help="TASKS[:WEIGHT], e.g. arithmetic:0.5; repeatable"
    ),
    n: int = typer.Option(..., "--n", min=1, help="total records before cleaning"),
    seed: int = typer.Option(0),
    difficulty: str = typer.Option(None, help="generator levels, e.g. '1,2'"),
    exclude: list[Path] = typer.Option(
        None, help="canonical JSONL whose questions must not appear"
    ),
    max_reasoning_tokens: int = typer.Option(256, help="drop longer reasoning (estimated tokens)"),
    force: bool = _FORCE,
) -> None:
    """Weighted, deterministic mixture of files and generators, cleaned and deduplicated."""
    sources = []
    try:
        for spec in inputs or []:
            p, w = _weighted(spec, "--in")
            sources.append(DataSource(path=p, weight=w))
        in_files = [s.path for s in sources] + list(exclude or [])
        _check_outputs([out, D.rejects_path(out)], force, in_files)
        for spec in gens or []:
            g, w = _weighted(spec, "--gen")
            D.resolve_tasks(g)
            sources.append(DataSource(generator=g, weight=w))
        if not sources:
            raise ValueError("give at least one --in FILE[:W] or --gen TASKS[:W]")
        banned = [r for ex in exclude or [] for r in D.read_jsonl(ex)]
        recs = D.mix(sources, n, seed=seed, difficulty=_difficulty(difficulty))
    except (ValueError, D.DataError) as e:
        _fail(str(e))
    kept, report = D.clean(recs, max_reasoning_tokens=max_reasoning_tokens, exclude=banned)
    try:
        D.write_jsonl(out, kept)
        side = D.write_rejects(out, report.rejects)
    except OSError as e:
        _write_error(e, out)
    out_console.print(_report_table(report, f"mix -> {out}"))
    by_src = Counter(r.source if r.source != "generated" else f"gen:{r.task}" for r in kept)
    out_console.print(json.dumps(dict(by_src.most_common())))
    out_console.print(f"wrote {len(kept)} records to {out}; rejects in {side}")
