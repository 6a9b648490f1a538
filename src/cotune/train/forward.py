"""The training forward: hidden states with LoRA applied, projections in bf16.

Training must not call ``Gemma3.__call__``: it computes logits for every position through
the 262k-wide tied embedding, the single largest cost per token, while the loss
(``cotune.train.loss``) needs hidden states at the trained positions only.
:func:`hidden_states` runs the Tunix submodules (embedder encode, decoder layers, final
norm) instead and stops before the output projection. Qwix applies LoRA by intercepting
matmuls inside the wrapped ``__call__`` only, so this forward is wrapped with the same Qwix
interceptors (:func:`_lora_intercepted`, the only use of a private Qwix helper in cotune),
or, with bf16 projections (:func:`set_bf16_matmul`), the projections add the adapters
themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from cotune.lora import SCALE_ATTR, provider_of, trainable_filter

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
    if uses_explicit_lora(module):
        return _hidden_plain(module, tokens, positions, mask)
    fn = _HIDDEN_FNS.get(type(module))
    if fn is None:  # Qwix makes one class per application, holding its provider
        provider = provider_of(module)
        fn = _hidden_plain if provider is None else _lora_intercepted(provider)
        _HIDDEN_FNS[type(module)] = fn
    return fn(module, tokens, positions, mask)


# --------------------------------------------------------------------------- bf16 matmuls
#
# Why a custom VJP: XLA's CPU backend multiplies bf16 operands with float32 accumulation
# several times faster than float32 ones, but autodiff of
# ``einsum(x_bf16, w_bf16, preferred=f32)`` takes the float32 cotangent into the transposed
# product, which then runs in float32 (and converts the weight every step). Here every
# backward product is bf16 x bf16 with float32 accumulation too; the measurements are in
# bench/results/design.md (``python -m bench.profile_train [--f32]`` times the pieces). The
# weight gradient is only computed when something asks for it (full fine-tune); for frozen
# weights XLA drops it as dead code.


def _swap_sides(eq: str) -> tuple[str, str, str]:
    ins, out = eq.split("->")
    x, w = ins.split(",")
    return x, w, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def bf16_einsum(eq: str, x: jax.Array, w: jax.Array) -> jax.Array:
    """``einsum(eq, x, w)`` with bf16 operands and float32 results, forward and backward."""
    return _ORIG_EINSUM(
        eq, x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), preferred_element_type=jnp.float32
    )


def _bf16_einsum_fwd(eq, x, w):
    x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    y = _ORIG_EINSUM(eq, x16, w16, preferred_element_type=jnp.float32)
    return y, (x16, w16, jnp.zeros((), x.dtype), jnp.zeros((), w.dtype))  # dtype carriers


def _bf16_einsum_bwd(eq, res, ct):
    x16, w16, x_like, w_like = res
    xs, ws, out = _swap_sides(eq)
    ct16 = ct.astype(jnp.bfloat16)
    dx = _ORIG_EINSUM(f"{out},{ws}->{xs}", ct16, w16, preferred_element_type=jnp.float32)
    dw = _ORIG_EINSUM(f"{xs},{out}->{ws}", x16, ct16, preferred_element_type=jnp.float32)
    return dx.astype(x_like.dtype), dw.astype(w_like.dtype)


bf16_einsum.defvjp(_bf16_einsum_fwd, _bf16_einsum_bwd)
# Captured at import, before any Qwix interception can patch ``jnp.einsum``: the custom-VJP
# product must stay a plain product (the LoRA term is added explicitly below).
_ORIG_EINSUM = jnp.einsum


def _dot(a: jax.Array, b: jax.Array, ca: int, cb: int) -> jax.Array:
    """2-D product contracting ``a``'s axis ``ca`` with ``b``'s axis ``cb``, float32 result."""
    dims = (((ca,), (cb,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def lora_matmul_bf16(
    x: jax.Array, w: jax.Array, a: jax.Array, b: jax.Array, scale: float
) -> jax.Array:
    """``x @ w + scale * (x @ a) @ b`` for ``x [N, in]``, ``w [in, out]``, ``a [in, r]``,
    ``b [r, out]``: bf16 operands, float32 results, forward and backward.

    Why one concatenated product instead of the textbook three: on this CPU the adapter's
    cost is not its FLOPs (rank 16) but the extra passes over ``[N, out]`` float32 tensors
    (adding the delta to ``y``; reading ``dy`` for ``dy @ b.T`` and again for ``b``'s
    gradient), and the 270M's step is memory-bound there. Here the rank-``r`` columns ride
    along in the big product: ``[x | s x a] @ [w ; b]`` forward and ``dy @ [w ; b].T``
    backward, which yields ``dx`` and ``dy @ b.T`` in one pass. The adapter weights enter
    those products in bf16 (as every frozen weight does); ``x @ a`` and the gradients of
    ``a`` and ``b`` accumulate in float32. Step times and the gradient's distance from an
    all-float32 step: bench/results/design.md.
    """
    return _lm_fwd(x, w, a, b, scale)[0]


def _lm_fwd(x, w, a, b, scale):
    ras = _dot(x, a, 1, 0) * scale  # [N, r] float32
    xc = jnp.concatenate([x.astype(jnp.bfloat16), ras.astype(jnp.bfloat16)], axis=1)
    wc = jnp.concatenate([w.astype(jnp.bfloat16), b.astype(jnp.bfloat16)], axis=0)
    y = _dot(xc, wc, 1, 0)
    return y, (x, xc, wc, a, jnp.zeros((0,), w.dtype), jnp.zeros((0,), b.dtype))


def _lm_bwd(scale, res, dy):
    x, xc, wc, a, w_like, b_like = res
    n_in = a.shape[0]
    dyb = dy.astype(jnp.bfloat16)
    dxc = _dot(dyb, wc, 1, 1)  # [N, in + r]: dx through w, and dy @ b.T
    dra = dxc[:, n_in:] * scale  # [N, r]
    dx = dxc[:, :n_in] + _dot(dra, a, 1, 1)
    da = _dot(dra, x, 0, 0).T  # [r, in] then transposed: the fast operand order here
    db = _dot(xc[:, n_in:], dyb, 0, 0)  # [r, out]
    dw = _dot(xc[:, :n_in], dyb, 0, 0)  # dropped by XLA when w is frozen (LoRA)
    return dx.astype(x.dtype), dw.astype(w_like.dtype), da.astype(a.dtype), db.astype(b_like.dtype)


lora_matmul_bf16.defvjp(_lm_fwd, _lm_bwd)


def _lora_weights(m: Any, name: str) -> tuple[jax.Array, jax.Array, float] | None:
    a = getattr(m, name + "_lora_a", None)
    if a is None:
        return None
    scale = getattr(m, SCALE_ATTR, None)
    if scale is None:
        raise ValueError("LoRA adapters without a scale: apply them with cotune.lora.apply_lora")
    return a[...], getattr(m, name + "_lora_b")[...], scale


class _Bf16Einsum(gemma3.Einsum):
    """Tunix Einsum: bf16 products with float32 accumulation; with LoRA, the adapter joins
    the product (:func:`lora_matmul_bf16`) on the einsum flattened to 2-D."""

    def __call__(self, x: jax.Array) -> jax.Array:
        lw = _lora_weights(self, "w")
        if lw is None:
            return bf16_einsum(self.einsum_str, x, self.w[...])
        a, b, scale = lw
        # Flatten by the LoRA equation (e.g. "BSD,Dr,rCKH->CBSKH"): the letters of ``a``
        # other than r are contracted, those of ``b`` other than r are the output features.
        ins, out = self.w_lora_einsum_str.split("->")
        xs, a_s, b_s = ins.split(",")
        ws = self.einsum_str.split("->")[0].split(",")[1]
        contracted = [c for c in a_s if c != "r"]
        batch = [c for c in xs if c not in contracted]
        rest = [c for c in b_s if c != "r"]
        xt = jnp.transpose(x, [xs.index(c) for c in batch + contracted])
        batch_shape = xt.shape[: len(batch)]
        x2 = xt.reshape(-1, int(np.prod(xt.shape[len(batch) :])))
        w = self.w[...]
        w2 = jnp.transpose(w, [ws.index(c) for c in contracted + rest]).reshape(x2.shape[1], -1)
        a2 = jnp.transpose(a, [a_s.index(c) for c in contracted] + [a_s.index("r")])
        bt = jnp.transpose(b, [b_s.index("r")] + [b_s.index(c) for c in rest])
        y = lora_matmul_bf16(
            x2, w2, a2.reshape(x2.shape[1], -1), bt.reshape(bt.shape[0], -1), scale
        )
        y = y.reshape(*batch_shape, *bt.shape[1:])
        return jnp.transpose(y, ["".join(batch + rest).index(c) for c in out])


class _Bf16Linear(nnx.Linear):
    """Bias-free nnx.Linear as used by Gemma's MLP, same treatment as :class:`_Bf16Einsum`."""

    def __call__(self, x: jax.Array) -> jax.Array:
        lw = _lora_weights(self, "kernel")
        if lw is None:
            y = bf16_einsum("...i,io->...o", x, self.kernel[...])
        else:
            a, b, scale = lw
            x2 = x.reshape(-1, x.shape[-1])
            y = lora_matmul_bf16(x2, self.kernel[...], a, b, scale)
            y = y.reshape(*x.shape[:-1], y.shape[-1])
        if self.bias is not None:
            y = y + self.bias[...]
        return y


