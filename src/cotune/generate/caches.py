"""Everything generation keeps between calls: compiled functions and prepared weights.

Compiling prefill + decode takes seconds to tens of seconds and preparing the Gemma 3
decoder's weights reads every weight, so both are kept, per model and shape, and reused
until the weights change. The decoders themselves (:mod:`~cotune.generate.gemma3`,
:mod:`~cotune.generate.tunix_layers`) are pure functions; this module is the only state:

* compiled Gemma 3 prefill/decode per (:class:`~cotune.generate.gemma3.Facts`, parts);
* compiled Tunix-layer prefill/decode per module object and parameter structure (the
  GraphDef cannot be a jit static argument: Tunix's ModelConfig is unhashable, so each
  entry closes over it);
* prepared Gemma 3 weights per module and dtype, and a bfloat16 embedding per module for
  the Tunix-layer path, each with the arrays it was made from: training, LoRA folding and
  loading all replace the array objects, so identity says when to prepare again;
* how many times each function was traced (:func:`compile_counts`), which tests use to
  prove that same-bucket calls and adapter updates reuse compiled code.

The persistent compile cache (:func:`cotune.runtime.enable_compilation_cache`) is turned
on before the first compile, so later processes reuse these compiles too.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import weakref
from collections.abc import Callable, Iterator
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from cotune import runtime
from cotune.generate import gemma3, tunix_layers
from cotune.generate.sampling import STATIC

_TRACES: collections.Counter[str] = collections.Counter()
_G3_JITTED: dict[tuple[gemma3.Facts, gemma3.Parts], tuple] = {}
_JITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_G3_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_EMB_LP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PARTS = [gemma3.Parts()]  # the parts new Gemma 3 compiles use (decoder_parts)


def compile_counts() -> dict[str, int]:
    """How many times the prefill and decode functions were traced (= compiled)."""
    return dict(_TRACES)


def _counted(name: str, fn: Callable) -> Callable:
    """``fn``, counting its traces under ``name`` (its body runs once per trace)."""

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        _TRACES[name] += 1
        return fn(*args, **kwargs)

    return traced


_fuse = jax.jit(_counted("weights", gemma3.fuse), static_argnames="dtype")
_to_bf16 = jax.jit(lambda x: x.astype(jnp.bfloat16))


@contextlib.contextmanager
def decoder_parts(logits: Callable | None = None, attend: Callable | None = None) -> Iterator[None]:
    """Generate with the Gemma 3 decoder's output projection and/or per-layer attention +
    MLP replaced (signatures of :func:`gemma3.logits` and :func:`gemma3.attend`), to time a
    step without them (``bench/profile_decode.py``). The tokens are then meaningless."""
    default = gemma3.Parts()
    _PARTS.append(gemma3.Parts(logits=logits or default.logits, attend=attend or default.attend))
    try:
        yield
    finally:
        _PARTS.pop()


def gemma3_weights(module, dtype: str) -> dict:
    """Decode weights for ``module`` in ``dtype`` (:func:`gemma3.fuse`), prepared once per
    weights: preparing reads every weight, as much memory traffic as a decode step."""
    src = gemma3.sources(module)
    leaves = jax.tree.leaves(src)
    per = _G3_WEIGHTS.setdefault(module, {})
    hit = per.get(dtype)
    if (
        hit is None
        or len(hit[0]) != len(leaves)
        or any(a is not b for a, b in zip(hit[0], leaves, strict=True))
    ):
        hit = (leaves, _fuse(src, dtype))
        per[dtype] = hit
    return {**hit[1], "emb": src["emb"]}  # the input lookup reads the model's own table


def bf16_embedding(module):
    """The bfloat16 embedding for the Tunix-layer path's bf16 output projection, cast once
    per weights: casting reads the whole float32 table, as much as a decode step."""
    src = module.embedder.input_embedding.get_value()
    cached = _EMB_LP.get(module)
    if cached is None or cached[0] is not src:
        cached = (src, _to_bf16(src))
        _EMB_LP[module] = cached
    return cached[1]


def compiled(module, compute_dtype: str) -> tuple:
    """``(params, prefill, decode, extra static args)`` for ``module``, reusing compiled
    code: the Gemma 3 decoder for Tunix Gemma 3 text models, Tunix's layers for others
    (where ``compute_dtype="bfloat16"`` only lowers the output projection)."""
    g = gemma3.facts(module)
    if g is not None:
        key = (g, _PARTS[-1])
        if key not in _G3_JITTED:
            runtime.enable_compilation_cache()
            _G3_JITTED[key] = (
                jax.jit(
                    partial(_counted("prefill", gemma3.prefill), *key),
                    static_argnames=(*STATIC, "cache_len", "cache_dtype"),
                ),
                jax.jit(
                    partial(_counted("decode", gemma3.decode), *key),
                    static_argnames=(*STATIC, "steps"),
                    donate_argnames=("carry",),
                ),
            )
        w = gemma3_weights(module, compute_dtype)
        cache_dtype = w["emb"].dtype if compute_dtype == "float32" else jnp.dtype(compute_dtype)
        return (w, *_G3_JITTED[key], {"cache_dtype": cache_dtype})
    graphdef, state = nnx.split(module)
    per_module = _JITTED.setdefault(module, {})
    key = jax.tree_util.tree_structure(state)
    if key not in per_module:
        runtime.enable_compilation_cache()
        per_module[key] = (
            jax.jit(
                partial(_counted("prefill", tunix_layers.prefill), graphdef),
                static_argnames=(*STATIC, "cache_len"),
            ),
            jax.jit(
                partial(_counted("decode", tunix_layers.decode), graphdef),
                static_argnames=(*STATIC, "steps"),
                donate_argnames=("carry",),
            ),
        )
    emb_lp = bf16_embedding(module) if compute_dtype == "bfloat16" else None
    return ((state, emb_lp), *per_module[key], {})
