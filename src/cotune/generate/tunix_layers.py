"""The decoder for models :mod:`cotune.generate.gemma3` does not cover, over Tunix's layers.

Tunix's Gemma 1/2 (``gemma2-2b``, ``gemma-2b`` presets) and Gemma 3 variants with a vision
encoder decode here: the module's own ``layer(x, positions, cache, mask)`` calls, so the
model code is Tunix's and only the loop is cotune's. Tunix Gemma 3 text models never run
this path: their decoder is ``gemma3``, which does the same math on prepared weights several
times faster per step. Both decoders keep the same carry (:mod:`cotune.generate.carry`) and
pick tokens alike (:mod:`cotune.generate.sampling`), and the tests prove this one equal to
the no-cache full forward too.

The cache is Tunix's (``[B, S, K, H]`` per layer with one shared end index, as Tunix's
attention requires), in the layout :mod:`cotune.generate` describes: left-padded prompts,
slot ``P + t`` for every row's ``t``-th generated token.

Positions: Tunix's Gemma 3 computes its sliding window in cache slots, so rows get their
real positions (``0..len-1``). Tunix's Gemma 1/2 compares the positions it is given with
slot indices, which left padding shifts apart, so those models get slot indices as
positions: the window is then right, and RoPE, which depends only on position differences,
sees the same differences.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from cotune.generate.carry import advance, running, start
from cotune.generate.sampling import nan_rows, pick


def init_cache(config, batch: int, size: int, dtype) -> dict:
    """Zeroed per-layer K/V cache in Tunix's layout (``[B, S, K, H]`` + shared end index)."""
    shape = (batch, size, config.num_kv_heads, config.head_dim)
    return {
        f"layer_{i}": {
            "k": jnp.zeros(shape, dtype),
            "v": jnp.zeros(shape, dtype),
            "end_index": jnp.zeros((batch,), jnp.int32),
        }
        for i in range(config.num_layers)
    }


def hidden_states(module, tokens, positions, cache, mask):
    """Tunix Gemma forward up to the final norm (no output projection): ``(h, cache)``.

    Same calls as ``Gemma3.__call__`` (text only) but lets the caller project only the
    positions it needs.
    """
    x = module.embedder.encode(tokens)
    new_cache = None if cache is None else {}
    for i, layer in enumerate(module.layers):
        name = f"layer_{i}"
        layer_cache, x = layer(x, positions, None if cache is None else cache[name], mask)
        if cache is not None:
            new_cache[name] = layer_cache
    return module.final_norm(x), new_cache


def project(module, h, emb_lp=None):
    """Hidden states to float32 logits (tied embedding; Gemma 2's final soft-cap if any).

    ``emb_lp`` is an optional bfloat16 copy of the embedding (``compute_dtype="bfloat16"``):
    the vocabulary-wide projection is the largest matmul per token and bf16 halves its
    memory traffic.
    """
    if emb_lp is None:
        logits = module.embedder.decode(h).astype(jnp.float32)
    else:
        logits = jax.lax.dot_general(  # E's last axis contracted, as gemma3.logits
            h.astype(emb_lp.dtype),
            emb_lp,
            (((h.ndim - 1,), (1,)), ((), ())),
            preferred_element_type=jnp.float32,
        )
    cap = getattr(module, "final_logits_softcap", None)
    if cap is not None:
        logits = jnp.tanh(logits / cap) * cap
    return logits


def _slot_positions(module) -> bool:
    """True for Tunix's Gemma 1/2, whose sliding window compares positions with slots."""
    from tunix.models.gemma import model as gemma

    return isinstance(module, gemma.Gemma)


def prefill(
    graphdef,
    params,
    tokens,
    valid,
    row_keys,
    temperature,
    top_p,
    end_ids,
    *,
    cache_len,
    greedy,
    top_k,
    use_top_p,
):
    """The left-padded prompts ``tokens [B, P]`` through every layer at once: the cache for
    ``cache_len`` slots and each row's first token, as the decode loop's carry."""
    state, emb_lp = params
    module = nnx.merge(graphdef, state)
    b, p = tokens.shape
    if _slot_positions(module):
        positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    else:
        positions = jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0).astype(jnp.int32)
    key_valid = jnp.zeros((b, cache_len), bool).at[:, :p].set(valid)
    causal = jnp.arange(cache_len)[None, None, :] <= jnp.arange(p)[None, :, None]
    mask = key_valid[:, None, :] & causal
    dtype = module.embedder.input_embedding.get_value().dtype
    cache = init_cache(module.config, b, cache_len, dtype)
    h, cache = hidden_states(module, tokens, positions, cache, mask)
    logits = project(module, h[:, -1], emb_lp)
    kw = dict(greedy=greedy, top_k=top_k, use_top_p=use_top_p)
    first = pick(logits, row_keys, 0, temperature, top_p, **kw, nan_rows=nan_rows(h[:, -1]))
    return start(cache, first, valid, cache_len, end_ids)


def decode(
    graphdef,
    params,
    carry,
    row_keys,
    temperature,
    top_p,
    end_ids,
    until,
    pad_id,
    *,
    greedy,
    top_k,
    use_top_p,
    steps: int | None = None,
):
    """Decode steps until ``step == until`` or every row is done (``until`` is traced).

    ``steps`` (static) is the Gemma 3 decoder's bound on a call's steps
    (:func:`cotune.generate.gemma3.decode`); this loop computes each step's positions
    inside it, with nothing made per call to bound, so it only caps the loop as there."""
    if steps is not None:
        until = jnp.minimum(until, carry["step"] + steps)
    state, emb_lp = params
    module = nnx.merge(graphdef, state)
    kw = dict(greedy=greedy, top_k=top_k, use_top_p=use_top_p)
    n_new = carry["out"].shape[1]
    p = carry["key_valid"].shape[1] - n_new
    first_position = jnp.full_like(carry["prompt_len"], p) if _slot_positions(module) else None

    def body(c):
        step = c["step"]
        last = jax.lax.dynamic_index_in_dim(c["out"], step - 1, axis=1, keepdims=True)
        key_valid = c["key_valid"].at[:, p + step - 1].set(True)
        start = c["prompt_len"] if first_position is None else first_position
        positions = (start + step - 1)[:, None]
        h, cache = hidden_states(module, last, positions, c["cache"], key_valid[:, None, :])
        logits = project(module, h[:, 0], emb_lp)
        tok = pick(logits, row_keys, step, temperature, top_p, **kw, nan_rows=nan_rows(h[:, 0]))
        return advance(c, tok, cache, key_valid, pad_id, end_ids)

    return jax.lax.while_loop(partial(running, until=until), body, carry)
