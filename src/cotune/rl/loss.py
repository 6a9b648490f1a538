"""The GRPO objective on LoRA weights: per-token log-probs of sampled completions and the
clipped-ratio loss with a KL penalty, using Tunix's maths (``compute_kl_divergence``,
``selective_log_softmax``).

A batch row is its prompt followed by its completion, right-padded: under a causal mask
nothing after a row's last token reaches it, so each row is computed as if alone. Only the
completion positions are projected to the vocabulary: full logits would be
``[B, T, vocab]`` floats (GBs on the 270M), kept alive for the backward pass.

Even the completion positions alone are ``[B, C, vocab]``: 2.7 GB of float32 at 8 rollouts
of 320 tokens on Gemma's 262,144-token vocabulary, several times over once the softmax and
its gradient exist (``cotune rl`` on GSM8K computing them was killed for memory on a 24 GB
machine). With
``bf16=True`` the log-probs instead come from SFT's streamed cross-entropy
(:func:`cotune.train.loss.frozen_projected_ce_bf16`): the vocabulary goes through in chunks
with an online softmax, so nothing vocabulary-wide is ever stored. GRPO trains LoRA only, so
the tied embedding is frozen, which that function requires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tunix.rl.common import compute_kl_divergence, selective_log_softmax

from cotune.train.forward import hidden_states
from cotune.train.loss import frozen_projected_ce_bf16

LOSS_BUCKET = 128  # loss rows are padded to a multiple of this many tokens


@dataclass(frozen=True)
class LossCfg:
    beta: float  # KL weight
    epsilon: float  # ratio clip
    temperature: float  # sampling temperature the log-probs are taken at
    kl_mode: str  # Tunix's KL estimator
    bf16: bool = False  # streamed bf16 vocabulary projection (``train.bf16_matmul``)


@dataclass
class LossBatch:
    """Rows ``[prompt | completion | pad]`` and where each row's completion starts."""

    tokens: jax.Array  # [B, T]
    starts: jax.Array  # [B] index of each row's first completion token
    completions: jax.Array  # [B, C] completion ids, padded
    mask: jax.Array  # [B, C] 1.0 on the policy's own completion tokens (not pad, not forced)


