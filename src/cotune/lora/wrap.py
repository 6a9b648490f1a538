"""Putting LoRA adapters on a model through Qwix, and finding them again.

Qwix applies LoRA by *intercepting* the matmuls inside one wrapped method of the model (the
Gemma 3 ``__call__``): the adapters are ``<param>_lora_a`` / ``<param>_lora_b``
:class:`flax.nnx.LoRAParam` s on the adapted modules, and the ``alpha / rank`` scale lives
only in the provider captured by the wrapped ``__call__``. :func:`provider_of` finds that
provider again, so a model alone says how to apply (``cotune.train.forward``) or fold
(:mod:`cotune.lora.merge`) its adapters; :func:`apply_lora` also records the scale on each
adapted module (:data:`SCALE_ATTR`) for projections that add the adapter themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import qwix
from flax import nnx

from cotune.config import LoraCfg

# Attribute holding ``alpha / rank`` on each module :func:`apply_lora` adapted.
SCALE_ATTR = "_cotune_lora_scale"


def lora_provider(cfg: LoraCfg) -> qwix.LoraProvider:
    try:
        re.compile(cfg.targets)
    except re.error as e:
        raise ValueError(f"lora.targets: not a valid regex ({e})") from None
    return qwix.LoraProvider(module_path=cfg.targets, rank=cfg.rank, alpha=cfg.alpha)


def apply_lora(module: Any, cfg: LoraCfg, seed: int = 0) -> Any:
    """A copy of ``module`` with Qwix LoRA adapters on the modules matching ``cfg.targets``.

    Raises when the regex matches nothing (a silent no-op LoRA would train zero parameters).
    """
    provider = lora_provider(cfg)
    tokens = jnp.ones((1, 4), jnp.int32)
    positions = jnp.arange(4, dtype=jnp.int32)[None]
    mask = jnp.tril(jnp.ones((1, 4, 4), dtype=bool))
    out = qwix.apply_lora_to_model(
        module, provider, tokens, positions, None, mask, rngs=nnx.Rngs(seed)
    )
    n = sum(x.size for x in jax.tree.leaves(nnx.state(out, nnx.LoRAParam)))
    if n == 0:
        paths = sorted({"/".join(map(str, p)) for p, _ in out.iter_modules() if p})
        raise ValueError(
            f"lora.targets {cfg.targets!r} matched no module; module paths look like {paths[:6]}"
        )
    for _, m in out.iter_modules():
        if any(n.endswith("_lora_a") for n in vars(m)):
            setattr(m, SCALE_ATTR, cfg.alpha / cfg.rank)
    return out


def _closure_objects(fn: Any, depth: int = 0) -> Iterator[Any]:
    """Objects reachable from a (wrapped) function's closures and partials."""
    if depth > 8 or fn is None:
        return
    yield fn
    if hasattr(fn, "func"):  # functools.partial
        yield from _closure_objects(fn.func, depth + 1)
        for x in (*getattr(fn, "args", ()), *getattr(fn, "keywords", {}).values()):
            yield from _closure_objects(x, depth + 1)
    inner = getattr(fn, "__wrapped__", None)
    if inner is not None:
        yield from _closure_objects(inner, depth + 1)
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            yield from _closure_objects(cell.cell_contents, depth + 1)
        except ValueError:  # empty cell
            continue


def provider_of(module: Any) -> qwix.LoraProvider | None:
    """The ``qwix.LoraProvider`` captured by Qwix's wrapped ``__call__``, if any.

    Qwix 0.1.8 stores alpha and rank only in that provider (not on the module), so this is
    the one place cotune can learn the LoRA scale from a model alone.
    """
    call = type(module).__dict__.get("__call__")
    for obj in _closure_objects(call):
        if isinstance(obj, qwix.LoraProvider):
            return obj
    return None


def trainable_filter(lora_enabled: bool, train_embedding: bool = False) -> Any:
    """The NNX filter of trained variables: LoRA params, or every param (full fine-tune), the
    tied embedding only when ``train_embedding`` (``train.train_embedding``)."""
    if lora_enabled:
        return nnx.LoRAParam
    if train_embedding:
        return nnx.Param
    return nnx.All(nnx.Param, nnx.Not(nnx.PathContains("embedder")))


def count_params(module: Any, lora_enabled: bool, train_embedding: bool = False) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    filt = trainable_filter(lora_enabled, train_embedding)
    tr = sum(x.size for x in jax.tree.leaves(nnx.state(module, filt)))
    tot = sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
    return int(tr), int(tot)
