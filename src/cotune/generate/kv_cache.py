"""The Gemma 3 decoder's KV cache: its memory layouts and how a slot is written in place.

A cache array per layer holds keys (or values) as ``[B, K, S, H]`` or ``[B, K, H, S]``
(named by einsum letters: b = batch row, k = KV head, s = slot, h = head dim). Slots are
shared by every row: slot ``P + t`` holds every row's ``t``-th generated token after a
left-padded prompt of ``P`` slots, so a slot distance is a position distance.

Layouts, per cache dtype, are the ones XLA's CPU dots read without first copying a
transposed cache (which they did in every layer of every decode step otherwise, for either
dtype with the other's layout).

bfloat16 caches are stored as their values' uint16 bit patterns: XLA's CPU backend updates
a bf16 array by converting all of it to float32 and back, which turned each step's one-slot
write into a full pass over every layer's cache, while a uint16 array is updated in place.
The bitcast back to bf16 for the attention products is a copy the dots then read from
cache-warm memory. (A float32 side buffer flushed every few steps measured slower still:
the dots read the cold cache at half the speed, and XLA copied the side buffers.)
Measurements: bench/results/design.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_LAYOUTS = {
    jnp.dtype(jnp.float32): ("bkhs", "bksh"),  # keys, values
    jnp.dtype(jnp.bfloat16): ("bksh", "bkhs"),
}
_BITS = {jnp.dtype(jnp.bfloat16): jnp.uint16}


def layouts(dtype) -> tuple[str, str]:
    """``(key layout, value layout)`` of a cache in ``dtype``."""
    return _LAYOUTS.get(jnp.dtype(dtype), ("bksh", "bksh"))


def to_layout(x, layout: str):
    """``x [B,T,K,H]`` (new keys or values) to the cache ``layout`` (``T`` as ``s``)."""
    return jnp.transpose(x, (0, 2, 3, 1) if layout == "bkhs" else (0, 2, 1, 3))


def pad_slots(a, layout: str, size: int):
    """Zero-pad a cache array's slot axis to ``size``."""
    pad = [(0, 0)] * a.ndim
    pad[layout.index("s")] = (0, size - a.shape[layout.index("s")])
    return jnp.pad(a, pad)


def write_slot(cache, new, layout: str, slot):
    """``cache`` with ``new`` (one slot, same layout) written at ``slot``, in place."""
    start = [0] * cache.ndim
    start[layout.index("s")] = slot
    return jax.lax.dynamic_update_slice(cache, new, start)


def first_slots(a, layout: str, n: int):
    """A cache array's first ``n`` slots."""
    return jax.lax.slice_in_dim(a, 0, n, axis=layout.index("s"))


def stored(x, dtype):
    """``x`` as the cache stores it: in ``dtype``, as bit patterns for bfloat16."""
    x = x.astype(dtype)
    bits = _BITS.get(jnp.dtype(dtype))
    return x if bits is None else jax.lax.bitcast_convert_type(x, bits)


def loaded(c):
    """A stored cache array as values (bit patterns back to bfloat16)."""
    return jax.lax.bitcast_convert_type(c, jnp.bfloat16) if c.dtype == jnp.uint16 else c
