"""LoRA in cotune, in one place: put adapters on a model (:mod:`~cotune.lora.wrap`, Qwix),
fold them into its weights (:mod:`~cotune.lora.merge`) and keep a folded copy for
generation (:mod:`~cotune.lora.fold`).

Training's projections that add the adapter inside their own bf16 product are training
only and live in :mod:`cotune.train.forward`.
"""

from cotune.lora.fold import without_lora
from cotune.lora.merge import Adapter, LoraError, lora_adapters, merge_lora
from cotune.lora.wrap import (
    SCALE_ATTR,
    apply_lora,
    count_params,
    lora_provider,
    provider_of,
    trainable_filter,
)

__all__ = [
    "Adapter",
    "LoraError",
    "SCALE_ATTR",
    "apply_lora",
    "count_params",
    "lora_adapters",
    "lora_provider",
    "merge_lora",
    "provider_of",
    "trainable_filter",
    "without_lora",
]
