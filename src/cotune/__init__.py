"""cotune: teach small Gemma models to reason before they answer."""

__version__ = "0.1.0"

from cotune import allocator as _allocator

_allocator.tune()  # before JAX starts its threads: see cotune/allocator.py


def __getattr__(name: str):
    """``cotune.load`` without importing JAX on ``import cotune`` (keeps the CLI fast)."""
    if name == "load":
        from cotune.model import load

        return load
    raise AttributeError(f"module 'cotune' has no attribute {name!r}")
