"""Rollouts: every completion GRPO trains or evaluates on, sampled by ``cotune.generate``.

The token ids are used as sampled (never re-tokenized text), cut where generation cut them:
after the first end token (kept, so the policy learns to stop) or the stop string that
closes the answer. A completion that ran into ``max_new_tokens`` is marked truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

from cotune import format as fmt
from cotune.generate import generate_detailed
from cotune.model import Model


@dataclass
class Rollout:
    """Sampled completions, cut at the first end token (kept) or stop string."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    truncated: list[bool]  # hit max_new_tokens without an end token or stop string


def sample(
    model: Model,
    prompt_ids: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    schema: fmt.Schema = "tags",
) -> Rollout:
    """Completions of ``prompt_ids`` (temperature 0: greedy), stopped as the schema says."""
    gens = generate_detailed(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        stop_strings=fmt.stop_strings(schema),
    )
    return Rollout(
        [list(p) for p in prompt_ids],
        [list(g.token_ids) for g in gens],
        [g.text for g in gens],
        [g.finish_reason == "length" for g in gens],
    )
