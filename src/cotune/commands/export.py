"""``cotune export``: merge LoRA and write a Hugging Face folder or a GGUF (+ Ollama Modelfile)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from cotune.commands._model import WHICH_HELP, load_model
from cotune.outputs import check_output


def _quant(quant: str | None, fmt: str, dtype: str | None) -> str | None:
    """GGUF is written as Q8_0 unless --quant none or a float --dtype is asked for: a quarter
    of the f32 size, and llama.cpp decodes it like cotune does (docs/export.md)."""
    if quant is None:
        return "q8_0" if fmt == "gguf" and dtype is None else None
    return None if quant.lower() in ("", "none") else quant.lower()


def export(
    model: str = typer.Option(
        ...,
        "--model",
        help="run or quickstart folder (runs/NAME), checkpoint folder, preset or weights path",
    ),
    format: str = typer.Option("safetensors", "--format", help="safetensors (HF folder) or gguf"),
    dtype: str | None = typer.Option(
        None, "--dtype", help="f32 (default), f16 or bf16: dtype of the float tensors written"
    ),
    quant: str | None = typer.Option(
        None,
        "--quant",
        help="GGUF matrices: q8_0 (the GGUF default unless --dtype is given) or none (floats)",
    ),
    out: Path = typer.Option(..., "--out", help="output folder (created; refused if it exists)"),
    force: bool = typer.Option(False, "--force", help="replace an existing output folder"),
    which: str = typer.Option("best", "--which", help=WHICH_HELP),
    check: int = typer.Option(
        0, "--check", help="reload the export and compare greedy answers on N fixed questions"
    ),
    check_raw: bool = typer.Option(
        False, "--check-raw", help="--check on plain-text openings (for base models)"
    ),
) -> None:
    """Merge LoRA into the base weights and export for transformers, llama.cpp or Ollama."""
    from cotune import export as ex
    from cotune.lora import lora_adapters, merge_lora

    console = Console(stderr=True)
    fmt = format.lower()
    q = _quant(quant, fmt, dtype)
    dtype = dtype or "f32"
    try:
        if fmt not in ex.FORMATS:
            raise ex.ExportError(f"--format must be one of {', '.join(ex.FORMATS)}, got {format!r}")
        if dtype not in ex.DTYPES:
            raise ex.ExportError(f"--dtype must be one of {', '.join(ex.DTYPES)}, got {dtype!r}")
        if q is not None and q not in ex.QUANTS:
            raise ex.ExportError(f"--quant must be one of {', '.join(ex.QUANTS)}, got {quant!r}")
        if q is not None and fmt != "gguf":
            raise ex.ExportError("--quant needs --format gguf (safetensors holds plain floats)")
        check_output(out, "dir", force=force, inputs=[model if Path(model).exists() else None])
    except (ValueError, FileExistsError) as e:
        console.print(f"[red]cotune export: {e}[/]")
        raise typer.Exit(2) from None
    m = load_model(model, which, "export", console=console)
    try:
        n = len(lora_adapters(m.module))
        console.print(f"merging {n} LoRA adapters" if n else "no LoRA adapters: exporting as is")
        merged = merge_lora(m)
        with console.status(f"writing {fmt} ({q or dtype}) to {out} ..."):
            path = ex.export(merged, out, format=fmt, dtype=dtype, quant=q, force=force)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        console.print(f"[red]cotune export: {e}[/]")
        raise typer.Exit(2) from None
    except OSError as e:  # writing failed (disk full, ...); --out was left as it was
        console.print(f"[red]cotune export: {e.filename or out}: could not write ({e.strerror})[/]")
        raise typer.Exit(1) from None
    size = sum(f.stat().st_size for f in (path.parent if fmt == "gguf" else path).iterdir())
    console.print(f"[green]wrote[/] {path} ({size / 1e6:.1f} MB)")
    if fmt == "gguf":
        console.print(
            f"  llama.cpp: llama-cli -m {path} -cnv   |   "
            f"ollama: cd {path.parent} && ollama create my-reasoner -f Modelfile"
        )
    else:
        console.print(f"  transformers: AutoModelForCausalLM.from_pretrained({str(path)!r})")
    if check > 0:
        with console.status(f"checking greedy agreement on {check} questions ..."):
            res = ex.check_export(merged, path, n=check, raw=check_raw)
        console.print(
            f"greedy agreement with the in-memory model: {res['agree']}/{res['total']} "
            f"({res['distinct']} distinct reference outputs)"
        )
        for qq, a, b in res["mismatches"][:3]:
            console.print(f"  differs on {qq!r}:\n    in memory: {a!r}\n    exported:  {b!r}")
    typer.echo(str(path))
