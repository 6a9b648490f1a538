"""``cotune eval``: one command, three modes.

* ``--model M --data F --out DIR``: generate completions with a model and score them;
* ``--predictions P --data F --out DIR``: score completions generated elsewhere;
* ``--compare DIR_A DIR_B [--out DIR]``: two saved reports side by side.

Flags that make no sense for the chosen mode are errors rather than silently ignored, so
a user never believes they evaluated with 3 samples when the predictions held one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cotune.commands._model import WHICH_HELP, load_model, use_calculator
from cotune.config import EvalCfg
from cotune.outputs import atomic_dir, check_output

_GEN_ONLY = (
    "which",
    "samples",
    "temperature",
    "top_k",
    "top_p",
    "few_shot",
    "few_shot_data",
    "max_new_tokens",
    "batch_size",
    "seed",
    "calculator",
)


def _fail(msg: str) -> None:
    typer.echo(f"cotune eval: error: {msg}", err=True)
    raise typer.Exit(2)


def _flags(names: tuple[str, ...], values: dict[str, Any]) -> list[str]:
    """The flags among ``names`` the user gave (a switch counts when on)."""
    given = [n for n in names if values.get(n) is not None and values.get(n) is not False]
    return ["--" + n.replace("_", "-") for n in given]


def _load_tokenizer(spec: str):
    from cotune.model.tokenizer import Tokenizer, tiny_tokenizer

    if spec == "tiny":
        return tiny_tokenizer()
    try:
        return Tokenizer.from_file(spec)
    except (FileNotFoundError, OSError, RuntimeError) as e:
        _fail(f"--tokenizer {spec}: {e}; expected 'tiny' or a SentencePiece .model file")


def _summary(report_dict: dict[str, Any], console: Console) -> None:
    from cotune.eval.report import HEADLINE, fmt_metric, metric_at

    m = report_dict["metrics"]
    table = Table(title=f"{m['n_examples']} examples, {m['n_completions']} completions")
    table.add_column("metric")
    table.add_column("value [95% CI] (n)", justify="right")
    for label, path, share in HEADLINE:
        v = metric_at(m, path)
        if v is None and path[0] in ("majority_accuracy", "any_correct"):
            continue
        table.add_row(label, fmt_metric(m, path, share))
    console.print(table)


def eval_cmd(
    model: Annotated[
        str | None,
        typer.Option(help="Model to generate with: preset, weights, run or quickstart folder."),
    ] = None,
    which: Annotated[str | None, typer.Option(help=WHICH_HELP)] = None,
    data: Annotated[
        Path | None, typer.Option(help="Gold records: canonical or id,question,answer; JSONL/CSV.")
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="JSONL of id + completion made elsewhere, to score.")
    ] = None,
    compare: Annotated[
        tuple[Path, Path] | None,
        typer.Option(help="Two report directories to compare (A then B)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for the report.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate the first N records.")] = None,
    samples: Annotated[
        int | None, typer.Option(min=1, help="Completions per record (self-consistency).")
    ] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0)] = None,
    top_k: Annotated[int | None, typer.Option(min=1)] = None,
    top_p: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    few_shot: Annotated[
        int | None, typer.Option(min=0, help="Worked examples shown before each question.")
    ] = None,
    few_shot_data: Annotated[
        Path | None,
        typer.Option(help="Training data to take few-shot examples from (default: built-in)."),
    ] = None,
    template: Annotated[str, typer.Option(help="Prompt template: chat or plain.")] = "chat",
    schema: Annotated[str, typer.Option(help="Completion schema: tags or plain.")] = "tags",
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    calculator: Annotated[
        bool | None,
        typer.Option(
            "--calculator/--no-calculator",
            help="Fill in the exact value of each claim the model starts (48 / 2 = -> 24); "
            "reported as calculator: on, a separate measurement from the model alone. "
            "Default: as the run was trained (eval.calculator in its config).",
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="With --predictions: 'tiny' or a .model file to count tokens."),
    ] = None,
    gallery: Annotated[int, typer.Option(min=0, help="Worst failures shown per kind.")] = 5,
    quiet: Annotated[bool, typer.Option(help="No progress bar or summary table.")] = False,
) -> None:
    """Score reasoning: format, answers, arithmetic steps, self-consistency, reports."""
    from cotune.eval.inputs import EvalInputError

    console = Console(stderr=False, quiet=quiet)
    values = locals().copy()
    modes = [
        n
        for n, v in (("--model", model), ("--predictions", predictions), ("--compare", compare))
        if v is not None
    ]
    if len(modes) != 1:
        _fail(
            "choose exactly one of --model (generate and score), --predictions (score "
            f"given completions) or --compare (two reports); got {modes or 'none'}"
        )
    try:
        if compare is not None:
            extra = _flags(("data", "limit", "tokenizer", *_GEN_ONLY), values)
            if extra:
                _fail(f"--compare takes only two directories and --out; drop {', '.join(extra)}")
            if out is not None:
                check_output(out, "dir", force=force, inputs=compare)
            _run_compare(compare, out, console)
            return
        if data is None or out is None:
            _fail(f"{modes[0]} needs --data FILE and --out DIR")
        if template not in ("chat", "plain"):
            _fail(f"--template {template!r}: expected chat or plain")
        if schema not in ("tags", "plain"):
            _fail(f"--schema {schema!r}: expected tags or plain")
        local_model = model if model is not None and Path(model).exists() else None
        check_output(
            out, "dir", force=force, inputs=[data, predictions, few_shot_data, local_model]
        )
        if predictions is not None:
            extra = _flags(_GEN_ONLY, values)
            if extra:
                _fail(
                    f"{', '.join(extra)} only apply when generating with --model; "
                    "--predictions scores completions as given (repeat an id for several samples)"
                )
            _run_predictions(
                predictions, data, out, limit, template, schema, tokenizer, gallery, quiet, console
            )
        else:
            if tokenizer is not None:
                _fail("--tokenizer only applies to --predictions; --model uses its own tokenizer")
            _run_model(values, console)
    except EvalInputError as e:
        _fail(str(e))
    except ValueError as e:  # inconsistent settings found by the Python API
        _fail(str(e))
    except OSError as e:  # the report could not be written (disk full, ...)
        typer.echo(
            f"cotune eval: error: {e.filename or out}: could not write ({e.strerror})", err=True
        )
        raise typer.Exit(1) from None


def _run_compare(dirs: tuple[Path, Path], out: Path | None, console: Console) -> None:
    from cotune.eval.compare import COMPARE_MD, COMPARE_PNG, compare, comparison_table

    if out is None:
        c = compare(dirs[0], dirs[1])
    else:
        with atomic_dir(out) as tmp:  # an interrupted write leaves the old folder as it was
            c = compare(dirs[0], dirs[1], tmp)
    console.print(comparison_table(c))
    for w in c.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    if out is not None:
        console.print(f"wrote {out / COMPARE_MD} and {out / COMPARE_PNG}")


def _write(report, out: Path, console: Console) -> None:
    from cotune.eval.report import write_report

    with atomic_dir(out) as tmp:  # an interrupted write leaves the old folder as it was
        paths = {k: out / p.relative_to(tmp) for k, p in write_report(report, tmp).items()}
    _summary(report.to_dict(), console)
    console.print(f"wrote {paths['markdown']}, {paths['json']} and charts in {out}")


def _run_predictions(
    predictions: Path,
    data: Path,
    out: Path,
    limit: int | None,
    template: str,
    schema: str,
    tokenizer: str | None,
    gallery: int,
    quiet: bool,
    console: Console,
) -> None:
    from cotune.eval.inputs import EvalInputError, load_predictions, load_records
    from cotune.eval.run import evaluate

    records = load_records(data, limit)
    preds = load_predictions(predictions)
    known = {r.id for r in records}
    if limit is None:
        for rid, line in preds.lines.items():
            if rid not in known:
                raise EvalInputError(
                    f"{predictions}:{line}: id {rid!r} is not in {data}; expected ids from the data"
                )
    scored = [r for r in records if r.id in preds.completions]
    if not scored:
        raise EvalInputError(f"{predictions}: none of its ids are in {data}")
    missing = len(records) - len(scored)
    if missing:
        console.print(
            f"[yellow]warning:[/] {missing} records of {data} have no prediction; "
            "they are left out of the report"
        )
    tok = _load_tokenizer(tokenizer) if tokenizer else None
    report = evaluate(
        None,
        scored,
        completions={r.id: preds.completions[r.id] for r in scored},
        truncated={r.id: preds.truncated[r.id] for r in scored},
        template=template,  # type: ignore[arg-type]
        schema=schema,  # type: ignore[arg-type]
        tokenizer=tok,
        gallery_size=gallery,
        progress=not quiet,
        meta={
            "data": str(data),
            "predictions": str(predictions),
            "records_without_prediction": missing,
        },
    )
    _write(report, out, console)


def _run_model(v: dict[str, Any], console: Console) -> None:
    from cotune.eval.inputs import load_records
    from cotune.eval.run import evaluate

    cfg = EvalCfg()
    samples = v["samples"] or cfg.samples
    temperature = cfg.temperature if v["temperature"] is None else v["temperature"]
    if samples > 1 and temperature <= 0:
        _fail(f"--samples {samples} needs --temperature > 0 (greedy samples are all the same)")
    try:
        import cotune.generate  # noqa: F401
    except ImportError:
        _fail(
            "generating with --model needs cotune.generate, not built yet in this version; "
            "score completions made elsewhere with --predictions"
        )
    records = load_records(v["data"], v["limit"])
    pool = load_records(v["few_shot_data"]) if v["few_shot_data"] else None
    if pool is not None and not v["few_shot"]:
        _fail("--few-shot-data given without --few-shot N")
    m = load_model(v["model"], v["which"] or "best", "eval")
    report = evaluate(
        m,
        records,
        samples=samples,
        temperature=temperature,
        top_k=v["top_k"],
        top_p=v["top_p"],
        seed=v["seed"] or 0,
        max_new_tokens=v["max_new_tokens"] or cfg.max_new_tokens,
        few_shot=v["few_shot"] or 0,
        few_shot_pool=pool,
        calculator=use_calculator(v["calculator"], m),
        template=v["template"],
        schema=v["schema"],
        batch_size=v["batch_size"] or cfg.batch_size,
        gallery_size=v["gallery"],
        progress=not v["quiet"],
        meta={
            "model": v["model"],
            "model_resolved": m.meta.get("resolved"),
            "data": str(v["data"]),
            "few_shot_data": str(v["few_shot_data"]) if v["few_shot_data"] else None,
        },
    )
    _write(report, v["out"], console)
