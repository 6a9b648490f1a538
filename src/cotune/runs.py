"""From what a user types to a model: the one resolver behind every ``--model``.

``cotune generate/chat/eval/export --model X``, ``cotune rl --init X`` and ``cotune.load(X)``
all call :func:`resolve`, so a model that works in one place works in all of them. ``X`` is:

* a preset: ``gemma3-270m``, ``tiny``, ... (:mod:`cotune.model.presets`);
* a weights file or folder: a ``.gguf``, an HF folder (``config.json``), an Orbax checkpoint;
* an SFT run folder (``config.yaml`` + ``run.json``): base model + its trained LoRA;
* an RL run folder (``config.yaml`` + ``rl.json``): its init model + its GRPO LoRA;
* a quickstart folder (``sft/`` inside): its fine-tuned model, ``sft/``;
* a checkpoint folder inside a run: ``runs/x/best`` (best), ``runs/x/checkpoints`` (last),
  ``runs/x/checkpoints/120`` or ``runs/x/best/120`` (that step).

``which`` picks the checkpoint of a run: ``best`` (best validation accuracy; the latest when
the run kept none; an RL run keeps no best, so its latest), ``last`` or a step number. LoRA
runs load as base + adapters (generation folds them; ``cotune export`` merges them).

This module sits above the loaders it dispatches to (``cotune.model``, ``cotune.train``,
``cotune.rl``); nothing below it imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ResolveError", "Target", "locate", "parse_which", "resolve"]

Which = str | int  # "best", "last" or a step number

_EXPECTED = (
    "expected a preset, a .gguf file, an HF folder (config.json), an Orbax checkpoint, "
    "a run folder (config.yaml + run.json or rl.json), a quickstart folder (sft/) or a "
    "checkpoint folder of a run (best/, checkpoints/, checkpoints/STEP)"
)
_ORBAX_MARKERS = ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA", "checkpoint")


class ResolveError(ValueError):
    """A model spec that names nothing loadable; the message is one line for the user."""


@dataclass(frozen=True)
class Target:
    """What a spec names, before anything heavy is loaded."""

    kind: str  # preset | gguf | hf | orbax | sft | rl
    path: Path | None  # the file/folder to load (the run folder for sft/rl); None for presets
    which: Which  # the checkpoint of a run ("best" for anything else)
    spec: str  # what the user typed


def parse_which(which: Which) -> Which:
    """``"best"``, ``"last"`` or a step number (``"120"`` -> ``120``); anything else errs."""
    if isinstance(which, int) and not isinstance(which, bool) and which >= 0:
        return which
    text = str(which).strip().lower()
    if text in ("best", "last"):
        return text
    if text.isdigit():
        return int(text)
    raise ResolveError(f"--which {which!r}: expected best, last or a checkpoint step number")


def _is_sft_run(p: Path) -> bool:
    return (p / "config.yaml").is_file() and (p / "run.json").is_file()


def _is_rl_run(p: Path) -> bool:
    return (p / "config.yaml").is_file() and (p / "rl.json").is_file()


def _is_run(p: Path) -> bool:
    return p.is_dir() and (_is_sft_run(p) or _is_rl_run(p))


def _run_kind(p: Path) -> str:
    return "rl" if _is_rl_run(p) else "sft"


def _holds(p: Path, limit: int = 6) -> str:
    """A short listing of a folder, for error messages."""
    try:
        names = sorted(c.name + ("/" if c.is_dir() else "") for c in p.iterdir())
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if not names:
        return "nothing (empty)"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _only_for_runs(which: Which, spec: str, what: str) -> None:
    if which != "best":
        raise ResolveError(
            f"--which {which}: {spec} is {what}, not a run folder; --which picks a run's checkpoint"
        )


def _inside_run(p: Path, which: Which, spec: str) -> Target | None:
    """``runs/x/best``, ``runs/x/checkpoints``, ``runs/x/checkpoints/STEP``, ``runs/x/best/STEP``."""
    if p.name in ("best", "checkpoints") and _is_run(p.parent):
        run = p.parent
        if isinstance(which, int):  # a step inside the named folder
            return Target(_run_kind(run), run, which, spec)
        picked = "best" if p.name == "best" and _is_sft_run(run) else "last"
        if which not in ("best", picked):  # "best" is the default: the folder decides
            raise ResolveError(
                f"--which {which}: {spec} names the {picked} checkpoint of {run}; "
                f"pass the run folder {run} with --which {which} instead"
            )
        return Target(_run_kind(run), run, picked, spec)
    if p.name.isdigit() and p.parent.name in ("best", "checkpoints") and _is_run(p.parent.parent):
        run, step = p.parent.parent, int(p.name)
        if which not in ("best", step):
            raise ResolveError(
                f"--which {which}: {spec} names step {step} of {run}; drop --which or pass {run}"
            )
        return Target(_run_kind(run), run, step, spec)
    return None


def _steps(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(c.name) for c in folder.iterdir() if c.is_dir() and c.name.isdigit())


def _checked(t: Target) -> Target:
    """A run target whose checkpoint exists, so a wrong step fails before anything loads."""
    held = {sub: _steps(t.path / sub) for sub in ("checkpoints", "best")}
    listing = "; ".join(f"{k}/: {', '.join(map(str, v)) or 'empty'}" for k, v in held.items())
    if not held["checkpoints"] and not held["best"]:
        raise ResolveError(f"{t.path}: a run folder with no checkpoint yet ({listing})")
    if isinstance(t.which, int) and t.which not in held["checkpoints"] + held["best"]:
        raise ResolveError(f"{t.path}: no checkpoint at step {t.which} ({listing})")
    return t


def locate(spec: str | Path, which: Which = "best") -> Target:
    """What ``spec`` names (cheap: reads folder listings only), or a one-line ResolveError."""
    from cotune.model.presets import PRESETS

    which = parse_which(which)
    text = str(spec)
    p = Path(text).expanduser()
    if text in PRESETS:  # a folder named like a preset is reached as ./NAME
        _only_for_runs(which, text, "a preset")
        return Target("preset", None, "best", text)
    if not p.exists():
        raise ResolveError(
            f"{text}: no such file or folder, and not a preset ({', '.join(PRESETS)})"
        )
    if p.is_file():
        if p.suffix == ".gguf":
            _only_for_runs(which, text, "a GGUF file")
            return Target("gguf", p, "best", text)
        raise ResolveError(f"{text}: a file ({p.suffix or 'no extension'}); {_EXPECTED}")
    if _is_run(p):
        return _checked(Target(_run_kind(p), p, which, text))
    inside = _inside_run(p, which, text)
    if inside is not None:
        return _checked(inside)
    if _is_sft_run(p / "sft"):  # a quickstart folder: the fine-tuned model it produced
        return _checked(Target("sft", p / "sft", which, text))
    if (p / "config.json").is_file():
        _only_for_runs(which, text, "an HF folder")
        return Target("hf", p, "best", text)
    if any((p / n).exists() for n in _ORBAX_MARKERS):
        _only_for_runs(which, text, "an Orbax checkpoint")
        return Target("orbax", p, "best", text)
    runs = sorted(c.name + "/" for c in p.iterdir() if _is_run(c) or _is_sft_run(c / "sft"))
    if runs:
        raise ResolveError(f"{text}: a folder of runs ({', '.join(runs[:6])}); pass one of them")
    raise ResolveError(f"{text}: not a model folder: it holds {_holds(p)}; {_EXPECTED}")


def resolve(spec: str | Path, which: Which = "best", dtype: str | None = None) -> Any:
    """The :class:`cotune.model.Model` that ``spec`` names (see the module docstring).

    ``dtype`` (``float32`` / ``bfloat16``) sets the weights' dtype; by default a run loads its
    base as its config says and anything else in float32. ``model.meta["resolved"]`` is a
    spec that names exactly what was loaded (a checkpoint's absolute path, or the preset).
    """
    t = locate(spec, which)
    if t.kind == "preset":
        from cotune.model import load

        model = load(t.spec, dtype=dtype or "float32")
        resolved = t.spec
    elif t.kind in ("gguf", "hf", "orbax"):
        from cotune.model import load_path

        model = load_path(t.path, dtype or "float32")
        resolved = str(t.path.resolve())
    elif t.kind == "sft":
        from cotune.train.load import load_run

        model = load_run(t.path, which=t.which, dtype=dtype)
        resolved = str(Path(model.meta["checkpoint"]).resolve())
    else:
        model = _load_rl(t, dtype)
        resolved = str(Path(model.meta["checkpoint"]).resolve())
    model.meta["resolved"] = resolved
    return model


def _load_rl(t: Target, dtype: str | None) -> Any:
    import json

    from cotune.rl.load import load_rl_run

    if not json.loads((t.path / "rl.json").read_text(encoding="utf-8")).get("init"):
        raise ResolveError(f"{t.path}: rl.json records no init model, so it cannot be rebuilt")
    step = t.which if isinstance(t.which, int) else None
    return load_rl_run(t.path, lambda init: resolve(init, dtype=dtype), step=step)
