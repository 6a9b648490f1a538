"""Normalization and structural enforcement: what makes a record fit to train on.

A small model copies whatever its data does, so every record that reaches training must
render to a well-formed completion, keep its reasoning short, and reach the answer it
claims. :func:`clean` checks exactly that, removes duplicates and train/test overlap, and
counts every rejected record by reason in a :class:`Report` (nothing disappears silently).
:func:`split` makes deterministic train/val/test splits keyed on the normalized question,
so the same question can never land on both sides.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from cotune.data.records import Record, Reject
from cotune.format import (
    answers_match,
    format_number,
    parse_completion,
    parse_number,
    render_completion,
)
from cotune.verify import Claim, find_claims

TokenCounter = Callable[[str], int]
DEFAULT_MAX_REASONING_TOKENS = 256
_TOKEN_RE = re.compile(r"\d|[^\W\d_]+|[^\w\s]")
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?!\d|st\b|nd\b|rd\b|th\b)")
_AFTER_EQ_RE = re.compile(r"=\s*([-−]?\s*[$₹€£]?\s*\d+(?:,\d{3})*(?:\.\d+)?)")
_CONTROL = ("<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>")


def estimate_tokens(text: str) -> int:
    """A cheap Gemma-like token estimate: each digit, word and punctuation mark is one token
    (Gemma's tokenizer splits numbers into single digits). Pass a real tokenizer's
    ``lambda s: len(tok.encode(s))`` to :func:`clean` when exact counts matter."""
    return len(_TOKEN_RE.findall(text))


def normalize_text(s: str, *, keep_newlines: bool = False) -> str:
    """NFKC (full-width digits, non-breaking spaces, ligatures) and squeezed whitespace."""
    s = unicodedata.normalize("NFKC", s).replace("\r\n", "\n").replace("\r", "\n")
    if not keep_newlines:
        return " ".join(s.split())
    lines = (" ".join(line.split()) for line in s.split("\n"))
    return "\n".join(line for line in lines if line)


def normalize_answer_text(answer: str) -> str | None:
    """An answer as cotune writes it (``1,234.50`` -> ``1234.5``, ``$18`` -> ``18``), or
    None when it is not a number."""
    value = parse_number(answer)
    if value is None:
        return None
    try:
        return format_number(value)
    except (ValueError, OverflowError):  # absurdly long numbers (int-to-str limit, float)
        return None


def question_key(question: str) -> str:
    """The normalized question used for duplicate, overlap and split decisions: case, width,
    whitespace, thousands separators and trailing punctuation do not make a new question."""
    q = unicodedata.normalize("NFKC", question).casefold()
    q = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", q)
    return " ".join(q.split()).strip(" .?!")


def answer_consistent(
    reasoning: str, answer: str, claims: list[Claim] | None = None
) -> bool | None:
    """Whether the reasoning ends where the answer says: its last claim's value, the value
    after its last ``=`` (``... = $8 for 3 gallons``) or its last number equals the answer.
    None when the reasoning has no number to compare. ``claims``: ``find_claims(reasoning)``
    if the caller already has it (saves the most expensive step)."""
    claims = find_claims(reasoning) if claims is None else claims
    if claims and answers_match(claims[-1].claimed.replace(" ", ""), answer):
        return True
    nums = _NUMBER_RE.findall(reasoning)
    if not nums:
        return None
    after_eq = _AFTER_EQ_RE.findall(reasoning)
    if after_eq and answers_match(after_eq[-1], answer):
        return True
    return answers_match(nums[-1], answer)


def completion_problems(reasoning: str, answer: str) -> list[str]:
    """What goes wrong when the record is rendered and parsed back strictly, in both schemas."""
    out = []
    for schema in ("tags", "plain"):
        p = parse_completion(render_completion(reasoning, answer, schema), schema, strict=True)  # type: ignore[arg-type]
        if not p.well_formed:
            out += [f"{schema}: {x}" for x in p.problems]
        elif p.answer != answer.strip() or (p.reasoning or "") != reasoning.strip():
            out.append(f"{schema}: does not round-trip")
    return out


@dataclass
class Report:
    """What :func:`clean` did: counts in, out and rejected by reason, plus the rejects."""

    n_in: int = 0
    n_out: int = 0
    reasons: Counter = field(default_factory=Counter)
    rejects: list[Reject] = field(default_factory=list)
    max_reasoning_tokens_seen: int = 0

    def reject(self, record: Record, reason: str, detail: str) -> None:
        self.reasons[reason] += 1
        self.rejects.append(Reject(reason, detail, raw=record, index=self.n_in - 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_in": self.n_in,
            "n_out": self.n_out,
            "rejected": dict(self.reasons.most_common()),
            "max_reasoning_tokens_seen": self.max_reasoning_tokens_seen,
        }

    def __str__(self) -> str:
        lines = [f"{self.n_in} in, {self.n_out} kept, {self.n_in - self.n_out} rejected"]
        lines += [f"  {reason}: {k}" for reason, k in self.reasons.most_common()]
        return "\n".join(lines)


def check_record(
    r: Record,
    *,
    max_reasoning_tokens: int | None = DEFAULT_MAX_REASONING_TOKENS,
    token_counter: TokenCounter = estimate_tokens,
    require_reasoning: bool = True,
    check_claims: bool = False,
) -> tuple[Record, str | None, str]:
    """Normalize one record and find the first structural problem.

    Returns ``(normalized record, reason or None, detail)``; no dedup (that needs the set).
    """
    q = normalize_text(r.question)
    reasoning = normalize_text(r.reasoning, keep_newlines=True)
    raw_answer = normalize_text(r.answer)
    answer = normalize_answer_text(raw_answer)
    n = replace(r, question=q, reasoning=reasoning, answer=answer or raw_answer)
    if not q:
        return n, "empty_question", "question is empty after normalization"
    if any(c in f"{q} {reasoning} {raw_answer}" for c in _CONTROL):
        return n, "control_token", "text contains a Gemma control token"
    if answer is None:
        return n, "unparsable_answer", f"expected a number, got {raw_answer[:40]!r}"
    if not reasoning:
        if require_reasoning:
            return n, "empty_reasoning", "reasoning is empty"
        return n, None, ""
    n_tok = token_counter(reasoning)
    if max_reasoning_tokens is not None and n_tok > max_reasoning_tokens:
        return n, "reasoning_too_long", f"{n_tok} tokens > {max_reasoning_tokens}"
    problems = completion_problems(reasoning, answer)
    if problems:
        return n, "malformed_completion", "; ".join(problems)
    if answer_consistent(reasoning, answer) is False:
        return n, "answer_inconsistent", "the reasoning's last claim/number is not the answer"
    if check_claims:
        bad = [c for c in find_claims(reasoning) if not c.correct]
        false = [c.text for c in bad if c.true_value is not None]
        if false:
            return n, "false_claim", "; ".join(false)[:200]
        if bad:  # "1(192 = 192": a claim whose expression cannot be evaluated at all
            return n, "unreadable_claim", "; ".join(c.text for c in bad)[:200]
    return n, None, ""


def clean(
    records: Iterable[Record],
    *,
    max_reasoning_tokens: int | None = DEFAULT_MAX_REASONING_TOKENS,
    token_counter: TokenCounter | None = None,
    require_reasoning: bool = True,
    check_claims: bool = False,
    dedupe: bool = True,
    exclude: Iterable[Record | str] = (),
) -> tuple[list[Record], Report]:
    """Normalize records and drop the ones unfit to train on, counting each by reason.

    ``exclude``: records or questions that must not appear (e.g. the test set); matches on
    the exact or normalized question are rejected as ``test_overlap``.
    ``check_claims``: also reject records whose reasoning states a false ``a op b = c``
    (``false_claim``) or a claim whose expression cannot be evaluated (``unreadable_claim``).
    """
    counter = token_counter or estimate_tokens
    banned_exact, banned_key = set(), set()
    for e in exclude:
        q = e.question if isinstance(e, Record) else e
        banned_exact.add(q)
        banned_key.add(question_key(q))
    seen_exact: set[str] = set()
    seen_key: set[str] = set()
    report = Report()
    out: list[Record] = []
    for r in records:
        report.n_in += 1
        if r.question in banned_exact:
            report.reject(r, "test_overlap", "same question as an excluded (test) record")
            continue
        n, reason, detail = check_record(
            r,
            max_reasoning_tokens=max_reasoning_tokens,
            token_counter=counter,
            require_reasoning=require_reasoning,
            check_claims=check_claims,
        )
        if reason:
            report.reject(n, reason, detail)
            continue
        key = question_key(n.question)
        if key in banned_key:
            report.reject(
                n, "test_overlap_normalized", "same normalized question as an excluded record"
            )
            continue
        if dedupe and n.question in seen_exact:
            report.reject(n, "duplicate", "same question as an earlier record")
            continue
        if dedupe and key in seen_key:
            report.reject(
                n, "duplicate_normalized", "same normalized question as an earlier record"
            )
            continue
        seen_exact.add(n.question)
        seen_key.add(key)
        if n.reasoning:
            report.max_reasoning_tokens_seen = max(
                report.max_reasoning_tokens_seen, counter(n.reasoning)
            )
        out.append(n)
    report.n_out = len(out)
    assert report.n_in == report.n_out + sum(report.reasons.values())  # nothing silent
    return out, report


def split(
    records: Iterable[Record],
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
    *,
    seed: int = 0,
) -> dict[str, list[Record]]:
    """Deterministic train/val/test split by a hash of the normalized question.

    The same question (up to case, spacing, thousands separators) always lands in the same
    part, so no question is in two parts; order within each part is kept.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    cut1, cut2 = fractions[0], fractions[0] + fractions[1]
    parts: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for r in records:
        h = hashlib.blake2b(f"{seed}\0{question_key(r.question)}".encode(), digest_size=8).digest()
        u = int.from_bytes(h, "big") / 2**64
        parts["train" if u < cut1 else "val" if u < cut2 else "test"].append(r)
    return parts
