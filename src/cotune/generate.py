"""Batched KV-cache generation for Tunix Gemma models: greedy or sampled, with stop strings.

Why our own loop: Tunix 0.1.7's ``Sampler`` decodes with an off-by-one (degenerate text on
correct weights, see the notes), ignores temperature without top_p and knows no stop
strings. This module drives the Tunix Gemma module's own ``layer(x, positions, cache,
mask)`` calls, so the model code is Tunix's and only the loop is ours.

Layout (proved token-for-token against a no-cache full-forward loop in
``tests/test_generate.py``):

* prompts are **left-padded** to a bucketed length ``P``; each row has its own positions
  (``0..len-1`` for its real tokens) and a key-validity row that hides its padding;
* the cache has ``S = P + N`` slots (``N`` = bucketed ``max_new_tokens``) and one shared
  write index, as Tunix's attention requires: slot ``P + t`` holds every row's ``t``-th
  generated token, so a slot distance equals a position distance and Tunix's sliding
  window (computed in slots) is right for every row;
* prefill computes logits only for the last position (the 262k-wide output projection is
  the costliest matmul); decode is a ``jax.lax.while_loop`` over steps, run in chunks so
  the host can check stop strings and stream tokens, exiting early once every row ended;
* shapes are bucketed (batch and new-token lengths to powers of two, prompt lengths to
  multiples of 16 or an eighth of their power of two, :func:`bucket_len`) so repeated
  calls reuse compiled code; :func:`compile_counts` counts traces.
"""

from __future__ import annotations

import collections
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cotune import format as fmt

FinishReason = Literal["stop", "end", "length"]
_TRACES: collections.Counter[str] = collections.Counter()


@dataclass
class Generation:
    """One completion: its text, its token ids and why it ended."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason  # "stop" = stop string, "end" = <eos>/<end_of_turn>, "length"
    prompt_tokens: int


def compile_counts() -> dict[str, int]:
    """How many times the prefill and decode functions were traced (= compiled)."""
    return dict(_TRACES)


def bucket(n: int, minimum: int = 16) -> int:
    """Round up to a power of two (at least ``minimum``) so shapes, hence compiles, repeat."""
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def bucket_len(n: int, minimum: int = 16) -> int:
    """Round a prompt length up to a multiple of an eighth of its power-of-two bucket (at
    least 16): 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, ...

    Prefill computes every padded position and decode attends over them, so plain powers
    of two waste up to half of both (a 74-token batch ran at 128; now 80). Compiling is
    cheap since decode runs on prepared weights (~4 s for the 270M), so the finer steps
    cost little.
    """
    step = max(minimum, bucket(n, minimum) // 8)
    return max(minimum, -(-n // step) * step)


# --------------------------------------------------------------------------- functional core


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

    ``emb_lp`` is an optional bfloat16 copy of the embedding (``compute_dtype="bfloat16"``
    on models other than Gemma 3, whose decoder is below): the 262k-wide projection is the
    largest matmul per token and bf16 halves its memory traffic.
    """
    if emb_lp is None:
        logits = module.embedder.decode(h).astype(jnp.float32)
    else:
        logits = jax.lax.dot_general(  # E's last axis contracted: see _g3_logits
            h.astype(emb_lp.dtype),
            emb_lp,
            (((h.ndim - 1,), (1,)), ((), ())),
            preferred_element_type=jnp.float32,
        )
    cap = getattr(module, "final_logits_softcap", None)
    if cap is not None:
        logits = jnp.tanh(logits / cap) * cap
    return logits


