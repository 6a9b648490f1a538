"""cotune's Gemma 3 decoder: Tunix's Gemma 3 math on weights prepared once for decoding.

Decoding spends its time in memory traffic and small ops, not FLOPs. Through Tunix's layer
calls a batch-32 step costs several times what its matmuls need (weights re-laid out every
step, the KV cache copied for its attention einsums, a scalar argmax, no way to keep weights
or cache in bfloat16). For Tunix's Gemma 3 text models the same math runs here on weights
prepared once (:func:`fuse`: q/k/v and gate/up fused, ``[out, in]``), a cache laid out for
XLA's dots and written in place (:mod:`cotune.generate.kv_cache`), and a vectorised argmax
(:mod:`cotune.generate.sampling`).

``compute_dtype="float32"`` reproduces the Tunix forward token for token (proved against a
no-cache greedy loop through ``Gemma3.__call__`` in ``tests/test_generate.py``);
``"bfloat16"`` stores weights, cache and the output projection in bfloat16 with float32
accumulation, norms, RoPE and softmax (proved equal to bf16 recomputation there). Speeds
and bf16's agreement with float32: bench/results/ and ``bench/compare_generate.py``.

Other models (Tunix's Gemma 1/2, Gemma 3 with a vision encoder) decode through
:mod:`cotune.generate.tunix_layers`; :func:`facts` says which decoder a module gets. All
functions here are pure: compiled functions and prepared weights are kept by
:mod:`cotune.generate.caches`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from cotune.generate import kv_cache
from cotune.generate.carry import advance, running, start
from cotune.generate.sampling import nan_rows, pick

_K_MASK = -2.3819763e38  # Tunix's masked-logit value
# Decode phases per call (see :func:`decode`): more phases read fewer unwritten cache
# slots per step but trace the loop body once more each.
PHASES = 2


@dataclass(frozen=True)
class Facts:
    """Static facts of a Tunix Gemma 3 text model (a jit static argument)."""

    heads: int
    kv_heads: int
    head_dim: int
    window: int
    q_scale: float
    local: tuple[bool, ...]
    rope: tuple[tuple[float, float], ...]  # (base frequency, scale factor) per layer


def facts(module) -> Facts | None:
    """The :class:`Facts` of a Tunix Gemma 3 text module, ``None`` for anything else."""
    from tunix.models.gemma3 import model as g3

    if type(module) is not g3.Gemma3 or getattr(module, "vision_encoder", None) is not None:
        return None
    cfg = module.config
    attns = [layer.attn for layer in module.layers]
    if any(a.use_qkv_einsum or getattr(a, "q_einsum", None) is None for a in attns):
        return None
    local = tuple(a.attn_type == g3.AttentionType.LOCAL_SLIDING for a in attns)
    return Facts(
        heads=cfg.num_heads,
        kv_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        window=int(cfg.sliding_window_size or 0),
        q_scale=float(attns[0].query_pre_attn_scalar),
        local=local,
        rope=tuple((float(a.rope_base_frequency), float(a.rope_scale_factor)) for a in attns),
    )


def sources(module) -> dict:
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


def fuse(src: dict, dtype: str) -> dict:
    """Decode weights from :func:`sources`: fused, ``[out, in]``, matmuls in ``dtype``.

    ``[out, in]`` (contracting each weight's last axis, as ``x @ E.T`` does for the
    embedding) measured fastest on XLA's CPU dots for these skinny products
    (``python -m bench.matmul_rates --decode``).
    """
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


def _rms(x, scale):
    """Tunix's RMSNorm, float32."""
    var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(var + 1e-06) * (1 + scale)


def _rope_tables(g: Facts, positions) -> dict:
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


def _qkv(g: Facts, i: int, w, x, rope: dict):
    """Pre-norm, fused q/k/v projection, q/k norms and RoPE (``rope`` from
    :func:`_rope_tables`): ``q [B,T,N,H]``, ``k, v [B,T,K,H]``."""
    b, t, _ = x.shape
    n, kh, hd = g.heads, g.kv_heads, g.head_dim
    qkv = _mm(_rms(x, w["pre_attn"]), w["qkv"])
    # q and k heads side by side: one norm and one RoPE instead of two each (decode runs
    # hundreds of small ops per step, each costing tens of microseconds on the thread pool)
    qk = qkv[..., : (n + kh) * hd].reshape(b, t, n + kh, hd)
    v = qkv[..., (n + kh) * hd :].reshape(b, t, kh, hd)
    sin, cos = rope[g.rope[i]]
    scaled = jnp.array([g.q_scale] * n + [1.0] * kh, jnp.float32)[:, None]  # k: unscaled
    qk = _rope(_rms(qk, w["qk_norm"]), sin, cos) * scaled
    return qk[:, :, :n], qk[:, :, n:], v


