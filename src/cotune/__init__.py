"""cotune: teach small Gemma models to reason before they answer."""

__version__ = "0.1.0"

from cotune import runtime as _runtime

_runtime.tune_malloc()  # before JAX starts its threads: see cotune/runtime.py


def __getattr__(name: str):
    """``cotune.load(spec, which="best", dtype=None)``: :func:`cotune.runs.resolve`, the
    resolver every command uses (a preset, weights, a run, quickstart or checkpoint folder).
    Looked up lazily so ``import cotune`` does not import JAX (keeps the CLI fast)."""
    if name == "load":
        from cotune.runs import resolve

        return resolve
    raise AttributeError(f"module 'cotune' has no attribute {name!r}")
