"""The state both decoders carry through their compiled decode loop.

One dict, so the host loop reads and edits it the same way whichever decoder runs: ``out``
holds each row's generated tokens (slot ``t`` of generation step ``t``), ``done`` marks rows
that produced an end token (or that the host stopped), ``key_valid`` marks the cache slots
each row may attend to (its real prompt tokens, then every generated slot), ``prompt_len``
is each row's real prompt length (its next position), ``cache`` is the decoder's KV cache.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def start(cache, first, valid, cache_len: int, end_ids) -> dict:
    """The decode loop's carry after prefill picked each row's ``first`` token."""
    b, p = valid.shape
    return {
        "cache": cache,
        "out": jnp.zeros((b, cache_len - p), jnp.int32).at[:, 0].set(first),
        "step": jnp.array(1, jnp.int32),
        "done": jnp.isin(first, end_ids),
        "key_valid": jnp.zeros((b, cache_len), bool).at[:, :p].set(valid),
        "prompt_len": valid.sum(axis=-1).astype(jnp.int32),
    }


def running(c: dict, until):
    """Whether the decode loop goes on: ``step`` below ``until`` and some row not done."""
    return (c["step"] < until) & ~jnp.all(c["done"])


def advance(c: dict, tok, cache, key_valid, pad_id, end_ids) -> dict:
    """The carry after one decode step wrote ``tok`` (pad for rows already done)."""
    tok = jnp.where(c["done"], pad_id, tok)
    return {
        **c,
        "cache": cache,
        "out": jax.lax.dynamic_update_index_in_dim(c["out"], tok, c["step"], axis=1),
        "step": c["step"] + 1,
        "key_valid": key_valid,
        "done": c["done"] | jnp.isin(tok, end_ids),
    }
