"""Folding LoRA adapters into the base weights: a plain model that generates like the LoRA one.

:func:`merge_lora` reads the adapters Qwix attached (:func:`lora_adapters`), learns their
scale from the Qwix provider on the model (:func:`cotune.lora.wrap.provider_of`), the
model's ``meta['lora']`` or ``alpha=``, folds ``W + (alpha/rank) * A@B`` into each weight
in its own layout and rebuilds a plain Tunix Gemma 3 through
:func:`cotune.model.convert.build_module`. Export writes the result; generation decodes it
(:mod:`cotune.lora.fold`), because Qwix only injects adapters inside ``Gemma3.__call__``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import qwix
from flax import nnx

from cotune.lora.wrap import provider_of
from cotune.model import Model
from cotune.model.convert import build_module, flat_state


class LoraError(ValueError):
    """Adapters that cannot be folded as asked (unknown scale, shapes, tied embedding)."""


@dataclass
class Adapter:
    """One Qwix LoRA adapter: module path, the adapted parameter and its A/B factors."""

    path: tuple[str | int, ...]
    param: str  # "w" (Tunix Einsum) or "kernel" (nnx.Linear)
    a: np.ndarray
    b: np.ndarray
    einsum_str: str | None  # the module's einsum (None for a dot_general / Linear)

    @property
    def rank(self) -> int:
        return int(self.a.shape[-1])

    @property
    def dotted(self) -> str:
        return "/".join(map(str, self.path))


def lora_adapters(module: Any) -> list[Adapter]:
    """Every ``<param>_lora_a`` / ``<param>_lora_b`` pair Qwix attached to ``module``."""
    out = []
    for path, m in module.iter_modules():
        for name, var in list(vars(m).items()):
            if not (name.endswith("_lora_a") and isinstance(var, nnx.Variable)):
                continue
            base = name[: -len("_lora_a")]
            b = getattr(m, base + "_lora_b", None)
            if b is None:
                raise LoraError(f"{'/'.join(map(str, path))}: {name} without {base}_lora_b")
            out.append(
                Adapter(
                    tuple(path),
                    base,
                    np.asarray(var.get_value(), np.float32),
                    np.asarray(b.get_value(), np.float32),
                    getattr(m, "einsum_str", None) if base == "w" else None,
                )
            )
    return out


def _alpha_for(ad: Adapter, provider: Any, alpha: float | None, meta: dict) -> float:
    if alpha is not None:
        return float(alpha)
    if provider is not None:
        op = "einsum" if ad.einsum_str else "dot_general"
        for rule in getattr(provider, "_rules", []):  # private in Qwix 0.1.8: see provider_of
            if (
                isinstance(rule, qwix.LoraRule)
                and re.fullmatch(rule.module_path, ad.dotted)
                and (not rule.op_names or op in rule.op_names)
            ):
                if int(rule.rank) != ad.rank:
                    raise LoraError(f"{ad.dotted}: adapter rank {ad.rank} != rule rank {rule.rank}")
                return float(rule.alpha)
    lora = meta.get("lora") if isinstance(meta, dict) else None
    if isinstance(lora, dict) and "alpha" in lora:
        return float(lora["alpha"])
    raise LoraError(
        f"{ad.dotted}: cannot tell the LoRA alpha (no Qwix provider on the model, no "
        "model.meta['lora']['alpha']); pass alpha= to merge_lora"
    )


def _delta(ad: Adapter, w_shape: tuple[int, ...]) -> np.ndarray:
    """``A @ B`` laid out like the adapted weight (before the alpha/rank scale).

    Qwix builds the factors from the einsum: A spans the weight's dims shared with the input
    (contracting/batch, in the weight's order) then the rank; B spans the rank then the
    remaining dims. For ``dot_general`` (nnx.Linear ``[in, out]``) A is ``[in, r]``, B ``[r, out]``.
    """
    if ad.einsum_str:
        lhs, rhs = ad.einsum_str.split("->")[0].split(",")
        a_dims = [c for c in rhs if c in lhs]
        b_dims = [c for c in rhs if c not in lhs]
        r = sorted(set("abcdefghijklmnopqrstuvwxyz") - set(ad.einsum_str))[0]
        a_spec, b_spec = "".join(a_dims) + r, r + "".join(b_dims)
        sizes = dict(zip(rhs, w_shape, strict=True))
        want_a = tuple(sizes[c] for c in a_dims) + (ad.rank,)
        want_b = (ad.rank,) + tuple(sizes[c] for c in b_dims)
        if ad.a.shape != want_a or ad.b.shape != want_b:
            raise LoraError(
                f"{ad.dotted}: LoRA shapes A{ad.a.shape} B{ad.b.shape} do not fit einsum "
                f"{ad.einsum_str!r} with weight {w_shape} (expected A{want_a} B{want_b})"
            )
        return np.einsum(f"{a_spec},{b_spec}->{rhs}", ad.a, ad.b)
    if (
        len(w_shape) != 2
        or ad.a.shape != (w_shape[0], ad.rank)
        or ad.b.shape != (ad.rank, w_shape[1])
    ):
        raise LoraError(
            f"{ad.dotted}: cannot merge LoRA A{ad.a.shape} B{ad.b.shape} into {ad.param}{w_shape}"
        )
    return ad.a @ ad.b


def merge_lora(model: Any, *, alpha: float | None = None) -> Any:
    """A plain, LoRA-free copy of ``model`` whose weights are ``W + (alpha/rank) * A@B``.

    Generations of the result equal the LoRA model's (up to float32 rounding of the fold).
    ``alpha`` overrides the value found on the Qwix provider / ``model.meta['lora']``. A plain
    model (no Qwix wrapper) is returned unchanged. Merging happens in float32 on the host,
    then the module is rebuilt in the model's own parameter dtype.
    """
    module = model.module
    adapters = lora_adapters(module)
    if not adapters and not hasattr(type(module), "_unquantized_type"):
        return model  # already plain: nothing to fold, no copy needed
    flat = {
        p: np.asarray(v, np.float32)
        for p, v in flat_state(module).items()
        if not str(p[-1]).endswith(("_lora_a", "_lora_b"))
    }
    provider = provider_of(module) if adapters and alpha is None else None
    merged = []
    for ad in adapters:
        key = (*ad.path, ad.param)
        if key not in flat:
            raise LoraError(
                f"{ad.dotted}: LoRA on {ad.param!r}, which is not a Gemma 3 weight cotune can "
                "merge (only attention einsums and MLP projections)"
            )
        if ad.path and ad.path[0] == "embedder":  # tied: encode gathers, decode dots
            raise LoraError(f"{ad.dotted}: LoRA on the tied embedding cannot be merged")
        scale = _alpha_for(ad, provider, alpha, model.meta) / ad.rank
        flat[key] = flat[key] + np.float32(scale) * _delta(ad, flat[key].shape).astype(np.float32)
        merged.append(ad.dotted)
    plain = build_module(model.config, flat, f"{model.name} (merged)")
    meta = dict(model.meta)
    if merged:
        meta["lora_merged"] = len(merged)
    return Model(plain, model.tokenizer, model.config, model.name, meta)