def loss_batch(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    pad_id: int,
    length: int,
    forced: Sequence[Sequence[int]] | None = None,
) -> LossBatch:
    """Pack rollouts into fixed shapes: completions to ``length``, rows to a bucketed length
    (so the jitted loss compiles once per bucket, not per batch).

    ``forced[i]``: indices into ``completions[i]`` of tokens the calculator wrote
    (:attr:`cotune.rl.rollout.Rollout.forced`). They stay in the rows, since the tokens
    after them were sampled reading them, but get mask 0: the policy did not choose them,
    so neither the policy-gradient term nor the KL may push their probabilities (the
    advantage of a completion says nothing about a value the calculator got right by
    construction, and a model trained with ``train.mask_values`` never learned them)."""
    b = len(prompts)
    # Coarse buckets: each new row length recompiles the forward and backward of the whole
    # model (tens of seconds on the 270M, and the executables stay in memory), while the
    # finer buckets of decoding would save only a few padded positions.
    t = -(-(max(len(p) for p in prompts) + length) // LOSS_BUCKET) * LOSS_BUCKET
    tokens = np.full((b, t), pad_id, np.int32)
    comp = np.full((b, length), pad_id, np.int32)
    mask = np.zeros((b, length), np.float32)
    starts = np.zeros(b, np.int32)
    if forced is not None and len(forced) != b:
        raise ValueError(f"loss_batch: {len(forced)} forced-position lists for {b} rows")
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        c = list(c)[:length]
        tokens[i, : len(p) + len(c)] = [*p, *c]
        starts[i] = len(p)
        comp[i, : len(c)] = c
        mask[i, : len(c)] = 1.0
        if forced is not None:
            at = [k for k in forced[i] if 0 <= k < len(c)]
            mask[i, at] = 0.0
    return LossBatch(jnp.asarray(tokens), jnp.asarray(starts), jnp.asarray(comp), jnp.asarray(mask))


def make_loss_fns(
    graphdef: Any, frozen: Any, cfg: LossCfg, micro_batch: int | None = None
) -> tuple[Callable[..., jax.Array], Callable[..., Any]]:
    """``logps(lora, batch)`` and ``loss_and_grad(lora, batch, adv, old_lp, ref_lp)``, jitted
    for this model structure. ``old_lp=None`` takes the sampling policy's log-probs to be
    the current ones (right for the first optimizer step on a rollout).

    ``micro_batch``: rows per forward/backward pass, the loss and gradient summed over the
    passes (the same numbers up to float rounding). The backward pass keeps every layer's
    activations for all the rows it is given, so that part of the memory grows with
    rollouts x length; passes of a few rows bound it. ``None``: all rows in one pass.
    """

    # The frozen weights are an argument, never a closure: closed over, the 270M's weights
    # became compile-time constants (minutes to compile, a GB-sized executable to cache).
    def logps(lora, frozen, tokens, starts, completions):
        m = nnx.merge(graphdef, lora, frozen)
        b, t = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        causal = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
        h = hidden_states(m, tokens, positions, causal)
        # the output at position k predicts token k + 1
        at = starts[:, None] - 1 + jnp.arange(completions.shape[1])[None, :]
        h = jnp.take_along_axis(h, at[:, :, None], axis=1)
        if cfg.bf16:
            # logits / T = (h / T) @ E.T: the temperature folds into the hidden states
            n, c, d = h.shape
            ce = frozen_projected_ce_bf16(
                (h / cfg.temperature).reshape(n * c, d),
                m.embedder.input_embedding[...],
                completions.reshape(n * c),
            )
            return -ce.reshape(n, c)
        logits = m.embedder.decode(h).astype(jnp.float32) / cfg.temperature
        return selective_log_softmax(logits, completions)

    def loss(lora, frozen, tokens, starts, completions, comp_mask, adv, old_lp, ref_lp, norm):
        """This pass's share of the batch loss: ``norm`` holds the whole batch's row and
        token counts, so the shares of all passes add up to the batch's loss and metrics."""
        lp = logps(lora, frozen, tokens, starts, completions)
        if old_lp is None:
            # One optimizer step per rollout: the sampling policy is the current one, so its
            # log-probs are these (ratio 1, gradient unchanged) and need no forward of their own.
            old_lp = jax.lax.stop_gradient(lp)
        ratio = jnp.exp(jnp.clip(lp - old_lp, -20.0, 20.0))
        a = adv[:, None]
        per_tok = jnp.maximum(-a * ratio, -a * jnp.clip(ratio, 1 - cfg.epsilon, 1 + cfg.epsilon))
        kl = compute_kl_divergence(lp, ref_lp, cfg.kl_mode)
        if cfg.beta:
            per_tok = per_tok + cfg.beta * kl
        n_tok = jnp.maximum(comp_mask.sum(-1), 1.0)
        # sequence-mean-token-mean, Tunix's default aggregation for GRPO
        seq = (per_tok * comp_mask).sum(-1) / n_tok
        rows, tokens_all = norm
        total = seq.sum() / rows
        aux = {
            "kl": (kl * comp_mask).sum() / tokens_all,
            "clipfrac": ((jnp.abs(ratio - 1) > cfg.epsilon) * comp_mask).sum() / tokens_all,
        }
        return total, aux

    jit_logps = jax.jit(logps)
    jit_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))

    def passes(b: LossBatch, *per_row: jax.Array | None) -> list[tuple]:
        """The batch (and per-row arrays) in slices of ``micro_batch`` rows. The last slice
        is filled up with copies of the first rows under a zero mask, so every pass has one
        shape (one compile) and the fillers add nothing: copies, not zeros, so their
        log-probs and KL terms stay finite (``inf * 0`` would be NaN)."""
        n = b.tokens.shape[0]
        k = min(micro_batch or n, n)
        pad = -n % k
        mask = b.mask
        arrays = [b.tokens, b.starts, b.completions, mask, *per_row]
        if pad:
            fill = jnp.arange(pad) % n
            arrays = [None if x is None else jnp.concatenate([x, x[fill]]) for x in arrays]
            arrays[3] = arrays[3].at[n:].set(0.0)
        return [
            tuple(None if x is None else x[i : i + k] for x in arrays) for i in range(0, n + pad, k)
        ]

    def batch_logps(lora: Any, b: LossBatch) -> jax.Array:
        n = b.tokens.shape[0]
        outs = [jit_logps(lora, frozen, *p[:3]) for p in passes(b)]
        return jnp.concatenate(outs)[:n]

    def loss_and_grad(
        lora: Any, b: LossBatch, adv: jax.Array, old_lp: jax.Array | None, ref_lp: jax.Array
    ):
        norm = (
            jnp.maximum((b.mask.sum(-1) > 0).sum(), 1).astype(jnp.float32),
            jnp.maximum(b.mask.sum(), 1.0),
        )
        total, aux, grads = None, None, None
        for tokens, starts, comps, mask, a, old, ref in passes(b, adv, old_lp, ref_lp):
            (t, x), g = jit_grad(lora, frozen, tokens, starts, comps, mask, a, old, ref, norm)
            if total is None:
                total, aux, grads = t, x, g
            else:
                total = total + t
                aux = jax.tree.map(jnp.add, aux, x)
                grads = jax.tree.map(jnp.add, grads, g)
        return (total, aux), grads

    return batch_logps, loss_and_grad
