"""The ``cotune`` command line: a thin typer shell over the Python API.

Each command lives in ``cotune/commands/<name>.py`` as a function (or a typer sub-app for
``data``) so the parts of the pipeline stay independent. A command whose module does not
exist yet says so and exits 2 instead of pretending.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

app = typer.Typer(
    name="cotune",
    help="Teach small Gemma models to reason before they answer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (command name, module under cotune.commands, attribute, is a sub-app, help)
_COMMANDS: list[tuple[str, str, str, bool, str]] = [
    ("data", "data", "app", True, "Generate, import, validate, show and mix reasoning data."),
    ("train", "train", "train", False, "Supervised LoRA fine-tuning on Tunix."),
    ("generate", "generate", "generate", False, "Generate a completion for a prompt."),
    ("chat", "generate", "chat", False, "Interactive chat showing reasoning and answer."),
    ("eval", "eval", "eval_cmd", False, "Reasoning-aware evaluation and report comparison."),
    ("quickstart", "quickstart", "quickstart", False, "The main job: data, base eval, SFT, eval."),
    ("rl", "rl", "rl", False, "GRPO after SFT with verifiable rewards."),
    ("export", "export", "export", False, "Merge LoRA and export safetensors or GGUF."),
    ("bench", "bench", "bench", False, "Run the benchmarks."),
]


def _not_built(name: str):
    def cmd(ctx: typer.Context) -> None:
        typer.echo(f"cotune {name}: not built yet in this version.", err=True)
        raise typer.Exit(2)

    return cmd


for _name, _mod, _attr, _is_app, _help in _COMMANDS:
    _full = f"cotune.commands.{_mod}"
    if importlib.util.find_spec(_full) is None:
        app.command(
            _name,
            help=f"{_help} (not built yet)",
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(_not_built(_name))
        continue
    _obj = getattr(importlib.import_module(_full), _attr)
    if _is_app:
        app.add_typer(_obj, name=_name, help=_help)
    else:
        app.command(_name, help=_help)(_obj)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