def bf16_frozen_weights(frozen: Any) -> Any:
    """The frozen state with every projection weight (``Einsum.w``, ``Linear.kernel``) cast
    to bfloat16 once, for a training run with bf16 matmuls.

    Why: those products cast their weights to bf16 anyway (:func:`bf16_einsum`), so the
    numbers are identical, but doing it inside the step re-reads ~400 MB of float32 and
    writes ~200 MB of bf16 copies every step on the 270M (the per-step ``convert`` ops of a
    ``jax.profiler`` trace with ``XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true``). Embeddings and
    norm scales stay float32: the input lookup and the residual stream keep full precision.
    Only the training step sees this copy; the model itself keeps its float32 weights.
    """

    def cast(path: tuple, x: Any) -> Any:
        names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        name = names[-2] if names and names[-1] == "value" else names[-1]  # Variable.value
        if name in ("w", "kernel") and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(jnp.bfloat16)
        return x

    return jax.tree_util.tree_map_with_path(cast, frozen)


def split_for_training(
    module: Any, lora_enabled: bool, bf16: bool, train_embedding: bool = False
) -> tuple[Any, Any, Any]:
    """``(graphdef, trainable, frozen)`` as the training step takes them.

    The graph carries the bf16 projections when ``bf16`` (the module itself is switched back
    to float32 for generation), and with LoRA the frozen projection weights are bf16 once
    (:func:`bf16_frozen_weights`). One place, so benchmarks time what training runs.
    """
    set_bf16_matmul(module, bf16)
    filt = trainable_filter(lora_enabled, train_embedding)
    graphdef, trainable, frozen = nnx.split(module, filt, ...)
    set_bf16_matmul(module, False)
    if bf16 and lora_enabled:
        frozen = bf16_frozen_weights(frozen)
    return graphdef, trainable, frozen


def uses_explicit_lora(module: Any) -> bool:
    """True when the projections add LoRA themselves (bf16 mode): no Qwix interception then."""
    return any(isinstance(m, (_Bf16Einsum, _Bf16Linear)) for _, m in module.iter_modules())


def set_bf16_matmul(module: Any, enabled: bool) -> None:
    """Switch the decoder's projections (attention einsums, MLP linears) to bf16 operands with
    float32 results in forward *and* backward, or back. Parameters stay float32.

    Changes the module in place; call before ``nnx.split`` so the graph carries it.
    """
    for _, m in module.iter_modules():
        if isinstance(m, gemma3.Einsum):
            m.__class__ = _Bf16Einsum if enabled else gemma3.Einsum
        elif isinstance(m, nnx.Linear):
            m.__class__ = _Bf16Linear if enabled else nnx.Linear
