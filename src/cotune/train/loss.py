"""Completion-only cross-entropy computed on gathered positions only.

Tunix's default SFT loss builds logits for every position of every row and a one-hot target
as wide as the vocabulary (262,144 for Gemma 3). Here the hidden states of the trained
positions are gathered first (a fixed-size bucket per micro-batch), only those go through the
tied output projection, and the loss uses integer labels. With a chat prompt roughly half the
positions are prompt or padding, so this halves the largest matmul of the step and removes the
one-hot tensor entirely. With LoRA (frozen embedding) the vocabulary is then streamed in
chunks so no ``[N, vocab]`` tensor exists at all (:func:`frozen_projected_ce_bf16`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from cotune.train.batches import attention_mask
from cotune.train.forward import hidden_states


def output_logits(hidden: jax.Array, embedding: jax.Array, bf16: bool = False) -> jax.Array:
    """``hidden [N, D] @ embedding[V, D].T`` (Gemma's tied output projection).

    ``bf16=True``: bf16 operands with float32 accumulation, which XLA's CPU backend runs at
    ~2.6x its float32 rate (measured in the shared notes); the result stays float32.
    """
    if bf16:
        return jnp.einsum(
            "nd,vd->nv",
            hidden.astype(jnp.bfloat16),
            embedding.astype(jnp.bfloat16),
            preferred_element_type=jnp.float32,
        )
    return jnp.einsum("nd,vd->nv", hidden, embedding.astype(hidden.dtype))


@jax.custom_vjp
def projected_ce_bf16(hidden: jax.Array, embedding: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of ``hidden @ embedding.T`` against integer ``labels``, per row.

    For a *trained* embedding (full fine-tune). bf16 operands with float32 accumulation in the
    forward product and in both backward ones; the logits are recomputed in the backward pass
    instead of stored. With LoRA the embedding is frozen and :func:`frozen_projected_ce_bf16`
    is ~3x faster.
    """
    logits = output_logits(hidden, embedding, bf16=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _pce_fwd(hidden, embedding, labels):
    logits = output_logits(hidden, embedding, bf16=True)
    lse = jax.nn.logsumexp(logits, axis=-1)
    ce = lse - jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return ce, (hidden, embedding, labels, lse)


def _pce_bwd(res, g):
    hidden, embedding, labels, lse = res
    logits = output_logits(hidden, embedding, bf16=True)
    p = jnp.exp(logits - lse[:, None])
    p = p.at[jnp.arange(p.shape[0]), labels].add(-1.0)
    d = (p * g[:, None]).astype(jnp.bfloat16)
    dh = jnp.einsum(
        "nv,vd->nd", d, embedding.astype(jnp.bfloat16), preferred_element_type=jnp.float32
    )
    de = jnp.einsum("nv,nd->vd", d, hidden.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
    return dh.astype(hidden.dtype), de.astype(embedding.dtype), None


projected_ce_bf16.defvjp(_pce_fwd, _pce_bwd)

# Vocabulary rows per step of the online softmax. 8192 x 640 bf16 is 10 MB of embedding and
# the [N, 8192] float32 logits tile stays in L2/L3; measured here 2048-16384 all within 15%.
VOCAB_CHUNK = 8192


@jax.custom_vjp
def frozen_projected_ce_bf16(
    hidden: jax.Array, embedding: jax.Array, labels: jax.Array
) -> jax.Array:
    """Cross-entropy of ``hidden @ embedding.T`` per row, for a **frozen** embedding (LoRA).

    Why not the obvious way: ``[N, 262144]`` float32 logits are 0.5 GB at N=512, so every
    pass over them goes to memory, and the backward needs them again. Instead the vocabulary
    is streamed in chunks with an online softmax (as flash attention does over keys), and the
    same pass accumulates ``E_p[e] = softmax(logits) @ embedding`` -- the only thing the
    gradient needs, since ``d ce / d hidden = E_p[e] - e[label]``. So forward and backward
    together cost two bf16 products over the vocabulary (not three), nothing ``[N, V]``-sized
    ever leaves cache, and the backward pass is an ``[N, D]`` subtraction. Measured on the
    270M shapes (512 x 640 @ 640 x 262144): 1.23 s -> 0.45 s for loss + gradient, 2.7x
    (``python -m bench.profile_train``).
    The embedding gets no gradient: use :func:`projected_ce_bf16` when it is trained.
    """
    return _fpce_fwd(hidden, embedding, labels)[0]


def _online_chunk(hb, labels, carry, e_chunk, base):
    """One vocabulary chunk of the online softmax: running max, sum, E_p[e], label logit."""
    m, s, acc, lab = carry
    eb = e_chunk.astype(jnp.bfloat16)
    logits = jnp.einsum("nd,cd->nc", hb, eb, preferred_element_type=jnp.float32)
    m_new = jnp.maximum(m, logits.max(-1))
    scale = jnp.exp(m - m_new)
    p = jnp.exp(logits - m_new[:, None])
    s = s * scale + p.sum(-1)
    acc = acc * scale[:, None] + jnp.einsum(
        "nc,cd->nd", p.astype(jnp.bfloat16), eb, preferred_element_type=jnp.float32
    )
    idx = labels - base
    inside = (idx >= 0) & (idx < e_chunk.shape[0])
    picked = jnp.take_along_axis(logits, jnp.clip(idx, 0, e_chunk.shape[0] - 1)[:, None], -1)
    lab = lab + jnp.where(inside, picked[:, 0], 0.0)
    return m_new, s, acc, lab


def _fpce_fwd(hidden, embedding, labels):
    n, d = hidden.shape
    v = embedding.shape[0]
    hb = hidden.astype(jnp.bfloat16)
    chunk = min(VOCAB_CHUNK, v)
    full = v // chunk
    carry = (
        jnp.full((n,), -jnp.inf, jnp.float32),
        jnp.zeros((n,), jnp.float32),
        jnp.zeros((n, d), jnp.float32),
        jnp.zeros((n,), jnp.float32),
    )

    def body(c, xs):
        return _online_chunk(hb, labels, c, *xs), None

    chunks = embedding[: full * chunk].reshape(full, chunk, d)
    carry, _ = jax.lax.scan(body, carry, (chunks, jnp.arange(full, dtype=labels.dtype) * chunk))
    if v % chunk:  # ragged tail (vocabularies that are not a multiple of the chunk)
        carry = _online_chunk(hb, labels, carry, embedding[full * chunk :], full * chunk)
    m, s, acc, lab = carry
    ce = m + jnp.log(s) - lab
    expected = acc / s[:, None]
    # A zero-size array carries hidden's dtype (residuals must be arrays, not dtypes).
    return ce, (expected, embedding, labels, jnp.zeros((0,), hidden.dtype))


def _fpce_bwd(res, g):
    expected, embedding, labels, like = res
    target = jnp.take(embedding, labels, axis=0).astype(jnp.float32)
    return (g[:, None] * (expected - target)).astype(like.dtype), None, None


frozen_projected_ce_bf16.defvjp(_fpce_fwd, _fpce_bwd)


def _embedding_frozen(module: Any) -> bool:
    """With LoRA adapters only they train (``trainable_filter``); the tied embedding is fixed."""
    return bool(jax.tree.leaves(nnx.state(module, nnx.LoRAParam)))


def data_vocabulary(examples: Any) -> np.ndarray:
    """The sorted token ids that are training targets somewhere in ``examples``.

    What ``train.loss_vocab: data`` keeps in the loss's softmax. Every label a step can
    hold is in it (padding entries have weight 0 and are clipped into range).
    """
    ids = [np.asarray(e.tokens)[np.asarray(e.loss_mask, bool)] for e in examples]
    if not ids:
        raise ValueError("no training targets to take a loss vocabulary from")
    return np.unique(np.concatenate(ids)).astype(np.int32)


@dataclass(frozen=True)
class SampledVocab:
    """``train.loss_vocab: data``: the data's target tokens plus ``k`` drawn from the rest.

    A sampled softmax: each micro-batch's partition function is the sum over the data's
    tokens plus ``len(rest) / k`` times the sum over ``k`` tokens drawn uniformly (with
    replacement) from the rest, an unbiased estimate of the full sum. The data tokens alone
    are not enough: their softmax is blind to every other logit, training lets those drift
    up, and generation over the full vocabulary then emits them. Draws are seeded by
    ``(seed, step)``, so a resumed run draws what an uninterrupted one would.
    """

    vocab: np.ndarray  # int32 [D], sorted: the data's target tokens
    rest: np.ndarray  # int32 [V - D]: every other token id
    k: int
    seed: int = 0

    @classmethod
    def build(cls, examples: Any, vocab_size: int, k: int, seed: int = 0) -> SampledVocab:
        vocab = data_vocabulary(examples)
        rest = np.setdiff1d(np.arange(vocab_size, dtype=np.int32), vocab).astype(np.int32)
        return cls(vocab, rest, k, seed)

    @property
    def log_weight(self) -> float:
        """The log of how many rest tokens each drawn one stands for."""
        return float(np.log(len(self.rest) / self.k))

    @classmethod
    def for_run(cls, cfg: Any, examples: Any, module: Any) -> SampledVocab | None:
        """What a run's ``train.loss_vocab`` asks for (``None``: the whole vocabulary)."""
        if cfg.train.loss_vocab != "data":
            return None
        size = module.embedder.input_embedding[...].shape[0]
        return cls.build(examples, size, cfg.train.loss_negatives, cfg.train.seed)

    def negatives(self, step: int, micro_batches: int) -> np.ndarray:
        """int32 ``[micro_batches, k]``: the rest tokens drawn for step ``step``."""
        rng = np.random.default_rng([self.seed, step])
        return self.rest[rng.integers(0, len(self.rest), (micro_batches, self.k))]


def restrict_vocabulary(
    hidden: jax.Array,
    embedding: jax.Array,
    labels: jax.Array,
    vocab: jax.Array,
    negatives: jax.Array | None = None,
    log_weight: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(hidden, rows, labels)`` for cross-entropy over ``vocab`` (+ weighted ``negatives``).

    ``rows`` are the embedding rows of the sorted ids ``vocab`` followed by those of
    ``negatives``; ``labels`` become row indices (a label outside ``vocab``, only bucket
    padding of weight 0, maps to a valid row). A negative's weight is a constant added to its
    logit, carried as one more column: ``[h, 1] . [e, log_weight]``.
    """
    idx = jnp.clip(jnp.searchsorted(vocab, labels), 0, vocab.shape[0] - 1).astype(labels.dtype)
    ids = vocab if negatives is None else jnp.concatenate([vocab, negatives])
    rows = jnp.take(embedding, ids, axis=0)
    if negatives is not None:
        bias = jnp.concatenate(
            [jnp.zeros(vocab.shape, rows.dtype), jnp.full(negatives.shape, log_weight, rows.dtype)]
        )
        rows = jnp.concatenate([rows, bias[:, None]], axis=1)
        hidden = jnp.concatenate([hidden, jnp.ones((hidden.shape[0], 1), hidden.dtype)], axis=1)
    return hidden, rows, idx


def token_losses(
    module: Any,
    mb: dict[str, jax.Array],
    bf16: bool = False,
    frozen_embedding: bool | None = None,
    vocab: jax.Array | None = None,
    log_weight: float = 0.0,
) -> jax.Array:
    """Per-entry cross-entropy ``[K]`` for one micro-batch (``weights`` not applied).

    ``mb`` holds ``tokens/positions/segments [B, L]`` and ``gather/labels [K]`` as built by
    :func:`cotune.train.batches.build_batch`. ``frozen_embedding``: whether the tied
    embedding is outside the trained state (LoRA, or a full fine-tune without
    ``train.train_embedding``); ``None`` infers it from the presence of LoRA adapters.
    ``vocab``: sorted token ids the softmax runs over (``train.loss_vocab: data``; every
    label must be one of them), with ``mb["negatives"]`` (if present) drawn from the rest,
    each standing for ``exp(log_weight)`` tokens (:class:`SampledVocab`); ``None`` is the
    whole vocabulary.
    """
    mask = attention_mask(mb["segments"], jnp)
    h = hidden_states(module, mb["tokens"], mb["positions"], mask)
    b, n, d = h.shape
    picked = jnp.take(h.reshape(b * n, d), mb["gather"], axis=0)
    embedding, labels = module.embedder.input_embedding[...], mb["labels"]
    if vocab is not None:
        picked, embedding, labels = restrict_vocabulary(
            picked, embedding, labels, vocab, mb.get("negatives"), log_weight
        )
    if bf16:
        if frozen_embedding is None:
            frozen_embedding = _embedding_frozen(module)
        ce = frozen_projected_ce_bf16 if frozen_embedding else projected_ce_bf16
        return ce(picked, embedding, labels)
    logits = output_logits(picked, embedding, bf16)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def summed_loss(
    module: Any,
    mb: dict[str, jax.Array],
    bf16: bool = False,
    frozen_embedding: bool | None = None,
    vocab: jax.Array | None = None,
    log_weight: float = 0.0,
) -> jax.Array:
    """Sum of weighted token losses of one micro-batch (divide by the step's token count)."""
    ce = token_losses(module, mb, bf16, frozen_embedding, vocab, log_weight)
    return jnp.sum(ce * mb["weights"])


def per_example_loss(
    module: Any, batch_arrays: dict[str, Any], example: Any, n_examples: int, bf16: bool = False
) -> jax.Array:
    """Mean token loss of each example in a (possibly packed) step ``[n_examples]``.

    Used to check that packing changes nothing: the same example gives the same loss packed
    with others or alone in a padded row.
    """
    graphdef, state = nnx.split(module)
    arrays = {k: jnp.asarray(v) for k, v in batch_arrays.items()}
    # GraphDef holds the (unhashable) Tunix ModelConfig: close over it instead of static args.
    fn = jax.jit(functools.partial(_per_example, graphdef, n_examples=n_examples, bf16=bf16))
    return fn(state, arrays, jnp.asarray(example))


def _per_example(graphdef, state, arrays, example, *, n_examples: int, bf16: bool) -> jax.Array:
    module = nnx.merge(graphdef, state)
    sums = jnp.zeros((n_examples,), jnp.float32)
    counts = jnp.zeros((n_examples,), jnp.float32)
    for a in range(arrays["tokens"].shape[0]):
        mb = {k: v[a] for k, v in arrays.items()}
        ce = token_losses(module, mb, bf16) * mb["weights"]
        idx = jnp.where(example[a] >= 0, example[a], n_examples)
        sums = sums + jax.ops.segment_sum(ce, idx, n_examples + 1)[:n_examples]
        counts = counts + jax.ops.segment_sum(mb["weights"], idx, n_examples + 1)[:n_examples]
    return sums / jnp.maximum(counts, 1.0)


def full_logits(module: nnx.Module, tokens: jax.Array) -> jax.Array:
    """Logits of a plain causal forward over ``tokens [B, L]`` (reference checks, tests)."""
    graphdef, state = nnx.split(module)
    return jax.jit(functools.partial(_full_logits, graphdef))(state, jnp.asarray(tokens))


def _full_logits(graphdef, state, tokens: jax.Array) -> jax.Array:
    module = nnx.merge(graphdef, state)
    b, n = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((n, n), bool)), (b, n, n))
    logits, _ = module(tokens, positions, None, mask)
    return logits