def _argmax(logits, axis: int = -1, chunk: int = 256):
    """``jnp.argmax(logits, axis)`` over the vocabulary axis (``-1`` for ``[B, V]``, ``0``
    for vocabulary-major ``[V, B]``, see :func:`_g3_logits`): the same first maximum for
    finite logits.

    XLA's CPU argmax is a scalar two-operand reduction: ~15 ms over ``[32, 262144]``, a
    sixth of a decode step. A vectorised max per chunk of ``chunk`` entries, an argmax over
    the chunk maxima (the first chunk holding the maximum) and one inside that chunk take
    ~1 ms. NaN is not handled here: XLA's CPU max drops NaN in some shapes (the tests of
    this function found it), and mapping NaN to +inf first, when tried, made the batch-32
    projection + argmax of ``bench.matmul_rates --decode`` 22.5 ms instead of 19.0. A NaN
    logit comes from a NaN hidden state, so :func:`_pick` checks the ``[B, D]`` state
    instead (``nan_rows``).
    """
    ax = axis % logits.ndim
    v = logits.shape[ax]
    if v % chunk or v <= chunk:
        return jnp.argmax(logits, axis=ax).astype(jnp.int32)
    tiles = logits.reshape(*logits.shape[:ax], v // chunk, chunk, *logits.shape[ax + 1 :])
    best = jnp.argmax(jnp.max(tiles, axis=ax + 1), axis=ax)  # [B]: first chunk with the max
    inside = jnp.take_along_axis(tiles, jnp.expand_dims(best, (ax, ax + 1)), axis=ax)
    return (best * chunk + jnp.argmax(inside.squeeze(ax), axis=ax)).astype(jnp.int32)


def _sample(logits, keys, temperature, top_p, *, top_k: int | None, use_top_p: bool):
    """One sampled token per row. ``keys`` are per-row so a row's draw does not depend on
    its batch."""
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


_STATIC = ("greedy", "top_k", "use_top_p")


def _pick(
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
    Greedy rows in ``nan_rows`` (:func:`_nan_rows` of the hidden state: every logit NaN) get
    token 0, as ``jnp.argmax`` gives them."""
    if greedy:
        tok = _argmax(logits, axis=0 if vocab_major else -1)
        return jnp.where(nan_rows, 0, tok)
    keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, step)
    return _sample(
        logits.T if vocab_major else logits,
        keys,
        temperature,
        top_p,
        top_k=top_k,
        use_top_p=use_top_p,
    )


def _nan_rows(h):
    """Rows of ``h [B, D]`` holding a NaN: all their logits are NaN (see :func:`_argmax`)."""
    return jnp.isnan(h).any(axis=-1)


def _start(cache, first, valid, cache_len: int, end_ids) -> dict:
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


def _advance(c: dict, tok, cache, key_valid, pad_id, end_ids) -> dict:
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


def _prefill(
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
    _TRACES["prefill"] += 1
    state, emb_lp = params
    module = nnx.merge(graphdef, state)
    b, p = tokens.shape
    positions = jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0).astype(jnp.int32)
    key_valid = jnp.zeros((b, cache_len), bool).at[:, :p].set(valid)
    causal = jnp.arange(cache_len)[None, None, :] <= jnp.arange(p)[None, :, None]
    mask = key_valid[:, None, :] & causal
    dtype = module.embedder.input_embedding.get_value().dtype
    cache = init_cache(module.config, b, cache_len, dtype)
    h, cache = hidden_states(module, tokens, positions, cache, mask)
    logits = project(module, h[:, -1], emb_lp)
    pick = dict(greedy=greedy, top_k=top_k, use_top_p=use_top_p)
    first = _pick(logits, row_keys, 0, temperature, top_p, **pick, nan_rows=_nan_rows(h[:, -1]))
    return _start(cache, first, valid, cache_len, end_ids)


def _decode(
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
):
    """Decode steps until ``step == until`` or every row is done (``until`` is traced)."""
    _TRACES["decode"] += 1
    state, emb_lp = params
    module = nnx.merge(graphdef, state)
    pick = dict(greedy=greedy, top_k=top_k, use_top_p=use_top_p)
    n_new = carry["out"].shape[1]
    p = carry["key_valid"].shape[1] - n_new

    def cond(c):
        return (c["step"] < until) & ~jnp.all(c["done"])

    def body(c):
        step = c["step"]
        last = jax.lax.dynamic_index_in_dim(c["out"], step - 1, axis=1, keepdims=True)
        key_valid = c["key_valid"].at[:, p + step - 1].set(True)
        positions = (c["prompt_len"] + step - 1)[:, None]
        h, cache = hidden_states(module, last, positions, c["cache"], key_valid[:, None, :])
        logits = project(module, h[:, 0], emb_lp)
        tok = _pick(logits, row_keys, step, temperature, top_p, **pick, nan_rows=_nan_rows(h[:, 0]))
        return _advance(c, tok, cache, key_valid, pad_id, end_ids)

    return jax.lax.while_loop(cond, body, carry)


# --------------------------------------------------------------------------- Gemma 3 decoder
#
# Decoding spends its time in memory traffic and small ops, not FLOPs: at batch 32 a step
# through Tunix's layer calls took ~0.6 s, ~6x what its matmuls need (weights re-laid out
# every step, the KV cache copied for its attention einsums, a scalar argmax, no way to
# keep weights or cache in bfloat16). For Tunix's Gemma 3 the same math runs here on
# weights prepared once (q/k/v and gate/up fused, ``[out, in]``), a cache laid out for
# XLA's dots and written in place, and a vectorised argmax. ``compute_dtype="float32"``
# reproduces the Tunix forward token for token (``tests/test_generate.py``);
# ``"bfloat16"`` (the default) stores weights, cache and the output projection in bfloat16
# with float32 accumulation, norms, RoPE and softmax: 2.7x faster than float32 at batch 32
# on 2 cores, and its greedy tokens matched float32's on 89% of 4096 (32 reasoning prompts
# x 128 tokens; HF transformers' own bf16 matched 83%), ``bench/compare_generate.py``.

_K_MASK = -2.3819763e38  # Tunix's masked-logit value


@dataclass(frozen=True)
class _G3:
    """Static facts of a Tunix Gemma 3 text model (a jit static argument)."""

    heads: int
    kv_heads: int
    head_dim: int
    window: int
    q_scale: float
    local: tuple[bool, ...]
    rope: tuple[tuple[float, float], ...]  # (base frequency, scale factor) per layer


def _g3_static(module) -> _G3 | None:
    """The :class:`_G3` of a Tunix Gemma 3 text module, ``None`` for anything else."""
    try:
        from tunix.models.gemma3 import model as g3
    except ImportError:  # pragma: no cover - Tunix is a dependency
        return None
    if type(module) is not g3.Gemma3 or getattr(module, "vision_encoder", None) is not None:
        return None
    cfg = module.config
    attns = [layer.attn for layer in module.layers]
    if any(a.use_qkv_einsum or getattr(a, "q_einsum", None) is None for a in attns):
        return None
    local = tuple(a.attn_type == g3.AttentionType.LOCAL_SLIDING for a in attns)
    return _G3(
        heads=cfg.num_heads,
        kv_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        window=int(cfg.sliding_window_size or 0),
        q_scale=float(attns[0].query_pre_attn_scalar),
        local=local,
        rope=tuple((float(a.rope_base_frequency), float(a.rope_scale_factor)) for a in attns),
    )


def _g3_sources(module) -> dict:
    """The module's own arrays the decoder reads (no copies)."""
    layers = []
    for layer in module.layers:
        a, m = layer.attn, layer.mlp
        layers.append(
            {
                "q": a.q_einsum.w.get_value(),  # [N, D, H]
                "kv": a.kv_einsum.w.get_value(),  # [2, K, D, H]
                "o": a.attn_vec_einsum.w.get_value(),  # [N, H, D]
                "gate": m.gate_proj.kernel.get_value(),  # [D, F]
                "up": m.up_proj.kernel.get_value(),
                "down": m.down_proj.kernel.get_value(),  # [F, D]
                "pre_attn": layer.pre_attention_norm.scale.get_value(),
                "post_attn": layer.post_attention_norm.scale.get_value(),
                "pre_ffw": layer.pre_ffw_norm.scale.get_value(),
                "post_ffw": layer.post_ffw_norm.scale.get_value(),
                "q_norm": a._query_norm.scale.get_value(),
                "k_norm": a._key_norm.scale.get_value(),
            }
        )
    return {
        "layers": layers,
        "emb": module.embedder.input_embedding.get_value(),
        "final": module.final_norm.scale.get_value(),
    }


@partial(jax.jit, static_argnames="dtype")
def _g3_fuse(src: dict, dtype: str) -> dict:
    """Decode weights from :func:`_g3_sources`: fused, ``[out, in]``, matmuls in ``dtype``.

    ``[out, in]`` (contracting each weight's last axis, as ``x @ E.T`` does for the
    embedding) measured fastest on XLA's CPU dots for these skinny products: a batch-32
    decode step's layer matmuls took 29 ms this way against 37 ms for ``[in, out]``.
    """
    _TRACES["weights"] += 1
    wd = jnp.dtype(dtype)
    norms = ("pre_attn", "post_attn", "pre_ffw", "post_ffw")
    layers = []
    for w in src["layers"]:
        n, d, h = w["q"].shape
        qk_heads = (("q_norm", n), ("k_norm", w["kv"].shape[1]))
        q = jnp.transpose(w["q"], (0, 2, 1)).reshape(-1, d)  # [N*H, D]
        k = jnp.transpose(w["kv"][0], (0, 2, 1)).reshape(-1, d)  # [K*H, D]
        v = jnp.transpose(w["kv"][1], (0, 2, 1)).reshape(-1, d)
        layers.append(
            {
                "qkv": jnp.concatenate([q, k, v], axis=0).astype(wd),
                "o": w["o"].reshape(n * h, d).T.astype(wd),  # [D, N*H]
                "gate_up": jnp.concatenate([w["gate"], w["up"]], axis=1).T.astype(wd),
                "down": w["down"].T.astype(wd),  # [D, F]
                **{name: w[name].astype(jnp.float32) for name in norms},
                "qk_norm": jnp.concatenate(  # [N + K, H]: per-head q then k norm scales
                    [jnp.broadcast_to(w[name], (heads, h)) for name, heads in qk_heads]
                ).astype(jnp.float32),
            }
        )
    out = {"layers": tuple(layers), "final": src["final"].astype(jnp.float32)}
    if wd != src["emb"].dtype:  # a low-precision copy for the output projection
        out["emb_out"] = src["emb"].astype(wd)
    return out


# Prepared weights per module and dtype, with the source arrays they were made from.
_G3_W: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _g3_weights(module, dtype: str) -> dict:
    """Decode weights for ``module`` in ``dtype``, prepared once per weights.

    Preparing reads every weight (~1 GB for the 270M): done per step it would cost as much
    as the step, so the result is kept until the weights change (checked by array identity:
    training, LoRA merging and loading all replace the array objects).
    """
    src = _g3_sources(module)
    leaves = jax.tree.leaves(src)
    per = _G3_W.setdefault(module, {})
    hit = per.get(dtype)
    if (
        hit is None
        or len(hit[0]) != len(leaves)
        or any(a is not b for a, b in zip(hit[0], leaves, strict=True))
    ):
        hit = (leaves, _g3_fuse(src, dtype))
        per[dtype] = hit
    return {**hit[1], "emb": src["emb"]}  # the input lookup reads the model's own table


def _rms(x, scale):
    """Tunix's RMSNorm, float32."""
    var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(var + 1e-06) * (1 + scale)


def _rope_tables(g: _G3, positions) -> dict:
    """``(sin, cos)`` per distinct ``(base, scale)`` of the layers (Gemma 3 has two), for
    ``positions [..., B, T]``, each ``[..., B, T, 1, H/2]``."""
    h = g.head_dim
    tables = {}
    for base, scale in set(g.rope):
        timescale = base ** (2 * jnp.arange(0, h // 2) / h)
        inp = positions[..., None] / timescale
        inp = inp[..., None, :] / scale
        tables[(base, scale)] = (jnp.sin(inp), jnp.cos(inp))
    return tables


def _rope(x, sin, cos):
    """Tunix's ``apply_rope`` for ``x [B, T, heads, H]`` with its tables from
    :func:`_rope_tables`."""
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def _mm(x, w):
    """``x @ w.T`` for ``x [..., in]`` and ``w [out, in]``: ``w``'s dtype as operand type,
    float32 results (rows flattened: XLA's CPU dot measured slower on 3-d operands)."""
    y = jax.lax.dot_general(
        x.reshape(-1, x.shape[-1]).astype(w.dtype),
        w,
        (((1,), (1,)), ((), ())),
        preferred_element_type=jnp.float32,
    )
    return y.reshape(*x.shape[:-1], w.shape[0])


def _g3_qkv(g: _G3, i: int, w, x, rope: dict):
    """Pre-norm, fused q/k/v projection, q/k norms and RoPE (``rope`` from
    :func:`_rope_tables`): ``q [B,T,N,H]``, ``k, v [B,T,K,H]``."""
    b, t, _ = x.shape
    n, kh, hd = g.heads, g.kv_heads, g.head_dim
    qkv = _mm(_rms(x, w["pre_attn"]), w["qkv"])
    # q and k heads side by side: one norm and one RoPE instead of two each (decode runs
    # ~800 small ops per step; each costs tens of microseconds on the thread pool)
    qk = qkv[..., : (n + kh) * hd].reshape(b, t, n + kh, hd)
    v = qkv[..., (n + kh) * hd :].reshape(b, t, kh, hd)
    sin, cos = rope[g.rope[i]]
    scaled = jnp.array([g.q_scale] * n + [1.0] * kh, jnp.float32)[:, None]  # k: unscaled
    qk = _rope(_rms(qk, w["qk_norm"]), sin, cos) * scaled
    return qk[:, :, :n], qk[:, :, n:], v


# Cache layouts, named by einsum letters (s = slot, h = head dim), per cache dtype: each is
# the one XLA's CPU dots read without first copying a transposed cache (which they did in
# every layer of every decode step otherwise, for either dtype with the other's layout).
_KV_LAYOUT = {
    jnp.dtype(jnp.float32): ("bkhs", "bksh"),  # keys, values
    jnp.dtype(jnp.bfloat16): ("bksh", "bkhs"),
}


def _kv_layout(dtype) -> tuple[str, str]:
    return _KV_LAYOUT.get(jnp.dtype(dtype), ("bksh", "bksh"))


def _to_layout(x, layout: str):
    """``x [B,T,K,H]`` (new keys or values) to the cache ``layout`` (``T`` as ``s``)."""
    return jnp.transpose(x, (0, 2, 3, 1) if layout == "bkhs" else (0, 2, 1, 3))


def _g3_rest(w, x, q, keys, values, mask):
    """Attention of ``q [B,T,N,H]`` over ``keys`` and ``values`` in the cache layout of
    their dtype (``mask [B,T,S]``), the output projection, the MLP and both residuals: the
    layer's new ``x [B,T,D]``."""
    b, t, n, hd = q.shape
    kh = keys.shape[1]
    k_layout, v_layout = _kv_layout(keys.dtype)
    qg = q.reshape(b, t, kh, n // kh, hd).astype(keys.dtype)
    logits = jnp.einsum(f"btkgh,{k_layout}->btkgs", qg, keys, preferred_element_type=jnp.float32)
    logits = jnp.where(mask[:, :, None, None, :], logits, _K_MASK)
    probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
    enc = jnp.einsum(f"btkgs,{v_layout}->btkgh", probs, values, preferred_element_type=jnp.float32)
    x = x + _rms(_mm(enc.reshape(b, t, n * hd), w["o"]), w["post_attn"])
    gu = _mm(_rms(x, w["pre_ffw"]), w["gate_up"])
    f = gu.shape[-1] // 2
    return x + _rms(_mm(nnx.gelu(gu[..., :f]) * gu[..., f:], w["down"]), w["post_ffw"])


def _g3_window(g: _G3, i: int, mask, key_slots, query_slots):
    """``mask [B,T,S]`` restricted to the sliding window on local layers (slots = positions):
    ``key_slots [S]`` are the slots of ``mask``'s last axis, ``query_slots [T]`` the queries'."""
    if not g.local[i] or not g.window:
        return mask
    return mask & (key_slots[None, :] > query_slots[:, None] - g.window)[None]


def _pad_slots(a, layout: str, size: int):
    """Zero-pad a cache array's slot axis to ``size``."""
    pad = [(0, 0)] * a.ndim
    pad[layout.index("s")] = (0, size - a.shape[layout.index("s")])
    return jnp.pad(a, pad)


def _write_slot(cache, new, layout: str, slot):
    """``cache`` with ``new`` (one slot, same layout) written at ``slot``, in place."""
    start = [0] * cache.ndim
    start[layout.index("s")] = slot
    return jax.lax.dynamic_update_slice(cache, new, start)


def _g3_embed(w, tokens):
    x = w["emb"][(tokens,)]
    return (x * jnp.sqrt(x.shape[-1]).astype(x.dtype)).astype(jnp.float32)


def _g3_logits(w, h):
    """Float32 logits for ``h [B, D]``, vocabulary-major: ``[V, B]`` (tied embedding; Gemma 3
    has no final soft-cap).

    ``E @ h.T``, the transpose of Tunix's ``h @ E.T`` (same products, same sums), on the
    model's table or its bfloat16 copy. Vocabulary-major because XLA's CPU dot runs this
    skinny product much faster with the 262,144 rows as the output's leading axis: at
    ``[32,640] x [262144,640]`` in bf16, 18.2 ms against 27.7 ms for ``h @ E.T`` (which was
    itself faster than ``jnp.dot(h, E.T)``'s 72 ms, a transposed copy of the table first),
    and with the greedy argmax taken down the columns (:func:`_argmax` on axis 0) 19 ms
    against 33 ms (``python -m bench.matmul_rates --decode``). The pickers take
    ``vocab_major=True``.
    """
    e = w.get("emb_out", w["emb"])
    return jax.lax.dot_general(
        e, h.astype(e.dtype), (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )


# XLA's CPU backend updates a bf16 array by converting all of it to f32 and back: the
# one-slot cache write of each decode step became a full pass over every layer's cache
# (93 ms per batch-32 step against 75 ms this way). The cache is kept as the bf16 values'
# uint16 bit patterns instead, which XLA updates in place; the bitcast to bf16 for the
# attention products is a copy of the cache that the dots then read from cache-warm
# memory. (A float32 side buffer flushed once per 16 steps measured slower still: the
# dots read the cold cache at half the speed, and XLA copied the side buffers.)
_CACHE_BITS = {jnp.dtype(jnp.bfloat16): jnp.uint16}


def _to_cache(x, dtype):
    x = x.astype(dtype)
    bits = _CACHE_BITS.get(jnp.dtype(dtype))
    return x if bits is None else jax.lax.bitcast_convert_type(x, bits)


def _from_cache(c):
    return jax.lax.bitcast_convert_type(c, jnp.bfloat16) if c.dtype == jnp.uint16 else c


def _g3_prefill(
    g: _G3,
    w,
    tokens,
    valid,
    row_keys,
    temperature,
    top_p,
    end_ids,
    *,
    cache_len,
    cache_dtype,
    greedy,
    top_k,
    use_top_p,
):
    _TRACES["prefill"] += 1
    b, p = tokens.shape
    positions = jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0).astype(jnp.int32)
    slots = jnp.arange(p)
    mask = valid[:, None, :] & (slots[None, :, None] >= slots[None, None, :])
    x = _g3_embed(w, tokens)
    rope = _rope_tables(g, positions)
    k_layout, v_layout = _kv_layout(cache_dtype)
    cache = []
    for i, lw in enumerate(w["layers"]):
        q, k, v = _g3_qkv(g, i, lw, x, rope)
        k = _to_layout(k, k_layout).astype(cache_dtype)
        v = _to_layout(v, v_layout).astype(cache_dtype)
        x = _g3_rest(lw, x, q, k, v, _g3_window(g, i, mask, slots, slots))
        k = _pad_slots(_to_cache(k, cache_dtype), k_layout, cache_len)
        cache.append((k, _pad_slots(_to_cache(v, cache_dtype), v_layout, cache_len)))
    h = _rms(x[:, -1], w["final"])
    pick = dict(greedy=greedy, top_k=top_k, use_top_p=use_top_p, vocab_major=True)
    first = _pick(_g3_logits(w, h), row_keys, 0, temperature, top_p, **pick, nan_rows=_nan_rows(h))
    return _start(tuple(cache), first, valid, cache_len, end_ids)


def _g3_decode(
    g: _G3,
    w,
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
):
    """Decode steps until ``step == until`` or every row is done; the cache is updated in
    place (``carry`` is donated)."""
    _TRACES["decode"] += 1
    pick = dict(greedy=greedy, top_k=top_k, use_top_p=use_top_p, vocab_major=True)
    b, n_new = carry["out"].shape
    s_len = carry["key_valid"].shape[1]
    p = s_len - n_new
    slots = jnp.arange(s_len)
    dtype = _from_cache(carry["cache"][0][0]).dtype
    k_layout, v_layout = _kv_layout(dtype)
    # RoPE tables for every step of this call, made before the loop: inside it XLA fused
    # sin/cos into each layer's RoPE and recomputed them there (~4 ms of a 75 ms step)
    offsets = jnp.arange(n_new, dtype=jnp.int32)[:, None, None] - 1
    rope_all = _rope_tables(g, carry["prompt_len"][None, :, None] + offsets)

    def _at(table, step):  # the step's row of a [n_new, ...] table
        return jax.lax.dynamic_index_in_dim(table, step, axis=0, keepdims=False)

    def cond(c):
        return (c["step"] < until) & ~jnp.all(c["done"])

    def body(c, seen: int):
        """One step; attention reads only the first ``seen`` slots (those written so far
        lie below it: see the phases below)."""
        step = c["step"]
        slot = p + step - 1
        last = jax.lax.dynamic_index_in_dim(c["out"], step - 1, axis=1, keepdims=True)
        key_valid = jax.lax.dynamic_update_slice(c["key_valid"], jnp.ones((b, 1), bool), (0, slot))
        mask = key_valid[:, None, :seen]
        x = _g3_embed(w, last)
        rope = {k: tuple(_at(t, step) for t in v) for k, v in rope_all.items()}
        cache = []
        for i, (lw, (kc, vc)) in enumerate(zip(w["layers"], c["cache"], strict=True)):
            q, k, v = _g3_qkv(g, i, lw, x, rope)
            kc = _write_slot(kc, _to_cache(_to_layout(k, k_layout), dtype), k_layout, slot)
            vc = _write_slot(vc, _to_cache(_to_layout(v, v_layout), dtype), v_layout, slot)
            window = _g3_window(g, i, mask, slots[:seen], slot[None])
            keys = _from_cache(_first_slots(kc, k_layout, seen))
            values = _from_cache(_first_slots(vc, v_layout, seen))
            x = _g3_rest(lw, x, q, keys, values, window)
            cache.append((kc, vc))
        h = _rms(x[:, 0], w["final"])
        logits = _g3_logits(w, h)
        tok = _pick(logits, row_keys, step, temperature, top_p, **pick, nan_rows=_nan_rows(h))
        return _advance(c, tok, tuple(cache), key_valid, pad_id, end_ids)

    # Attention over the whole cache would read slots not written yet; in phases of
    # n_new / _PHASES steps, each reads only the slots below its end: the same loop body
    # traced once per phase (compile time grows with it; reading 224 slots per step at
    # batch 32 was ~25% of a bf16 step, this reads ~70% of that on average for 2 phases).
    phases = max(1, min(_PHASES, n_new // 16))
    for j in range(1, phases + 1):
        last_step = n_new * j // phases  # this phase's final step writes slot p + last - 1
        carry = jax.lax.while_loop(
            lambda c, last_step=last_step: cond(c) & (c["step"] <= last_step),
            partial(body, seen=p + last_step),
            carry,
        )
    return carry


_PHASES = 2


def _first_slots(a, layout: str, n: int):
    """A cache array's first ``n`` slots."""
    return jax.lax.slice_in_dim(a, 0, n, axis=layout.index("s"))


# Compiled functions per module object and parameter structure. The GraphDef cannot be a
# jit static argument (Tunix's ModelConfig is unhashable), so each entry closes over it.
_JITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(module, compute_dtype: str):
    """``(params, prefill, decode, extra static args)`` for ``module``, reusing compiled code.

    Tunix Gemma 3 text models run the decoder above on prepared weights; other models run
    Tunix's own layers (``compute_dtype="bfloat16"`` then only lowers the output projection).
    """
    g = _g3_static(module)
    if g is not None:
        if g not in _G3_JITTED:
            _enable_persistent_cache()
            _G3_JITTED[g] = (
                jax.jit(
                    partial(_g3_prefill, g),
                    static_argnames=(*_STATIC, "cache_len", "cache_dtype"),
                ),
                jax.jit(
                    partial(_g3_decode, g), static_argnames=_STATIC, donate_argnames=("carry",)
                ),
            )
        w = _g3_weights(module, compute_dtype)
        cache_dtype = w["emb"].dtype if compute_dtype == "float32" else jnp.dtype(compute_dtype)
        return (w, *_G3_JITTED[g], {"cache_dtype": cache_dtype})
    graphdef, state = nnx.split(module)
    per_module = _JITTED.setdefault(module, {})
    key = jax.tree_util.tree_structure(state)
    if key not in per_module:
        _enable_persistent_cache()
        prefill = jax.jit(partial(_prefill, graphdef), static_argnames=(*_STATIC, "cache_len"))
        decode = jax.jit(
            partial(_decode, graphdef), static_argnames=_STATIC, donate_argnames=("carry",)
        )
        per_module[key] = (prefill, decode)
    emb_lp = _bf16_embedding(module) if compute_dtype == "bfloat16" else None
    return ((state, emb_lp), *per_module[key], {})


_G3_JITTED: dict[_G3, tuple] = {}


# --------------------------------------------------------------------------- host side


def encode_prompts(model, prompts, *, template="chat", schema="tags", raw=False) -> list[list[int]]:
    """Token ids per prompt: text through :func:`cotune.format.prompt_segments` (one BOS),
    ``raw=True`` text as-is after one BOS, id lists untouched."""
    tok = model.tokenizer
    out = []
    for p in prompts:
        if isinstance(p, str):
            if raw:
                out.append([tok.bos_id, *tok.encode(p)])
            else:
                segs = fmt.prompt_segments(p, template=template, schema=schema)
                out.append(tok.encode_segments(segs, add_bos=True))
        else:
            ids = [int(i) for i in p]
            if not ids:
                raise ValueError("empty prompt: give at least one token id")
            out.append(ids)
    return out


def _find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """Earliest stop string in ``text`` as ``(cut, stop)``; closing tags stay in the text."""
    best = None
    for s in stops:
        i = text.find(s)
        if i >= 0:
            cut = i + len(s) if s.startswith("</") else i
            if best is None or i < best[0]:
                best = (i, cut, s)
    return None if best is None else (best[1], best[2])


_MERGED: dict[int, tuple[object, object, float]] = {}


def without_lora(model):
    """The model with any Qwix LoRA adapters folded into its weights (cached).

    The decoder here runs the Tunix submodules directly for its prefill/decode split, and
    Qwix only injects adapters inside ``Gemma3.__call__``: an unmerged LoRA model would
    silently generate like its base. Folding ``W + (alpha/rank) A@B`` once is exact in
    float32 and makes decoding as fast as the base model's. One merged copy is kept per
    base module; when the adapters change (RL updates them every step) its weights are
    updated in place, so the compiled prefill/decode (cached per module) are reused.
    """
    from flax import nnx

    lora = jax.tree.leaves(nnx.state(model.module, nnx.LoRAParam))
    if not lora:
        return model
    checksum = float(sum(jnp.sum(jnp.abs(x)) for x in lora))
    hit = _MERGED.get(id(model.module))
    if hit is not None and hit[0] is model.module and hit[2] == checksum:
        return hit[1]
    from cotune.export import merge_lora  # same floor: the one LoRA merge in cotune

    fresh = merge_lora(model)
    if hit is not None and hit[0] is model.module:
        nnx.update(hit[1].module, nnx.state(fresh.module))
        merged = hit[1]
    else:
        _MERGED.clear()  # keep at most one merged copy alive (a 270M copy is ~1 GB)
        merged = fresh
    _MERGED[id(model.module)] = (model.module, merged, checksum)
    return merged


def generate_detailed(
    model,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    template: fmt.Template = "chat",
    schema: fmt.Schema = "tags",
    stop_strings: Sequence[str] | None = None,
    batch_size: int | None = None,
    on_token: Callable[[int, str], None] | None = None,
    raw: bool = False,
    chunk: int | None = None,
    compute_dtype: Literal["float32", "bfloat16"] | None = None,
) -> list[Generation]:
    """Like :func:`generate` but returns :class:`Generation` records (ids, finish reason).

    ``compute_dtype``: ``"float32"`` decodes exactly as the float32 model (token for token
    the full forward's greedy choice); ``"bfloat16"`` keeps weights, KV cache and output
    projection in bfloat16 (float32 accumulation), ~2.7x faster at batch 32. ``None`` (the
    default) is ``"bfloat16"`` on Tunix Gemma 3 models and ``"float32"`` on others, whose
    Tunix layers it would only speed up in the output projection.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if (
        temperature < 0
        or (top_k is not None and top_k < 1)
        or (top_p is not None and not 0 < top_p <= 1)
    ):
        raise ValueError("need temperature >= 0, top_k >= 1, 0 < top_p <= 1")
    if compute_dtype not in (None, "float32", "bfloat16"):
        raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {compute_dtype!r}")
    model = without_lora(model)
    if compute_dtype is None:
        compute_dtype = "bfloat16" if _g3_static(model.module) is not None else "float32"
    ids = encode_prompts(model, prompts, template=template, schema=schema, raw=raw)
    if stop_strings is None:
        stop_strings = (
            []
            if raw or not isinstance(prompts[0] if prompts else "", str)
            else fmt.stop_strings(schema)
        )
    stops = [s for s in stop_strings if s]
    greedy = temperature == 0.0 or top_k == 1
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths batch together
    bs = batch_size or len(ids) or 1
    results: dict[int, Generation] = {}
    for start in range(0, len(order), bs):
        rows = order[start : start + bs]
        for i, g in zip(
            rows,
            _generate_batch(
                model,
                [ids[i] for i in rows],
                rows,
                max_new_tokens,
                temperature,
                top_k,
                top_p,
                seed,
                stops,
                on_token,
                greedy,
                chunk,
                compute_dtype,
            ),
            strict=True,
        ):
            results[i] = g
    return [results[i] for i in range(len(ids))]


def generate(model, prompts, **kwargs) -> list[str]:
    """Completions (text) for ``prompts``: see :func:`generate_detailed` for the options.

    Text prompts are wrapped with the reasoning prompt (``template``/``schema``) and stop
    after ``</answer>`` (``cotune.format.stop_strings``) or an end token; ``raw=True``
    sends the text as-is (one BOS, no stop strings unless given).
    """
    return [g.text for g in generate_detailed(model, prompts, **kwargs)]


def _generate_batch(
    model,
    ids,
    row_ids,
    max_new,
    temperature,
    top_k,
    top_p,
    seed,
    stops,
    on_token,
    greedy,
    chunk,
    compute_dtype="float32",
) -> list[Generation]:
    tok = model.tokenizer
    n_real = len(ids)
    # bf16: at least two rows. XLA's CPU dot takes a slow matrix-vector path for one bf16
    # row (the 270M's output projection: 69 ms at one row, 14 ms at two), so a filler row
    # is cheaper; float32's one-row path is fast (24 ms; 32 ms at two). Measured with
    # ``bench/matmul_rates.py --decode --m 1`` / ``--m 2``; a whole bf16 step of a one-row
    # batch went from 47.8 to 34.9 ms (``bench/profile_decode.py --batch 1``, before and
    # after).
    b = bucket(n_real, minimum=2 if compute_dtype == "bfloat16" else 1)
    p = bucket_len(max(len(x) for x in ids))
    n = bucket(max_new)
    tokens = np.full((b, p), tok.pad_id, np.int32)
    valid = np.zeros((b, p), bool)
    for r, x in enumerate(ids):
        tokens[r, p - len(x) :] = x
        valid[r, p - len(x) :] = True
    tokens[n_real:, -1], valid[n_real:, -1] = tok.bos_id, True  # filler rows: one BOS each
    params, prefill, decode, extra = _compiled(model.module, compute_dtype)
    row_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(
        jnp.asarray(list(row_ids) + [-1] * (b - n_real), jnp.int32)
    )
    static = {
        "greedy": greedy,
        "top_k": None if greedy else top_k,
        "use_top_p": (not greedy) and top_p is not None and top_p < 1.0,
    }
    temp = jnp.float32(max(temperature, 1e-6))
    topp = jnp.float32(top_p if top_p is not None else 1.0)
    end_ids = jnp.asarray(tok.end_ids, jnp.int32)
    carry = prefill(
        params,
        jnp.asarray(tokens),
        jnp.asarray(valid),
        row_keys,
        temp,
        topp,
        end_ids,
        cache_len=p + n,
        **static,
        **extra,
    )
    if n_real < b:
        carry["done"] = carry["done"].at[n_real:].set(True)
    step_chunk = chunk or (1 if on_token else (8 if stops else max_new))
    stopped: dict[int, tuple[int, str]] = {}  # row -> (text cut, stop string)
    shown = [""] * n_real
    while True:
        out, step, done = np.asarray(carry["out"]), int(carry["step"]), np.asarray(carry["done"])
        if stops or on_token:
            for r in range(n_real):
                if r in stopped:
                    continue
                text = tok.decode(_until_end(out[r, :step], tok.end_ids))
                hit = _find_stop(text, stops) if stops else None
                if hit is not None:
                    stopped[r] = hit
                    text = text[: hit[0]]
                if on_token and len(text) > len(shown[r]) and text.startswith(shown[r]):
                    on_token(row_ids[r], text[len(shown[r]) :])
                    shown[r] = text
            if stopped:
                done = done | np.isin(np.arange(b), list(stopped))
                carry["done"] = jnp.asarray(done)
        if done.all() or step >= max_new:
            break
        carry = decode(
            params,
            carry,
            row_keys,
            temp,
            topp,
            end_ids,
            jnp.int32(min(step + step_chunk, max_new)),
            jnp.int32(tok.pad_id),
            **static,
        )
    results = []
    for r in range(n_real):
        gen = [int(t) for t in out[r, :step]]
        end_at = next((k for k, t in enumerate(gen) if t in tok.end_ids), None)
        if r in stopped:
            cut, _ = stopped[r]
            k = _tokens_covering(tok, gen, cut)
            text = tok.decode(gen[:k])[:cut]
            results.append(Generation(text, gen[:k], "stop", len(ids[r])))
        elif end_at is not None:
            results.append(
                Generation(tok.decode(gen[:end_at]), gen[: end_at + 1], "end", len(ids[r]))
            )
        else:
            gen = gen[:max_new]
            results.append(Generation(tok.decode(gen), gen, "length", len(ids[r])))
    return results


@jax.jit
def _to_bf16(x):
    return x.astype(jnp.bfloat16)


# bfloat16 copies of each module's embedding, with the float32 array they were made from.
_EMB_LP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _bf16_embedding(module):
    """The bfloat16 embedding for ``compute_dtype="bfloat16"`` (Tunix path), cast once per
    weights.

    Casting reads the 670 MB float32 table (262k x 640); doing it per call (or per step)
    would cost as much as a decode step, so the copy is kept until the weights change
    (checked by array identity: training or loading replaces the array object).
    """
    src = module.embedder.input_embedding.get_value()
    cached = _EMB_LP.get(module)
    if cached is None or cached[0] is not src:
        cached = (src, _to_bf16(src))
        _EMB_LP[module] = cached
    return cached[1]


_CACHE_ON = False


def _enable_persistent_cache() -> None:
    """Turn on cotune's persistent JAX compilation cache (``~/.cache/cotune/jax``) once.

    The first generate call compiles prefill + decode (~15-45 s for the 270M on 2 cores);
    with the cache, later processes reuse them. Reuses the trainer's switch so both share
    one directory and one ``COTUNE_JAX_CACHE`` override.
    """
    global _CACHE_ON
    if _CACHE_ON:
        return
    _CACHE_ON = True
    try:
        from cotune.train.sft import enable_compilation_cache
    except Exception:  # noqa: BLE001 - a cache is an optimisation, never a failure
        return
    enable_compilation_cache()


def _until_end(ids, end_ids) -> list[int]:
    out = []
    for t in ids:
        if int(t) in end_ids:
            break
        out.append(int(t))
    return out


def _tokens_covering(tok, ids: list[int], n_chars: int) -> int:
    """Fewest leading tokens whose decoded text reaches ``n_chars`` characters."""
    for k in range(1, len(ids) + 1):
        if len(tok.decode(ids[:k])) >= n_chars:
            return k
    return len(ids)
