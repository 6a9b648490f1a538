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
* shapes are bucketed (batch to a power of two, prompt and new-token lengths to powers of
  two >= 16) so repeated calls reuse compiled code; :func:`compile_counts` counts traces.
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

    ``emb_lp`` is an optional bfloat16 copy of the embedding (``logits_dtype="bfloat16"``):
    the 262k-wide projection is the largest matmul per token and bf16 halves its memory
    traffic. Off by default: near-ties may resolve differently from the float32 model, and
    on this 2-core CPU (under load) it measured no faster for ``[B,640] @ [640,262144]``.
    """
    if emb_lp is None:
        logits = module.embedder.decode(h).astype(jnp.float32)
    else:
        logits = jnp.dot(h.astype(emb_lp.dtype), emb_lp.T, preferred_element_type=jnp.float32)
    cap = getattr(module, "final_logits_softcap", None)
    if cap is not None:
        logits = jnp.tanh(logits / cap) * cap
    return logits


def _sample(logits, keys, temperature, top_p, *, greedy: bool, top_k: int | None, use_top_p: bool):
    """One token per row. ``keys`` are per-row so a row's draw does not depend on its batch."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
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


def _prefill(
    graphdef,
    state,
    emb_lp,
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
    keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, 0)
    first = _sample(
        logits, keys, temperature, top_p, greedy=greedy, top_k=top_k, use_top_p=use_top_p
    )
    n_new = cache_len - p
    out = jnp.zeros((b, n_new), jnp.int32).at[:, 0].set(first)
    return {
        "cache": cache,
        "out": out,
        "step": jnp.array(1, jnp.int32),
        "done": jnp.isin(first, end_ids),
        "key_valid": key_valid,
        "prompt_len": valid.sum(axis=-1).astype(jnp.int32),
    }


def _decode(
    graphdef,
    state,
    emb_lp,
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
    module = nnx.merge(graphdef, state)
    b, n_new = carry["out"].shape
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
        keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, step)
        tok = _sample(
            logits, keys, temperature, top_p, greedy=greedy, top_k=top_k, use_top_p=use_top_p
        )
        tok = jnp.where(c["done"], pad_id, tok)
        out = jax.lax.dynamic_update_index_in_dim(c["out"], tok, step, axis=1)
        return {
            **c,
            "cache": cache,
            "out": out,
            "step": step + 1,
            "key_valid": key_valid,
            "done": c["done"] | jnp.isin(tok, end_ids),
        }

    return jax.lax.while_loop(cond, body, carry)


# Compiled functions per module object and parameter structure. The GraphDef cannot be a
# jit static argument (Tunix's ModelConfig is unhashable), so each entry closes over it.
_JITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(module):
    """``(graphdef, state, prefill, decode)`` for ``module``, reusing compiled code."""
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
    return (graphdef, state, *per_module[key])


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
    logits_dtype: Literal["float32", "bfloat16"] = "float32",
) -> list[Generation]:
    """Like :func:`generate` but returns :class:`Generation` records (ids, finish reason)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if (
        temperature < 0
        or (top_k is not None and top_k < 1)
        or (top_p is not None and not 0 < top_p <= 1)
    ):
        raise ValueError("need temperature >= 0, top_k >= 1, 0 < top_p <= 1")
    model = without_lora(model)
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
                logits_dtype,
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
    logits_dtype="float32",
) -> list[Generation]:
    tok = model.tokenizer
    n_real = len(ids)
    b = bucket(n_real, minimum=1)
    p = bucket(max(len(x) for x in ids))
    n = bucket(max_new)
    tokens = np.full((b, p), tok.pad_id, np.int32)
    valid = np.zeros((b, p), bool)
    for r, x in enumerate(ids):
        tokens[r, p - len(x) :] = x
        valid[r, p - len(x) :] = True
    tokens[n_real:, -1], valid[n_real:, -1] = tok.bos_id, True  # filler rows: one BOS each
    _, state, prefill, decode = _compiled(model.module)
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
    emb_lp = _bf16_embedding(model.module) if logits_dtype == "bfloat16" else None
    carry = prefill(
        state,
        emb_lp,
        jnp.asarray(tokens),
        jnp.asarray(valid),
        row_keys,
        temp,
        topp,
        end_ids,
        cache_len=p + n,
        **static,
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
            state,
            emb_lp,
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
    """The bfloat16 embedding for ``logits_dtype="bfloat16"``, cast once per weights.

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
