"""Verifiable rewards for GRPO, built only on :mod:`cotune.format` and :mod:`cotune.verify`.

Every reward has Tunix's signature ``fn(prompts, completions, **batch_fields) -> list[float]``
so the same functions work in cotune's GRPO loop and in ``tunix.rl.grpo.GRPOLearner``.
Batch fields used (all optional unless said): ``answer`` (gold answers, required by
:func:`correctness_reward`), ``question`` (to catch answers copied from the question),
``truncated`` (True where generation hit ``max_new_tokens`` before stopping),
``num_tokens`` (completion lengths in tokens), ``schema`` (``"tags"``/``"plain"``; a single
string or one per completion).

The rules are deliberately strict about *where* an answer comes from: correctness credit is
only given to a strictly well-formed completion, because a policy rewarded for lenient
parses learns to spray several ``<answer>`` tags or to append text after ``</answer>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from cotune import format as fmt
from cotune.verify import check_steps

RewardFn = Callable[..., list[float]]
REWARD_NAMES: tuple[str, ...] = ("format", "correct", "steps", "length")

# Defaults for the length penalty when the caller gives no budget.
DEFAULT_BUDGET_CHARS = 600


def _per_item(value: Any, n: int, default: Any = None) -> list[Any]:
    """A batch field as one value per completion (scalars and None are broadcast)."""
    if value is None or isinstance(value, str | bool | int | float):
        return [default if value is None else value] * n
    items = list(value)
    if len(items) != n:
        raise ValueError(f"batch field has {len(items)} items for {n} completions")
    return items


def _schema(kw: dict[str, Any], n: int) -> list[str]:
    return _per_item(kw.get("schema"), n, "tags")


# --------------------------------------------------------------------------- format


def _structure_credit(text: str, schema: str) -> float:
    """Partial credit in [0, 0.8] for a completion that is not strictly well-formed."""
    if schema == "plain":
        credit = 0.0
        if re.match(r"^\s*Reasoning:", text, re.IGNORECASE):
            credit += 0.4
        if len(re.findall(r"^\s*Answer:", text, re.IGNORECASE | re.MULTILINE)) == 1:
            credit += 0.4
    else:
        tags = (fmt.REASONING_OPEN, fmt.REASONING_CLOSE, fmt.ANSWER_OPEN, fmt.ANSWER_CLOSE)
        credit = sum(0.2 for t in tags if text.count(t) == 1)
    parsed = fmt.parse_completion(text, schema, strict=True)  # type: ignore[arg-type]
    other = [p for p in parsed.problems if not p.startswith(("missing", "duplicated"))]
    return max(0.0, credit - 0.1 * len(other))


def format_reward(prompts: Sequence[Any], completions: Sequence[str], **kw: Any) -> list[float]:
    """1.0 for a strictly well-formed completion; up to 0.8 for a partly right structure.

    Partial credit: 0.2 per tag (``<reasoning>``, ``</reasoning>``, ``<answer>``,
    ``</answer>``) present exactly once, minus 0.1 per other problem (empty reasoning, text
    after ``</answer>``, wrong order...). Plain schema: 0.4 for the ``Reasoning:`` opening,
    0.4 for exactly one ``Answer:`` line.
    """
    out = []
    for text, schema in zip(completions, _schema(kw, len(completions)), strict=True):
        parsed = fmt.parse_completion(text, schema, strict=True)
        out.append(1.0 if parsed.well_formed else _structure_credit(text or "", schema))
    return out


# --------------------------------------------------------------------------- correctness


def _copied_without_reasoning(parsed: fmt.Parsed, question: str | None) -> bool:
    """True when the answer also appears in the question and the reasoning shows no work.

    "No work" = fewer than three words, or reasoning that is itself a piece of the question
    (or the answer). Legitimate answers that happen to occur in the question keep credit
    when real reasoning precedes them.
    """
    if not question or parsed.answer is None:
        return False
    q_numbers = {fmt.normalize_answer(n) for n in re.findall(fmt._NUM, question)}
    in_question = fmt.normalize_answer(parsed.answer) in q_numbers or (
        fmt.normalize_answer(parsed.answer) in fmt.normalize_answer(question)
    )
    if not in_question:
        return False
    reasoning = (parsed.reasoning or "").strip()
    words = re.findall(r"\w+", reasoning)
    norm_r = fmt.normalize_answer(reasoning)
    trivial = (
        len(words) < 3
        or norm_r in fmt.normalize_answer(question)
        or fmt.answers_match(reasoning, parsed.answer)
    )
    return trivial


def correctness_reward(
    prompts: Sequence[Any], completions: Sequence[str], **kw: Any
) -> list[float]:
    """1.0 when a strictly well-formed completion's answer matches the gold ``answer``, else 0.

    No credit for: malformed structure (empty tags, several ``<answer>`` tags, text after
    ``</answer>``, truncation), or an answer copied from ``question`` without reasoning.
    """
    n = len(completions)
    if "answer" not in kw:
        raise ValueError("correctness_reward needs the gold answers as batch field 'answer'")
    golds = _per_item(kw["answer"], n)
    questions = _per_item(kw.get("question"), n)
    out = []
    for text, gold, q, schema in zip(completions, golds, questions, _schema(kw, n), strict=True):
        parsed = fmt.parse_completion(text, schema, strict=True)
        ok = (
            parsed.well_formed
            and fmt.answers_match(parsed.answer, None if gold is None else str(gold))
            and not _copied_without_reasoning(parsed, q)
        )
        out.append(1.0 if ok else 0.0)
    return out


# --------------------------------------------------------------------------- steps


def step_reward(prompts: Sequence[Any], completions: Sequence[str], **kw: Any) -> list[float]:
    """Share of true ``a op b = c`` claims in the reasoning; 0.0 when it makes no claims.

    Reasoning is taken leniently (whatever precedes ``<answer>``) so a policy still learns
    to compute correctly while its format is wrong; no claims earns nothing, so padding
    the reasoning with prose is not a way to score.
    """
    out = []
    for text, schema in zip(completions, _schema(kw, len(completions)), strict=True):
        parsed = fmt.parse_completion(text, schema, strict=False)
        report = check_steps(parsed.reasoning if parsed.reasoning is not None else text)
        out.append(report.validity or 0.0)
    return out


# --------------------------------------------------------------------------- length


def length_reward(
    prompts: Sequence[Any],
    completions: Sequence[str],
    *,
    budget_chars: int | None = DEFAULT_BUDGET_CHARS,
    budget_tokens: int | None = None,
    **kw: Any,
) -> list[float]:
    """A penalty in [-1, 0] for rambling: 0 within budget, -1 at twice the budget or truncated.

    Over budget (characters, or tokens when ``num_tokens`` is given with
    ``budget_tokens``) the penalty grows linearly with the excess. A completion that hit
    the generation limit before closing its answer (batch field ``truncated``, or no
    closing tag and over budget when that field is absent) gets the full -1.
    """
    n = len(completions)
    truncated = _per_item(kw.get("truncated"), n, None)
    num_tokens = _per_item(kw.get("num_tokens"), n, None)
    out = []
    for text, trunc, ntok, schema in zip(
        completions, truncated, num_tokens, _schema(kw, n), strict=True
    ):
        text = text or ""
        closed = (
            fmt.ANSWER_CLOSE in text
            if schema == "tags"
            else bool(re.search(r"^\s*Answer:", text, re.IGNORECASE | re.MULTILINE))
        )
        excess = 0.0
        if budget_chars:
            excess = max(excess, (len(text) - budget_chars) / budget_chars)
        if budget_tokens and ntok is not None:
            excess = max(excess, (int(ntok) - budget_tokens) / budget_tokens)
        if trunc is None:  # no token information: over budget and unclosed = truncated
            trunc = excess > 0
        out.append(-1.0 if trunc and not closed else -min(1.0, max(0.0, excess)))
    return out


# --------------------------------------------------------------------------- combined

REWARDS: dict[str, RewardFn] = {
    "format": format_reward,
    "correct": correctness_reward,
    "steps": step_reward,
    "length": length_reward,
}


def reward_breakdown(
    prompts: Sequence[Any],
    completions: Sequence[str],
    weights: dict[str, float],
    **kw: Any,
) -> dict[str, list[float]]:
    """Each weighted component (unweighted values) plus ``"total"``, the weighted sum."""
    unknown = set(weights) - set(REWARDS)
    if unknown:
        raise ValueError(f"unknown reward names {sorted(unknown)}; expected {REWARD_NAMES}")
    parts = {name: REWARDS[name](prompts, completions, **kw) for name, w in weights.items() if w}
    total = [0.0] * len(completions)
    for name, values in parts.items():
        total = [t + weights[name] * v for t, v in zip(total, values, strict=True)]
    parts["total"] = total
    return parts


def combined_reward(weights: dict[str, float], **fixed: Any) -> RewardFn:
    """One Tunix-compatible reward: the weighted sum of the named rewards.

    ``fixed`` are keyword arguments given to every call (e.g. ``schema="plain"``,
    ``budget_chars=400``); batch fields override nothing in them.
    """

    def reward(prompts: Sequence[Any], completions: Sequence[str], **kw: Any) -> list[float]:
        return reward_breakdown(prompts, completions, weights, **{**kw, **fixed})["total"]

    reward.__name__ = "combined_reward"
    return reward


def weighted_reward_fns(weights: dict[str, float], **fixed: Any) -> list[RewardFn]:
    """The weighted rewards as a list, for ``GRPOLearner(reward_fns=...)`` (which sums them)."""
    fns = []
    for name, w in weights.items():
        if name not in REWARDS:
            raise ValueError(f"unknown reward name {name!r}; expected one of {REWARD_NAMES}")
        if not w:
            continue

        def fn(prompts, completions, _f=REWARDS[name], _w=w, **kw):  # noqa: ANN001
            return [_w * v for v in _f(prompts, completions, **{**kw, **fixed})]

        fn.__name__ = f"{name}_reward_x{w:g}"
        fns.append(fn)
    return fns


def max_reward(weights: dict[str, float]) -> float:
    """The largest total reward possible (length penalty is at best 0)."""
    return sum(w for name, w in weights.items() if name != "length" and w > 0)
