"""Reasoning-aware metrics: pure functions from (record, completions) to rows to numbers.

Every judgement goes through :mod:`cotune.format` (tags, answers, comparison) and
:mod:`cotune.verify` (arithmetic claims), so a completion the RL reward calls correct is
also correct here, and a step the data generator would reject is an invalid step here.

Definitions (all shares are over *completions* unless they say *examples*):

* format strict: ``parse_completion(strict=True).well_formed``.
* format lenient: an answer can be extracted at all (``parse_completion(strict=False)``).
* accuracy strict: ``answers_match`` on the strict answer (only a single closed answer
  slot counts); accuracy lenient: on the lenient (fallback) answer.
* step validity: true claims / all claims over all completions (claims are found in the
  lenient parse's reasoning); trace validity: share of completions *with at least one
  claim* whose claims are all true. "Right answer via a wrong step": the lenient answer is
  correct although at least one claim is false.
* self-consistency (K > 1): majority vote over ``normalize_answer`` of the lenient answers
  of an example's samples (samples without an answer do not vote; ties go to the answer
  that appeared first); the voted answer is then compared with ``answers_match``.
* truncated: the generator hit its token limit before the closing marker (``</answer>``,
  or an ``Answer:`` line in the plain schema). When the generator did not say whether it
  hit the limit, a completion that opened a tag and never closed it counts as truncated.
* reasoning length: tokens when a tokenizer is given, else whitespace-separated words.

Every share ``x`` also has ``x_ci95``: ``{"successes", "n", "lo", "hi"}``, the 95% Wilson
score interval (:func:`wilson_interval`) of ``successes / n``. With one sample per example
and n questions drawn independently it is the range of accuracies consistent with the
result; with K > 1 samples per example the completions are not independent, so
completion-level intervals are too narrow (the majority-vote one is not affected).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cotune.eval.inputs import EvalRecord
from cotune.format import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    REASONING_CLOSE,
    REASONING_OPEN,
    Schema,
    answers_match,
    normalize_answer,
    parse_completion,
)
from cotune.verify import OPERATIONS, find_claims, operation

LengthFn = Callable[[str], int]


@dataclass
class SampleScore:
    """Everything measured about one completion."""

    completion: str
    well_formed: bool  # strict format compliance
    problems: list[str]
    strict_answer: str | None
    lenient_answer: str | None
    answer_source: str | None
    strict_correct: bool
    lenient_correct: bool
    n_claims: int
    n_true_claims: int
    false_claims: list[str]
    reasoning_length: int | None  # None when there is no reasoning at all
    truncated: bool
    # claims per operation (cotune.verify.operation): {"-": [claims, true claims], ...}
    claims_by_operation: dict[str, list[int]] = field(default_factory=dict)

    @property
    def has_answer(self) -> bool:
        return self.lenient_answer is not None

    @property
    def steps_all_true(self) -> bool | None:
        return None if self.n_claims == 0 else self.n_true_claims == self.n_claims

    @property
    def right_via_wrong_step(self) -> bool:
        return self.lenient_correct and self.n_true_claims < self.n_claims

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["right_via_wrong_step"] = self.right_via_wrong_step
        return d


@dataclass
class ExampleRow:
    """One gold record with the scores of all its samples and the majority vote."""

    id: str
    task: str
    difficulty: int | str | None
    question: str
    gold: str
    samples: list[SampleScore] = field(default_factory=list)
    majority_answer: str | None = None
    majority_correct: bool = False
    majority_votes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "difficulty": self.difficulty,
            "question": self.question,
            "gold": self.gold,
            "majority_answer": self.majority_answer,
            "majority_correct": self.majority_correct,
            "majority_votes": self.majority_votes,
            "samples": [s.to_dict() for s in self.samples],
        }


def words(text: str) -> int:
    """Reasoning length in whitespace-separated words (the tokenizer-free fallback)."""
    return len(text.split())


def looks_truncated(completion: str, schema: Schema = "tags") -> bool:
    """Whether a completion ended inside the format: a tag opened and never closed.

    Used only when the generator did not report whether it hit its token limit.
    """
    if not isinstance(completion, str) or not completion.strip():
        return False
    if schema == "plain":
        p = parse_completion(completion, "plain", strict=True)
        return p.reasoning is not None and "missing Answer:" in p.problems
    if ANSWER_CLOSE in completion:
        return False
    if completion.rfind(ANSWER_OPEN) >= 0:
        return True
    return completion.rfind(REASONING_OPEN) > completion.rfind(REASONING_CLOSE)


def _closed(completion: str, schema: Schema) -> bool:
    if schema == "plain":
        return parse_completion(completion, "plain", strict=True).answer is not None
    return ANSWER_CLOSE in completion


def score_completion(
    completion: str,
    gold: str,
    *,
    schema: Schema = "tags",
    hit_limit: bool | None = None,
    length_fn: LengthFn = words,
) -> SampleScore:
    """Score one completion against the gold answer. Never raises on odd text.

    ``hit_limit`` is what the generator said about its token limit (None = unknown).
    """
    text = completion if isinstance(completion, str) else ""
    strict = parse_completion(text, schema, strict=True)
    lenient = parse_completion(text, schema, strict=False)
    claims = find_claims(lenient.reasoning or "")
    if hit_limit is None:
        truncated = looks_truncated(text, schema)
    else:
        truncated = bool(hit_limit) and not _closed(text, schema)
    return SampleScore(
        completion=text,
        well_formed=strict.well_formed,
        problems=list(strict.problems),
        strict_answer=strict.answer,
        lenient_answer=lenient.answer,
        answer_source=lenient.answer_source,
        strict_correct=answers_match(strict.answer, gold),
        lenient_correct=answers_match(lenient.answer, gold),
        n_claims=len(claims),
        n_true_claims=sum(c.correct for c in claims),
        false_claims=[c.text for c in claims if not c.correct],
        reasoning_length=None if lenient.reasoning is None else length_fn(lenient.reasoning),
        truncated=truncated,
        claims_by_operation=_by_operation(claims),
    )


def _by_operation(claims: Sequence[Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for c in claims:
        n = out.setdefault(operation(c.expression), [0, 0])
        n[0] += 1
        n[1] += int(c.correct)
    return out


def by_operation(samples: Sequence[SampleScore]) -> dict[str, dict[str, Any]]:
    """Step validity per operation (``+ - * /``, ``several``), in ``OPERATIONS`` order."""
    total: dict[str, list[int]] = {}
    for s in samples:
        for op, (n, ok) in s.claims_by_operation.items():
            t = total.setdefault(op, [0, 0])
            t[0] += n
            t[1] += ok
    return {
        op: {
            "claims": total[op][0],
            "true_claims": total[op][1],
            **_rate("step_validity", total[op][1], total[op][0]),
        }
        for op in OPERATIONS
        if op in total
    }


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """The most common answer by ``normalize_answer`` and its vote count.

    Missing answers do not vote; ties go to the answer seen first. The returned string is
    the first raw answer with the winning normal form (so it can go to ``answers_match``).
    """
    keys = [normalize_answer(a) if a is not None else "" for a in answers]
    counts = Counter(k for k in keys if k)
    if not counts:
        return None, 0
    best = max(counts.values())
    for a, k in zip(answers, keys, strict=True):
        if k and counts[k] == best:
            return a, best
    return None, 0  # unreachable


def score_example(
    record: EvalRecord,
    completions: Sequence[str],
    *,
    schema: Schema = "tags",
    hit_limit: Sequence[bool | None] | None = None,
    length_fn: LengthFn = words,
) -> ExampleRow:
    """Score all samples of one record and take the majority vote over them."""
    flags = list(hit_limit) if hit_limit is not None else [None] * len(completions)
    if len(flags) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(flags)} truncation flags")
    samples = [
        score_completion(c, record.answer, schema=schema, hit_limit=f, length_fn=length_fn)
        for c, f in zip(completions, flags, strict=True)
    ]
    voted, votes = majority_vote([s.lenient_answer for s in samples])
    return ExampleRow(
        id=record.id,
        task=record.task,
        difficulty=record.difficulty,
        question=record.question,
        gold=record.answer,
        samples=samples,
        majority_answer=voted,
        majority_correct=answers_match(voted, record.answer),
        majority_votes=votes,
    )


def _share(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


CI_SUFFIX = "_ci95"


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a binomial share ``successes / n`` (z = 1.96: 95%).

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0/n or
    n/n, which matters for small per-task groups. ``n == 0`` gives (0, 1): no data rules
    nothing out.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At 0/n and n/n the bound is exactly 0 or 1; floating point would leave 1e-17 off.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def _rate(name: str, successes: int, n: int) -> dict[str, Any]:
    """``name``: the share (None without data) and ``name_ci95``: its Wilson interval."""
    lo, hi = wilson_interval(successes, n)
    return {
        name: _share(successes, n),
        name + CI_SUFFIX: {"successes": successes, "n": n, "lo": lo, "hi": hi},
    }


def aggregate(rows: Sequence[ExampleRow], *, length_unit: str = "words") -> dict[str, Any]:
    """All headline numbers for a set of scored examples (see the module docstring)."""
    samples = [s for r in rows for s in r.samples]
    n = len(samples)
    k_max = max((len(r.samples) for r in rows), default=0)
    claims = sum(s.n_claims for s in samples)
    true_claims = sum(s.n_true_claims for s in samples)
    with_claims = [s for s in samples if s.n_claims]
    lenient_correct = sum(s.lenient_correct for s in samples)
    wrong_step = sum(s.right_via_wrong_step for s in samples)
    lengths = [s.reasoning_length for s in samples if s.reasoning_length is not None]
    scored_rows = [r for r in rows if r.samples]
    all_true = sum(bool(s.steps_all_true) for s in with_claims)
    truncated = sum(s.truncated for s in samples)
    sampled = k_max > 1
    out: dict[str, Any] = {
        "n_examples": len(rows),
        "n_completions": n,
        "samples_per_example": k_max,
        **_rate("format_strict", sum(s.well_formed for s in samples), n),
        **_rate("format_lenient", sum(s.has_answer for s in samples), n),
        **_rate("accuracy_strict", sum(s.strict_correct for s in samples), n),
        **_rate("accuracy_lenient", lenient_correct, n),
        **(
            _rate(
                "majority_accuracy",
                sum(r.majority_correct for r in scored_rows),
                len(scored_rows),
            )
            if sampled
            else {"majority_accuracy": None}
        ),
        **(
            _rate(
                "any_correct",
                sum(any(s.lenient_correct for s in r.samples) for r in scored_rows),
                len(scored_rows),
            )
            if sampled
            else {"any_correct": None}
        ),
        "steps": {
            "claims": claims,
            "true_claims": true_claims,
            **_rate("step_validity", true_claims, claims),
            "traces_with_claims": len(with_claims),
            "traces_all_true": all_true,
            **_rate("trace_validity", all_true, len(with_claims)),
            "right_answer_wrong_step": wrong_step,
            **_rate("right_answer_wrong_step_share_of_correct", wrong_step, lenient_correct),
            "by_operation": by_operation(samples),
        },
        "truncated": truncated,
        **_rate("truncated_rate", truncated, n),
        "reasoning_length": {
            "unit": length_unit,
            "n": len(lengths),
            "mean": statistics.fmean(lengths) if lengths else None,
            "median": statistics.median(lengths) if lengths else None,
            "max": max(lengths) if lengths else None,
        },
        "problems": dict(Counter(p for s in samples for p in s.problems).most_common()),
        "answer_sources": dict(Counter(s.answer_source or "none" for s in samples).most_common()),
    }
    return out


def breakdown(
    rows: Sequence[ExampleRow], key: Callable[[ExampleRow], Any], *, length_unit: str = "words"
) -> dict[str, dict[str, Any]]:
    """``aggregate`` per group (e.g. per task or difficulty), groups sorted by name."""
    groups: dict[str, list[ExampleRow]] = {}
    for r in rows:
        groups.setdefault(str(key(r)), []).append(r)
    return {
        g: aggregate(rs, length_unit=length_unit)
        for g, rs in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))
    }


def _sort_key(name: str) -> tuple[int, Any]:
    return (0, int(name)) if name.lstrip("-").isdigit() else (1, name)


GALLERY_KINDS = ("wrong_answer", "malformed", "invalid_steps")


def _failure_kinds(s: SampleScore) -> list[str]:
    kinds = []
    if not s.lenient_correct:
        kinds.append("wrong_answer")
    if not s.well_formed:
        kinds.append("malformed")
    if s.n_true_claims < s.n_claims:
        kinds.append("invalid_steps")
    return kinds


def gallery(rows: Sequence[ExampleRow], size: int = 5) -> dict[str, list[dict[str, Any]]]:
    """The worst failures per kind, at most ``size`` each and one sample per example.

    "Worst" = the sample failing in the most ways (wrong answer, malformed, invalid steps),
    then the most false claims, then data order, so the gallery is deterministic.
    """
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in GALLERY_KINDS}
    cands: dict[str, list[tuple[tuple[int, int, int], dict[str, Any]]]] = {
        k: [] for k in GALLERY_KINDS
    }
    for order, r in enumerate(rows):
        best: dict[str, tuple[tuple[int, int, int], SampleScore, int]] = {}
        for i, s in enumerate(r.samples):
            kinds = _failure_kinds(s)
            sev = (-len(kinds), -len(s.false_claims), order)
            for k in kinds:
                if k not in best or sev < best[k][0]:
                    best[k] = (sev, s, i)
        for k, (sev, s, i) in best.items():
            cands[k].append(
                (
                    sev,
                    {
                        "id": r.id,
                        "task": r.task,
                        "difficulty": r.difficulty,
                        "sample": i,
                        "question": r.question,
                        "gold": r.gold,
                        "completion": s.completion,
                        "predicted": s.lenient_answer,
                        "problems": s.problems,
                        "false_claims": s.false_claims,
                        "failures": _failure_kinds(s),
                    },
                )
            )
    for k in GALLERY_KINDS:
        out[k] = [d for _, d in sorted(cands[k], key=lambda t: t[0])[:size]]
    return out
