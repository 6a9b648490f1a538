"""``export()``: merge LoRA into the base weights and write the model for other runtimes.

Everything is written to a temporary folder next to the target and renamed into place at
the end, so an interrupted export never leaves half a model under the final name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cotune import format as fmt
from cotune.export.gguf_file import write_gguf
from cotune.export.hf_folder import write_hf
from cotune.export.options import GGUF_NAME, DType, Format, OutputExists, Quant, check_options
from cotune.export.templates import modelfile_text
from cotune.lora import merge_lora
from cotune.outputs import atomic_dir


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out``, renamed to ``out`` only if the body succeeds."""
    with atomic_dir(out) as tmp:
        yield tmp
        for f in tmp.iterdir():
            f.chmod(0o644)  # the tensor writers go through mkstemp (0600)


def _export_info(model: Any, format: str, dtype: str, quant: str | None) -> dict[str, Any]:
    meta = {k: v for k, v in model.meta.items() if isinstance(v, str | int | float | bool)}
    return {
        "exported_by": f"cotune {version('cotune')}",
        "model": model.name,
        "meta": meta,
        "format": format,
        "dtype": dtype,
        "quant": quant,
        "schema_instruction": fmt.INSTRUCTIONS["tags"],
        "stop": [fmt.END_OF_TURN.piece, *fmt.stop_strings("tags")],
    }


def export(
    model: Any,
    out: str | Path,
    format: Format = "safetensors",
    dtype: DType = "f32",
    quant: Quant | None = None,
    force: bool = False,
) -> Path:
    """Merge any LoRA into ``model`` and write it to the folder ``out``.

    ``model``: a :class:`cotune.model.Model` (with or without Qwix LoRA); for a run folder,
    preset or weights path, load it first with ``cotune.load(spec)``. ``format="safetensors"`` writes
    an HF folder and returns it; ``format="gguf"`` writes ``out/model.gguf`` + ``out/Modelfile``
    and returns the ``.gguf`` path. ``quant="q8_0"`` is GGUF-only. An existing non-empty
    ``out`` is refused unless ``force``; nothing appears at ``out`` unless the export finished.
    """
    check_options(format, dtype, quant)
    out = Path(out).expanduser()
    if out.exists() and not force and not (out.is_dir() and not any(out.iterdir())):
        raise OutputExists(f"{out}: already exists (pass --force / force=True to overwrite)")
    if isinstance(model, str | Path):  # resolving a spec is cotune.runs' job, a floor above
        raise TypeError(
            f"export() takes a loaded model; use export(cotune.load({str(model)!r}), ...)"
        )
    model = merge_lora(model)
    info = _export_info(model, format, dtype, quant)
    with _staging(out) as tmp:
        if format == "safetensors":
            write_hf(model, tmp, dtype)
        else:
            write_gguf(model, tmp / GGUF_NAME, dtype, quant)
            (tmp / "Modelfile").write_text(modelfile_text(GGUF_NAME))
        (tmp / "cotune_export.json").write_text(json.dumps(info, indent=2) + "\n")
    return out / GGUF_NAME if format == "gguf" else out
