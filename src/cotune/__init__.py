"""cotune: teach small Gemma models to reason before they answer."""

__version__ = "0.1.0"
