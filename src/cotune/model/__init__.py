"""Gemma models for cotune: presets, loaders and the :class:`Model` handle.

``cotune.model.load(name_or_path)`` returns a :class:`Model` holding the Tunix Gemma 3
module (Flax NNX) and its :class:`~cotune.model.tokenizer.Tokenizer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from cotune.model.tokenizer import Tokenizer, tiny_tokenizer


@dataclass
class Model:
    """A loaded Gemma: the NNX module, its tokenizer, and where it came from."""

    module: gemma3.Gemma3
    tokenizer: Tokenizer
    config: gemma3.ModelConfig
    name: str
    meta: dict = field(default_factory=dict)

    def generate(self, prompts, **kwargs):
        from cotune.generate import generate

        return generate(self, prompts, **kwargs)


def tiny_config(num_embed: int = 512, dtype=jnp.float32) -> gemma3.ModelConfig:
    """A randomly initialised 2-layer Gemma 3 (one local, one global layer) for tests."""
    return gemma3.ModelConfig(
        num_layers=2,
        num_embed=num_embed,
        embed_dim=64,
        hidden_dim=128,
        num_heads=2,
        head_dim=32,
        num_kv_heads=1,
        sliding_window_size=16,
        local_base_frequency=10_000,
        global_base_frequency=1_000_000,
        param_dtype=dtype,
    )


def load_tiny(seed: int = 0) -> Model:
    tok = tiny_tokenizer()
    cfg = tiny_config(num_embed=tok.vocab_size)
    module = gemma3.Gemma3(cfg, rngs=nnx.Rngs(seed))
    return Model(module=module, tokenizer=tok, config=cfg, name="tiny", meta={"seed": seed})


def load(name_or_path: str = "gemma3-270m", **kwargs) -> Model:
    """Load a preset (``gemma3-270m``, ``tiny``, ...) or a local weights path."""
    if name_or_path == "tiny":
        return load_tiny(**kwargs)
    raise NotImplementedError(f"loading {name_or_path!r} is not built yet")
