"""``cotune generate`` and ``cotune chat``: the generation API behind a prompt.

``chat`` streams tokens as they are decoded and then shows the parsed reasoning and answer
(:func:`cotune.format.parse_completion`) in distinct panels, so a user sees at once whether
the model followed the reasoning format.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from cotune import format as fmt
from cotune.commands._model import WHICH_HELP, load_model, use_calculator

MODEL_HELP = "Preset, weights (.gguf, HF folder), run, quickstart or checkpoint folder."
CALCULATOR_HELP = (
    "Fill in the exact value of each claim the model starts (48 / 2 = -> 24). Default: as the "
    "run was trained (eval.calculator in its config; off for anything else)."
)


def generate(
    prompt: str = typer.Argument(..., help="The question (or raw text with --raw)."),
    model: str = typer.Option("gemma3-270m", "--model", "-m", help=MODEL_HELP),
    which: str = typer.Option("best", "--which", help=WHICH_HELP),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", "-n", min=1),
    raw: bool = typer.Option(False, "--raw", help="No prompt template, no stop strings."),
    temperature: float = typer.Option(0.0, min=0.0),
    top_k: int | None = typer.Option(None, min=1),
    top_p: float | None = typer.Option(None, min=0.0, max=1.0),
    seed: int = typer.Option(0),
    template: str = typer.Option("chat", help="Prompt template: chat or plain."),
    schema: str = typer.Option("tags", help="Output schema: tags or plain."),
    dtype: str | None = typer.Option(
        None,
        "--dtype",
        help="Decode precision: bfloat16 (default on Gemma 3) or float32 (exact).",
    ),
    calculator: bool | None = typer.Option(
        None, "--calculator/--no-calculator", help=CALCULATOR_HELP
    ),
) -> None:
    """Print the model's completion of PROMPT."""
    from cotune.generate import generate_detailed

    allowed = {
        "--template": (template, fmt.TEMPLATES),
        "--schema": (schema, fmt.SCHEMAS),
        "--dtype": (dtype, (None, "float32", "bfloat16")),
    }
    for flag, (value, choices) in allowed.items():
        if value not in choices:
            shown = ", ".join(str(c) for c in choices if c is not None)
            Console(stderr=True).print(f"[red]cotune generate: {flag} {value!r}: use {shown}[/red]")
            raise typer.Exit(2)
    m = load_model(model, which, "generate")
    (g,) = generate_detailed(
        m,
        [prompt],
        max_new_tokens=max_new_tokens,
        raw=raw,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        template=template,
        schema=schema,
        compute_dtype=dtype,
        calculator=use_calculator(calculator, m),
    )
    typer.echo(g.text)


def chat(
    model: str = typer.Option("gemma3-270m", "--model", "-m", help=MODEL_HELP),
    which: str = typer.Option("best", "--which", help=WHICH_HELP),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", "-n", min=1),
    temperature: float = typer.Option(0.0, min=0.0),
    schema: str = typer.Option("tags", help="Output schema: tags or plain."),
    calculator: bool | None = typer.Option(
        None, "--calculator/--no-calculator", help=CALCULATOR_HELP
    ),
) -> None:
    """Interactive questions: streams the completion, then shows reasoning and answer."""
    from cotune.generate import generate_detailed

    console = Console()
    m = load_model(model, which, "chat")
    console.print(f"[bold]cotune chat[/bold] with {escape(model)} — empty line or Ctrl-D to quit.")
    while True:
        try:
            question = console.input("[bold cyan]you> [/bold cyan]").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not question:
            break
        console.print("[dim]model> [/dim]", end="")
        (g,) = generate_detailed(
            m,
            [question],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            schema=schema,
            calculator=use_calculator(calculator, m),
            on_token=lambda _i, delta: console.print(delta, end="", markup=False, highlight=False),
        )
        console.print()
        parsed = fmt.parse_completion(g.text, schema=schema, strict=False)
        console.print(
            Panel(parsed.reasoning or "[dim](none)[/dim]", title="reasoning", border_style="blue")
        )
        style = "green" if parsed.well_formed else "yellow"
        note = "" if parsed.well_formed else f" — {', '.join(parsed.problems)}"
        console.print(
            Panel(parsed.answer or "[dim](none)[/dim]", title=f"answer{note}", border_style=style)
        )
        console.print(f"[dim]{len(g.token_ids)} tokens, finished: {g.finish_reason}[/dim]")
