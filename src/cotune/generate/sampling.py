"""The next token per row from float32 logits: greedy or sampled (temperature, top-k, top-p).

Both decoders call :func:`pick` once per step inside their compiled loops. Logits come
row-major ``[B, V]`` or vocabulary-major ``[V, B]`` (``vocab_major``, the Gemma 3
decoder's output projection: ``cotune.generate.gemma3.logits``); greedy picks then run
down the columns without transposing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Keyword arguments of :func:`pick` that change the traced program (jit static arguments).
STATIC = ("greedy", "top_k", "use_top_p")


def argmax(logits, axis: int = -1, chunk: int = 256):
    """``jnp.argmax(logits, axis)`` over the vocabulary axis (``-1`` for ``[B, V]``, ``0``
    for vocabulary-major ``[V, B]``): the same first maximum for finite logits.

    XLA's CPU argmax is a scalar two-operand reduction, a large share of a decode step over
    a 262k vocabulary. A vectorised max per chunk of ``chunk`` entries, an argmax over the
    chunk maxima (the first chunk holding the maximum) and one inside that chunk cost a
    fraction of it (``python -m bench.matmul_rates --decode``). NaN is not handled here:
    XLA's CPU max drops NaN in some shapes (the tests of this function found it), and
    mapping NaN to +inf first slows the projection + argmax measurably. A NaN logit comes
    from a NaN hidden state, so :func:`pick` checks the ``[B, D]`` state instead
    (:func:`nan_rows`).
    """
    ax = axis % logits.ndim
    v = logits.shape[ax]
    if v % chunk or v <= chunk:
        return jnp.argmax(logits, axis=ax).astype(jnp.int32)
    tiles = logits.reshape(*logits.shape[:ax], v // chunk, chunk, *logits.shape[ax + 1 :])
    best = jnp.argmax(jnp.max(tiles, axis=ax + 1), axis=ax)  # [B]: first chunk with the max
    inside = jnp.take_along_axis(tiles, jnp.expand_dims(best, (ax, ax + 1)), axis=ax)
    return (best * chunk + jnp.argmax(inside.squeeze(ax), axis=ax)).astype(jnp.int32)


def sample(logits, keys, temperature, top_p, *, top_k: int | None, use_top_p: bool):
    """One sampled token per row of ``logits [B, V]``. ``keys`` are per-row so a row's draw
    does not depend on its batch."""
    logits = logits / temperature
    if top_k is not None:
        vals, idx = jax.lax.top_k(logits, top_k)
    elif use_top_p:
        idx = jnp.argsort(-logits, axis=-1)
        vals = jnp.take_along_axis(logits, idx, axis=-1)
    else:
        vals, idx = logits, None
    if use_top_p:  # vals are sorted descending: keep the smallest prefix with mass >= top_p
        probs = jax.nn.softmax(vals, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs
        vals = jnp.where(before < top_p, vals, -jnp.inf)
    choice = jax.vmap(jax.random.categorical)(keys, vals).astype(jnp.int32)
    if idx is None:
        return choice
    return jnp.take_along_axis(idx, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def pick(
    logits,
    row_keys,
    step,
    temperature,
    top_p,
    *,
    greedy,
    top_k,
    use_top_p,
    nan_rows,
    vocab_major=False,
):
    """The step's token per row (per-row keys folded with the step number). ``logits`` are
    ``[B, V]``, or ``[V, B]`` with ``vocab_major`` (greedy then never transposes them).
    Greedy rows in ``nan_rows`` (:func:`nan_rows` of the hidden state: every logit NaN) get
    token 0, as ``jnp.argmax`` gives them."""
    if greedy:
        tok = argmax(logits, axis=0 if vocab_major else -1)
        return jnp.where(nan_rows, 0, tok)
    keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, step)
    return sample(
        logits.T if vocab_major else logits,
        keys,
        temperature,
        top_p,
        top_k=top_k,
        use_top_p=use_top_p,
    )


def nan_rows(h):
    """Rows of ``h [B, D]`` holding a NaN: all their logits are NaN (see :func:`argmax`)."""
    return jnp.isnan(h).any(axis=-1)
