"""The real Gemma 3 270M (embedded GGUF): loads offline, converts once, continues sensibly."""

from __future__ import annotations

import pytest

from cotune.generate import generate_detailed
from cotune.model import load


@pytest.mark.slow
def test_real_270m_knows_berlin():
    model = load("gemma3-270m")
    assert model.config.num_layers == 18 and model.tokenizer.vocab_size == 262144
    prompt = "The capital of France is Paris. The capital of Germany is"
    (g,) = generate_detailed(model, [prompt], raw=True, max_new_tokens=8)
    assert "Berlin" in g.text, g
    again = load("gemma3-270m")  # second load comes from the converted-weights cache
    assert again.meta["cache_hit"] is True
