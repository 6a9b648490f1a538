"""Generation must see LoRA adapters (Qwix injects them only inside ``Gemma3.__call__``)."""

import jax
import numpy as np
from flax import nnx

from cotune.config import LoraCfg
from cotune.generate import generate
from cotune.lora import apply_lora
from cotune.model import Model, load


def test_generate_uses_lora_adapters() -> None:
    base = load("tiny")
    questions = [f"What is {i} + {i + 3}?" for i in range(8)]
    before = generate(base, questions, max_new_tokens=12)
    module = apply_lora(base.module, LoraCfg(rank=4, alpha=8.0))
    state = nnx.state(module, nnx.LoRAParam)
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(state))))
    nnx.update(module, jax.tree.map(lambda x: 0.5 * jax.random.normal(next(keys), x.shape), state))
    lora_model = Model(module, base.tokenizer, base.config, "tiny+lora", dict(base.meta))
    after = generate(lora_model, questions, max_new_tokens=12)
    assert sum(a != b for a, b in zip(before, after, strict=True)) >= 4
    # Changing the adapters again invalidates the merged copy.
    nnx.update(module, jax.tree.map(lambda x: np.zeros_like(x), state))
    assert generate(lora_model, questions, max_new_tokens=12) == before


def test_updated_adapters_reuse_compiled_code() -> None:
    """RL changes the adapters every step: generation must follow without recompiling."""
    from cotune.generate import compile_counts

    base = load("tiny")
    module = apply_lora(base.module, LoraCfg(rank=4, alpha=8.0))
    model = Model(module, base.tokenizer, base.config, "tiny+lora", dict(base.meta))
    state = nnx.state(module, nnx.LoRAParam)
    outs = []
    for i in range(3):
        keys = iter(jax.random.split(jax.random.key(10 + i), len(jax.tree.leaves(state))))
        fresh = [0.5 * jax.random.normal(next(keys), x.shape) for x in jax.tree.leaves(state)]
        nnx.update(module, jax.tree.unflatten(jax.tree.structure(state), fresh))
        before = dict(compile_counts())
        outs.append(generate(model, ["What is 2 + 3?", "What is 7 * 8?"], max_new_tokens=10))
        if i > 0:
            assert compile_counts() == before
    assert outs[0] != outs[1] or outs[1] != outs[2]
