"""LoRA through Qwix, the hidden-state forward used by training, and bf16 matmuls.

Qwix applies LoRA by *intercepting* matmuls inside one wrapped method of the model (here the
Gemma3 ``__call__``, so generation sees the adapters). Training must not call ``__call__``:
it computes logits for every position through the 262k-wide tied embedding, which is the
single largest cost per token. :func:`hidden_states` runs the Tunix submodules (embedder
encode, decoder layers, final norm) instead and stops before the output projection; to make
the adapters active there too, it is wrapped with the same Qwix interceptors in
:func:`_lora_intercepted` (the only use of a private Qwix helper in cotune).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import qwix
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from cotune.config import LoraCfg

_HIDDEN_FNS: dict[type, Callable[..., Any]] = {}


def _hidden_plain(module: Any, tokens: jax.Array, positions: jax.Array, mask: jax.Array):
    x = module.embedder.encode(tokens)
    for layer in module.layers:
        _, x = layer(x, positions, None, mask)
    return module.final_norm(x)


def _lora_intercepted(provider: qwix.LoraProvider) -> Callable[..., Any]:
    """:func:`_hidden_plain` run inside Qwix's interception, so LoRA deltas apply.

    Qwix 0.1.8 only intercepts one named *method* of an NNX model; its helper that wraps an
    arbitrary function with the provider's interceptors is private. The first positional
    argument must be the model (Qwix resets its per-module op counters from it).
    """
    from qwix._src import model as qwix_model  # private: see docstring

    return qwix_model._apply_interceptors(_hidden_plain, provider, output_transform=lambda o: o)


def hidden_states(module: Any, tokens: jax.Array, positions: jax.Array, mask: jax.Array):
    """Final-norm hidden states ``[B, L, D]`` (no logits), LoRA applied if the model has it."""
    fn = _HIDDEN_FNS.get(type(module), _hidden_plain)
    return fn(module, tokens, positions, mask)


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
    _HIDDEN_FNS[type(out)] = _lora_intercepted(provider)
    return out


def trainable_filter(lora_enabled: bool) -> Any:
    """The NNX filter of trained variables: LoRA params, or every param (full fine-tune)."""
    return nnx.LoRAParam if lora_enabled else nnx.Param


def count_params(module: Any, lora_enabled: bool) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    tr = sum(x.size for x in jax.tree.leaves(nnx.state(module, trainable_filter(lora_enabled))))
    tot = sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
    return int(tr), int(tot)


# --------------------------------------------------------------------------- bf16 matmuls


class _Bf16Einsum(gemma3.Einsum):
    """Tunix Einsum with bf16 operands and float32 accumulation (2.6x f32 on this CPU)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.einsum(
            self.einsum_str,
            x.astype(jnp.bfloat16),
            self.w[...].astype(jnp.bfloat16),
            preferred_element_type=jnp.float32,
        )


def set_bf16_matmul(module: Any, enabled: bool) -> None:
    """Switch the decoder's projections (attention einsums, MLP linears) to bf16 operands with
    float32 results, or back. Parameters and everything else stay float32.

    Qwix still finds the weights (it accepts dtype-cast params), so LoRA deltas keep applying.
    Changes the module in place; call before ``nnx.split`` so the graph carries it.
    """
    for _, m in module.iter_modules():
        if isinstance(m, gemma3.Einsum):
            m.__class__ = _Bf16Einsum if enabled else gemma3.Einsum
        elif isinstance(m, nnx.Linear):
            m.dtype = jnp.bfloat16 if enabled else None
            m.preferred_element_type = jnp.float32 if enabled else None


# --------------------------------------------------------------------------- merge


def merge_lora(module: Any, cfg: LoraCfg) -> Any:
    """A plain Tunix Gemma3 with the adapters folded into the base weights.

    ``W + (alpha/rank) * A @ B`` in each weight's layout; for export and for generation
    without interception overhead. Handles the einsum and linear layouts Qwix creates on
    Gemma3 (A over the contracting dims, B over the remaining ones).
    """
    scale = cfg.alpha / cfg.rank
    base_type = getattr(type(module), "_unquantized_type", type(module))
    merged: dict[tuple, jax.Array] = {}
    for path, m in module.iter_modules():
        for name in list(vars(m)):
            if not name.endswith("_lora_a"):
                continue
            base = name[: -len("_lora_a")]
            a = getattr(m, name)[...]
            b = getattr(m, base + "_lora_b")[...]
            merged[(tuple(path), base)] = _fold(getattr(m, base)[...], a, b, m, scale)
    plain = _rebuild_plain(module, base_type)
    for (path, base), new_w in merged.items():
        target = plain
        for p in path:
            target = target[p] if isinstance(p, int) else getattr(target, p)
        getattr(target, base)[...] = new_w
    return plain


def _fold(w: jax.Array, a: jax.Array, b: jax.Array, m: Any, scale: float) -> jax.Array:
    """W + scale * (A @ B) in W's layout, for Qwix's einsum/dot_general adapter layouts."""
    if isinstance(m, gemma3.Einsum):
        lora_str = m.w_lora_einsum_str
        _, a_str, b_str = lora_str.split("->")[0].split(",")
        info = m.einsum_str.split("->")[0].split(",")[1]
        delta = jnp.einsum(f"{a_str},{b_str}->{info}", a, b)
    else:  # nnx.Linear kernel [in, out]: A [in, r], B [r, out]
        delta = a @ b
    return (w + scale * delta).astype(w.dtype)


def _rebuild_plain(module: Any, base_type: type) -> Any:
    """A deep copy of ``module`` without Qwix: the base class and base params only."""
    clone = nnx.clone(module)
    for _, m in clone.iter_modules():
        for name in [n for n in vars(m) if n.endswith(("_lora_a", "_lora_b"))]:
            delattr(m, name)
    clone.__class__ = base_type
    return clone