def attend(w, x, q, keys, values, mask):
    """Attention of ``q [B,T,N,H]`` over ``keys`` and ``values`` in the cache layout of
    their dtype (``mask [B,T,S]``), the output projection, the MLP and both residuals: the
    layer's new ``x [B,T,D]``."""
    b, t, n, hd = q.shape
    kh = keys.shape[1]
    k_layout, v_layout = kv_cache.layouts(keys.dtype)
    qg = q.reshape(b, t, kh, n // kh, hd).astype(keys.dtype)
    logits = jnp.einsum(f"btkgh,{k_layout}->btkgs", qg, keys, preferred_element_type=jnp.float32)
    logits = jnp.where(mask[:, :, None, None, :], logits, _K_MASK)
    probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
    enc = jnp.einsum(f"btkgs,{v_layout}->btkgh", probs, values, preferred_element_type=jnp.float32)
    x = x + _rms(_mm(enc.reshape(b, t, n * hd), w["o"]), w["post_attn"])
    gu = _mm(_rms(x, w["pre_ffw"]), w["gate_up"])
    f = gu.shape[-1] // 2
    return x + _rms(_mm(nnx.gelu(gu[..., :f]) * gu[..., f:], w["down"]), w["post_ffw"])


def _window(g: Facts, i: int, mask, key_slots, query_slots):
    """``mask [B,T,S]`` restricted to the sliding window on local layers (slots = positions):
    ``key_slots [S]`` are the slots of ``mask``'s last axis, ``query_slots [T]`` the queries'."""
    if not g.local[i] or not g.window:
        return mask
    return mask & (key_slots[None, :] > query_slots[:, None] - g.window)[None]


def _embed(w, tokens):
    x = w["emb"][(tokens,)]
    return (x * jnp.sqrt(x.shape[-1]).astype(x.dtype)).astype(jnp.float32)


def logits(w, h):
    """Float32 logits for ``h [B, D]``, vocabulary-major: ``[V, B]`` (tied embedding; Gemma 3
    has no final soft-cap).

    ``E @ h.T``, the transpose of Tunix's ``h @ E.T`` (same products, same sums), on the
    model's table or its bfloat16 copy. Vocabulary-major because XLA's CPU dot runs this
    skinny product much faster with the 262,144 rows as the output's leading axis, and the
    greedy argmax then runs down the columns (``python -m bench.matmul_rates --decode``
    times both orders). The pickers take ``vocab_major=True``.
    """
    e = w.get("emb_out", w["emb"])
    return jax.lax.dot_general(
        e, h.astype(e.dtype), (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )


@dataclass(frozen=True)
class Parts:
    """The two pieces of a decode step a profiler may swap (``bench/profile_decode.py``
    through :func:`cotune.generate.caches.decoder_parts`): the output projection and a
    layer's attention + MLP. Hashable, so compiled code is kept per parts."""

    logits: Callable = logits
    attend: Callable = attend


def prefill(
    g: Facts,
    parts: Parts,
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
    """The left-padded prompts ``tokens [B, P]`` through every layer at once: the cache for
    ``cache_len`` slots and each row's first token, as the decode loop's carry."""
    b, p = tokens.shape
    positions = jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0).astype(jnp.int32)
    slots = jnp.arange(p)
    mask = valid[:, None, :] & (slots[None, :, None] >= slots[None, None, :])
    x = _embed(w, tokens)
    rope = _rope_tables(g, positions)
    k_layout, v_layout = kv_cache.layouts(cache_dtype)
    cache = []
    for i, lw in enumerate(w["layers"]):
        q, k, v = _qkv(g, i, lw, x, rope)
        k = kv_cache.to_layout(k, k_layout).astype(cache_dtype)
        v = kv_cache.to_layout(v, v_layout).astype(cache_dtype)
        x = parts.attend(lw, x, q, k, v, _window(g, i, mask, slots, slots))
        k = kv_cache.pad_slots(kv_cache.stored(k, cache_dtype), k_layout, cache_len)
        v = kv_cache.pad_slots(kv_cache.stored(v, cache_dtype), v_layout, cache_len)
        cache.append((k, v))
    h = _rms(x[:, -1], w["final"])
    kw = dict(greedy=greedy, top_k=top_k, use_top_p=use_top_p, vocab_major=True)
    first = pick(parts.logits(w, h), row_keys, 0, temperature, top_p, **kw, nan_rows=nan_rows(h))
    return start(tuple(cache), first, valid, cache_len, end_ids)


def decode(
    g: Facts,
    parts: Parts,
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
    steps: int | None = None,
):
    """Decode steps until ``step == until`` or every row is done; the cache is updated in
    place (``carry`` is donated).

    ``steps`` (static): the call runs at most that many steps, so its RoPE tables cover
    only those. A call that may run every remaining step (``None``) makes the tables for
    all ``n_new`` steps, ``[n_new, B, ...]`` sines and cosines: negligible once per
    generation, but a large share of a one-step call, which is what a host that must see
    every step (the calculator) makes. Measured alone, the tables for batch 32, 512 new
    tokens and the 270M's head size take about 20 ms on the 2-core CPU; a decode step of
    the 270M at batch 32 takes about 65 ms (bench/results/generate.json).
    """
    kw = dict(greedy=greedy, top_k=top_k, use_top_p=use_top_p, vocab_major=True)
    b, n_new = carry["out"].shape
    s_len = carry["key_valid"].shape[1]
    p = s_len - n_new
    slots = jnp.arange(s_len)
    dtype = kv_cache.loaded(carry["cache"][0][0]).dtype
    k_layout, v_layout = kv_cache.layouts(dtype)
    # RoPE tables for every step of this call, made before the loop: inside it XLA fused
    # sin/cos into each layer's RoPE and recomputed them there
    if steps is None:
        first, offsets = None, jnp.arange(n_new, dtype=jnp.int32)[:, None, None] - 1
    else:
        first = carry["step"]  # tables for steps first .. first + steps - 1
        until = jnp.minimum(until, first + steps)
        offsets = first + jnp.arange(steps, dtype=jnp.int32)[:, None, None] - 1
    rope_all = _rope_tables(g, carry["prompt_len"][None, :, None] + offsets)

    def _at(table, step):  # the step's row of a [n_new or steps, ...] table
        i = step if first is None else step - first
        return jax.lax.dynamic_index_in_dim(table, i, axis=0, keepdims=False)

    def body(c, seen: int):
        """One step; attention reads only the first ``seen`` slots (those written so far
        lie below it: see the phases below)."""
        step = c["step"]
        slot = p + step - 1
        last = jax.lax.dynamic_index_in_dim(c["out"], step - 1, axis=1, keepdims=True)
        key_valid = jax.lax.dynamic_update_slice(c["key_valid"], jnp.ones((b, 1), bool), (0, slot))
        mask = key_valid[:, None, :seen]
        x = _embed(w, last)
        rope = {k: tuple(_at(t, step) for t in v) for k, v in rope_all.items()}
        cache = []
        for i, (lw, (kc, vc)) in enumerate(zip(w["layers"], c["cache"], strict=True)):
            q, k, v = _qkv(g, i, lw, x, rope)
            k = kv_cache.stored(kv_cache.to_layout(k, k_layout), dtype)
            kc = kv_cache.write_slot(kc, k, k_layout, slot)
            v = kv_cache.stored(kv_cache.to_layout(v, v_layout), dtype)
            vc = kv_cache.write_slot(vc, v, v_layout, slot)
            window = _window(g, i, mask, slots[:seen], slot[None])
            keys = kv_cache.loaded(kv_cache.first_slots(kc, k_layout, seen))
            values = kv_cache.loaded(kv_cache.first_slots(vc, v_layout, seen))
            x = parts.attend(lw, x, q, keys, values, window)
            cache.append((kc, vc))
        h = _rms(x[:, 0], w["final"])
        tok = pick(
            parts.logits(w, h), row_keys, step, temperature, top_p, **kw, nan_rows=nan_rows(h)
        )
        return advance(c, tok, tuple(cache), key_valid, pad_id, end_ids)

    # Attention over the whole cache would read slots not written yet; in PHASES phases of
    # n_new / PHASES steps, each reads only the slots below its end: the same loop body
    # traced once per phase.
    phases = max(1, min(PHASES, n_new // 16))
    for j in range(1, phases + 1):
        last_step = n_new * j // phases  # this phase's final step writes slot p + last - 1
        carry = jax.lax.while_loop(
            lambda c, last_step=last_step: running(c, until) & (c["step"] <= last_step),
            partial(body, seen=p + last_step),
            carry,
        )
    return carry
