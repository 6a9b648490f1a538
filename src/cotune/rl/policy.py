"""The policy GRPO trains: the loaded model with Qwix LoRA adapters, which are all it updates."""

from __future__ import annotations

import jax
from flax import nnx

from cotune.config import LoraCfg
from cotune.lora import apply_lora
from cotune.model import Model


def has_lora(model: Model) -> bool:
    """Whether the module already carries Qwix LoRA parameters (e.g. loaded from SFT)."""
    return bool(jax.tree.leaves(nnx.state(model.module, nnx.LoRAParam)))


def ensure_lora(model: Model, lora: LoraCfg, seed: int = 0) -> Model:
    """Add fresh Qwix LoRA adapters unless the model already has some (SFT runs do).

    Fresh adapters start with B = 0, so the policy starts exactly at the loaded model; an
    SFT run's adapters are kept, not stacked, so RL continues what SFT trained.
    """
    if has_lora(model):
        return model
    module = apply_lora(model.module, lora, seed)
    if not has_lora(Model(module, model.tokenizer, model.config, model.name)):
        raise ValueError(f"lora.targets {lora.targets!r} matched no layer of {model.name}")
    return Model(module, model.tokenizer, model.config, model.name, {**model.meta, "rl_lora": True})
