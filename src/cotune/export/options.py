"""What an export can be asked for (formats, float dtypes, quantizations) and the errors for
asking wrongly."""

from __future__ import annotations

from typing import Literal

Format = Literal["safetensors", "gguf"]
DType = Literal["f32", "f16", "bf16"]
Quant = Literal["q8_0"]
FORMATS: tuple[str, ...] = ("safetensors", "gguf")
DTYPES: tuple[str, ...] = ("f32", "f16", "bf16")
QUANTS: tuple[str, ...] = ("q8_0",)
GGUF_NAME = "model.gguf"


class ExportError(ValueError):
    """The model cannot be exported as asked (bad option, unsupported layout, ...)."""


class OutputExists(ExportError, FileExistsError):
    """The output already exists and ``force`` was not given."""


def check_options(format: str, dtype: str, quant: str | None) -> None:
    """An :class:`ExportError` for an unknown or impossible combination."""
    if format not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, got {format!r}")
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if quant is not None and quant not in QUANTS:
        raise ExportError(f"quant must be one of {QUANTS} (or none), got {quant!r}")
    if quant is not None and format != "gguf":
        raise ExportError(f"quant={quant!r} needs format='gguf' (safetensors holds floats)")
