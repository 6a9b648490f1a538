"""The SFT optimizer step: the trained/frozen split of the model, AdamW on a warmup-cosine
schedule, and one jitted step over pure state pytrees.

Why not Tunix's ``PeftTrainer``: its loss computes logits for every position through the
tied embedding and a one-hot target as wide as the vocabulary, and gets positions and
attention only through a generic hook; on the 270M that loss is the largest cost of a
step. This step runs the Tunix Gemma 3 submodules to hidden states, gathers only the
trained positions (:mod:`cotune.train.loss`) and differentiates only the trained variables
(``nnx.LoRAParam`` under LoRA). Shapes are fixed per run, so it compiles once (and is
cached on disk by :func:`cotune.runtime.enable_compilation_cache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding

from cotune.config import RunConfig
from cotune.lora import apply_lora, count_params
from cotune.train.forward import split_for_training
from cotune.train.loss import SampledVocab, summed_loss
from cotune.train.mesh import make_mesh, replicated, shard_state, state_shardings


def make_schedule(cfg: RunConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup, then cosine decay to ``lr * min_lr_ratio`` at ``total_steps``.

    Evaluated at the optimizer's update count: step ``s`` (1-based) uses ``schedule(s - 1)``.
    A resumed run builds it for its *current* total, so a run extended from N to M steps
    follows the M-step schedule from the step it resumed at (see ``docs/reliability.md``).
    """
    o = cfg.optim
    warm = min(o.warmup_steps, max(0, total_steps - 1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warm else o.lr,
        peak_value=o.lr,
        warmup_steps=warm,
        decay_steps=max(total_steps, warm + 1),
        end_value=o.lr * o.min_lr_ratio,
    )


def is_lora_b(path: tuple) -> bool:
    """Whether a trainable leaf's pytree path ends in a LoRA ``B`` matrix (``*_lora_b``)."""
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    return any(isinstance(n, str) and n.endswith("_lora_b") for n in names)


def make_optimizer(cfg: RunConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW on :func:`make_schedule`, global-norm clipping.

    ``optim.lora_plus_ratio`` > 1 (LoRA+, Hayou et al. 2024): the updates of the adapters'
    ``B`` matrices are scaled by it, so ``B`` learns at ``ratio * lr`` and ``A`` at ``lr``.
    The paper finds one shared rate leaves ``B`` (which starts at zero) the slow side of
    the product in wide models; on the quickstart's recipe at lr 1e-3, ratio 4 was
    unstable (docs/recipe.md), so it is off by default. Adam's update does not depend on
    the gradient's scale, so scaling the update is scaling that matrix's learning rate.
    """
    o = cfg.optim
    sched = make_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip else []
    parts.append(optax.adamw(sched, b1=0.9, b2=0.999, eps=1e-8, weight_decay=o.weight_decay))
    if cfg.lora.enabled and o.lora_plus_ratio != 1.0:
        ratio = o.lora_plus_ratio
        parts.append(
            optax.masked(
                optax.scale(ratio),
                lambda tree: jax.tree_util.tree_map_with_path(lambda p, _: is_lora_b(p), tree),
            )
        )
    return optax.chain(*parts)


def make_train_step(
    graphdef: Any,
    tx: optax.GradientTransformation,
    bf16: bool,
    shardings: tuple[Any, Any, Any] | None = None,
    frozen_embedding: bool | None = None,
    vocab: SampledVocab | None = None,
):
    """``step(trainable, opt_state, frozen, batch) -> (trainable, opt_state, loss, grad_norm)``.

    ``batch`` arrays have a leading micro-batch axis ``A``; gradients of the summed token
    losses are accumulated over it with ``lax.scan`` and divided by the step's trained-token
    count, so accumulation is exact (token-weighted), not a mean of micro-batch means.
    ``vocab``: the sampled softmax of ``train.loss_vocab: data``; ``batch`` then also holds
    ``negatives [A, k]`` (:meth:`SampledVocab.negatives`). ``None``: the whole vocabulary.
    """
    vocab_ids = None if vocab is None else jnp.asarray(vocab.vocab, jnp.int32)
    log_weight = 0.0 if vocab is None else vocab.log_weight

    def loss_sum(trainable: Any, frozen: Any, mb: dict[str, jax.Array]) -> jax.Array:
        module = nnx.merge(graphdef, trainable, frozen)
        return summed_loss(module, mb, bf16, frozen_embedding, vocab_ids, log_weight)

    grad_fn = jax.value_and_grad(loss_sum)

    def step(trainable: Any, opt_state: Any, frozen: Any, batch: dict[str, jax.Array]):
        zeros = jax.tree.map(jnp.zeros_like, trainable)

        def body(carry, mb):
            tot, g = carry
            loss, gi = grad_fn(trainable, frozen, mb)
            return (tot + loss, jax.tree.map(jnp.add, g, gi)), None

        if batch["tokens"].shape[0] == 1:  # no accumulation: skip the loop (XLA CPU runs
            # while-loop bodies with less parallelism than straight-line code)
            tot, grads = grad_fn(trainable, frozen, {k: v[0] for k, v in batch.items()})
        else:
            (tot, grads), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), batch)
        n = jnp.maximum(jnp.sum(batch["weights"]), 1.0)
        grads = jax.tree.map(lambda x: x / n, grads)
        gnorm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return trainable, opt_state, tot / n, gnorm

    if shardings is None:
        return jax.jit(step, donate_argnums=(0, 1))
    # Outputs placed exactly like inputs, so the donated buffers are reused and the second
    # step does not recompile for a different layout.
    tr_sh, opt_sh, rep = shardings
    return jax.jit(step, donate_argnums=(0, 1), out_shardings=(tr_sh, opt_sh, rep, rep))


def _replicate_loose(tree: Any, mesh: Any) -> Any:
    """Optimizer leaves created off-mesh (step counters) are replicated onto the mesh."""
    rep = replicated(mesh)
    return jax.tree.map(
        lambda x: x if isinstance(x.sharding, NamedSharding) else jax.device_put(x, rep), tree
    )


@dataclass
class TrainState:
    """The model split for training: what is trained, what stays frozen, the optimizer."""

    module: Any  # the model's module (with LoRA adapters when cfg.lora.enabled)
    trainable: Any
    frozen: Any
    opt_state: Any
    step_fn: Any  # make_train_step's jitted step
    schedule: optax.Schedule  # the learning rate per update (logged and reported)
    mesh: Any
    n_trainable: int
    n_total: int
    vocab: SampledVocab | None = None  # train.loss_vocab: data

    def step_arrays(self, arrays: dict[str, Any], step: int) -> dict[str, Any]:
        """Step ``step``'s batch arrays with what the loss needs besides them (the drawn
        negatives of ``train.loss_vocab: data``)."""
        if self.vocab is None:
            return arrays
        return {**arrays, "negatives": self.vocab.negatives(step, arrays["tokens"].shape[0])}

    def step(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """One optimizer step; returns (loss, grad_norm)."""
        self.trainable, self.opt_state, loss, gnorm = self.step_fn(
            self.trainable, self.opt_state, self.frozen, batch
        )
        return loss, gnorm

    def synced_module(self) -> Any:
        """The module with the trained weights written into it (for generation or a result)."""
        nnx.update(self.module, self.trainable)
        return self.module


def build_state(
    module: Any, cfg: RunConfig, total_steps: int, vocab: SampledVocab | None = None
) -> TrainState:
    """Adapters (LoRA) or a full fine-tune split, sharded on the configured mesh, with an
    optimizer for a run of ``total_steps`` (a resumed run that changed length gets the
    schedule of its new length). ``vocab``: the sampled softmax of ``train.loss_vocab: data``
    (:class:`cotune.train.loss.SampledVocab`)."""
    if cfg.lora.enabled:
        module = apply_lora(module, cfg.lora, seed=cfg.train.seed)
    train_emb = not cfg.lora.enabled and cfg.train.train_embedding
    n_train, n_total = count_params(module, cfg.lora.enabled, train_emb)
    mesh = make_mesh(cfg.mesh)
    graphdef, trainable, frozen = split_for_training(
        module, cfg.lora.enabled, cfg.train.bf16_matmul, train_emb
    )
    trainable = shard_state(trainable, mesh)
    frozen = shard_state(frozen, mesh)
    tx = make_optimizer(cfg, total_steps)
    opt_state = _replicate_loose(tx.init(trainable), mesh)
    step_fn = make_train_step(
        graphdef,
        tx,
        cfg.train.bf16_matmul,
        shardings=(
            state_shardings(trainable, mesh),
            jax.tree.map(lambda x: x.sharding, opt_state),
            replicated(mesh),
        ),
        frozen_embedding=not train_emb,
        vocab=vocab,
    )
    return TrainState(
        module, trainable, frozen, opt_state, step_fn, make_schedule(cfg, total_steps), mesh,
        n_train, n_total, vocab,
    )  # fmt: skip
