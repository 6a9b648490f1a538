"""The ``cotune`` command line: a thin typer shell over the Python API.

Each command lives in ``cotune/commands/<name>.py`` as a function (or a typer sub-app for
``data``) so the parts of the pipeline stay independent. Benchmarks are not a command:
they need the ``bench`` extra (torch, transformers) and live in the repo's ``bench/``
(``make bench``).
"""

from __future__ import annotations

import importlib

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
]


for _name, _mod, _attr, _is_app, _help in _COMMANDS:
    _obj = getattr(importlib.import_module(f"cotune.commands.{_mod}"), _attr)
    if _is_app:
        app.add_typer(_obj, name=_name, help=_help)
    else:
        app.command(_name, help=_help)(_obj)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
