"""Rollouts: every completion GRPO trains or evaluates on, sampled by ``cotune.generate``.

The token ids are used as sampled (never re-tokenized text), cut where generation cut them:
after the first end token (kept, so the policy learns to stop) or the stop string that
closes the answer. A completion that ran into ``max_new_tokens`` is marked truncated.

With the calculator (a policy trained to leave its arithmetic to it, ``eval.calculator``)
the values of its claims are written by the host, not sampled: each completion records
where (``forced``), so the loss can leave those tokens out (:func:`cotune.rl.loss.loss_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cotune import format as fmt
from cotune.generate import generate_detailed
from cotune.model import Model


@dataclass
class Rollout:
    """Sampled completions, cut at the first end token (kept) or stop string.

    ``forced[i]``: the indices into ``completion_ids[i]`` of the tokens the calculator wrote
    in place of the policy's picks (empty without it; left out, every completion's is empty).
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    truncated: list[bool]  # hit max_new_tokens without an end token or stop string
    forced: list[tuple[int, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.forced:
            self.forced = [() for _ in self.completion_ids]
        if len(self.forced) != len(self.completion_ids):
            raise ValueError("Rollout: one forced-positions entry per completion")


def sample(
    model: Model,
    prompt_ids: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    schema: fmt.Schema = "tags",
    calculator: bool = False,
) -> Rollout:
    """Completions of ``prompt_ids`` (temperature 0: greedy), stopped as the schema says.

    ``calculator=True``: the calculator writes the value of each claim the policy starts in
    its reasoning (:func:`cotune.generate.generate_detailed`), as it will when the policy is
    used, so rewards judge the completions it will actually produce."""
    gens = generate_detailed(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        stop_strings=fmt.stop_strings(schema),
        calculator=calculator,
    )
    return Rollout(
        [list(p) for p in prompt_ids],
        [list(g.token_ids) for g in gens],
        [g.text for g in gens],
        [g.finish_reason == "length" for g in gens],
        [tuple(g.forced) for g in gens],
    )
