"""The adapters folded into the weights for generation, one merged copy kept per model.

Generation runs Tunix's submodules (or its own Gemma 3 decoder) directly, and Qwix only
injects adapters inside ``Gemma3.__call__``: an unmerged LoRA model would silently generate
like its base. Folding once (:func:`cotune.lora.merge.merge_lora`) is exact in float32 and
decodes as fast as the base model.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cotune.lora.merge import merge_lora

# id(base module) -> (base module, merged model, adapter checksum); at most one entry.
_MERGED: dict[int, tuple[Any, Any, float]] = {}


def without_lora(model: Any) -> Any:
    """The model with any Qwix LoRA adapters folded into its weights (cached).

    One merged copy is kept per base module (a 270M copy is ~1 GB, so only the latest); when
    the adapters change (RL updates them every step) its weights are updated in place, so
    compiled code cached per module object (``cotune.generate``) is reused.
    """
    lora = jax.tree.leaves(nnx.state(model.module, nnx.LoRAParam))
    if not lora:
        return model
    checksum = float(sum(jnp.sum(jnp.abs(x)) for x in lora))
    hit = _MERGED.get(id(model.module))
    if hit is not None and hit[0] is model.module and hit[2] == checksum:
        return hit[1]
    fresh = merge_lora(model)
    if hit is not None and hit[0] is model.module:
        nnx.update(hit[1].module, nnx.state(fresh.module))
        merged = hit[1]
    else:
        _MERGED.clear()
        merged = fresh
    _MERGED[id(model.module)] = (model.module, merged, checksum)
    return merged
