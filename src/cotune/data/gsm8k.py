"""GSM8K solutions -> reasoning whose arithmetic :mod:`cotune.verify` checks.

A GSM8K solution writes each calculation twice: once for people ("Natalia sold 48/2 = 24
clips") and once for the calculator its authors trained with, inside ``<<48/2=24>>``. The
calculator notes are not part of the reasoning a model should write, but each one says
exactly which arithmetic the step did, so each becomes a claim in the text:

* **carried**: the text already states that claim where the note sits (``48/2 = <<48/2=24>>24``
  -> ``48/2 = 24``): the note is removed, the text's claim is what gets checked;
* **restated**: the text states the value after ``=`` but its expression cannot be checked
  (``16 gallons * 1/4 = <<16*1/4=4>>4 gallons``: units between the numbers): the note's
  expression is written out, ``16 gallons * 1/4 = 16 * 1/4 = 4 gallons``, or after the
  value where that would chain into a false claim (``half of 22 = 11 (22 - 11 = 11)``);
* **inserted**: the text states only the value (``she earns $<<12*5=60>>60``): the claim is
  inserted, ``she earns 12 * 5 = $60``;
* **no_operation**: a note that holds no operation (``<<15=15>>``) or nothing cotune can
  evaluate is removed;
* **unplaced**: the text states its own, different claim where the note sits (a GSM8K typo,
  ``50-8 = <<52-8=44>>44``), or no form above turns the note into a true claim without making
  another claim false: the note is removed and the text's claims are judged as they are.

:func:`check_claims` then looks at every claim in the converted reasoning. A false claim is
repaired only when one reading is unambiguous: a run-on chain ``15 x 4 = 60 + 5 = 65``
(its first "=" false as written, meant as "15 x 4 = 60, then 60 + 5 = 65") is split at the
running value. Anything else false is left for cleaning to drop (``false_claim``), and a
claim whose expression cannot be evaluated at all (unbalanced parentheses) is dropped as
``unreadable_claim``: nothing is guessed.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

from cotune.format import parse_number
from cotune.verify import CURRENCIES, Claim, evaluate, find_claims

# "<<48/2=24>>" (GSM8K never nests them)
_NOTE = re.compile(r"<<([^<>]*)>>")
_CUR = CURRENCIES  # the signs verify reads
# The number the text shows right after a note: "<<48/2=24>>24", "<<5*3=15>>$15", ">>1,250".
_SHOWN = re.compile(rf"[ \t]*[{_CUR}]?[ \t]*-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?")
_EQ_BEFORE = re.compile(rf"=[ \t]*[{_CUR}]?[ \t]*\Z")
_CUR_BEFORE = re.compile(rf"[{_CUR}][ \t]*\Z")
_HAS_OP = re.compile(r"\d\s*\)*\s*[-+*/xX]\s*\(*\s*\.?\d|\d\(")
_FIRST_NUMBER = re.compile(rf"[{_CUR}]?\s*(\d[\d,]*(?:\.\d+)?)(?=\s*[-+*/])")
_WORD_END = re.compile(r"[^\s,;:!?]*(?<![.])")
_DOUBLED_CUR = re.compile(rf"([{_CUR}])\1+")
# Counted by :func:`convert`, one per calculator note.
NOTE_KINDS = ("carried", "restated", "inserted", "no_operation", "unplaced")


@dataclass
class Conversion:
    """A converted solution: the reasoning and what happened to each calculator note."""

    reasoning: str
    notes: Counter = field(default_factory=Counter)


def note_expression(expr: str) -> str:
    """A calculator note's expression as cotune writes one: ``.5`` -> ``0.5``, ``*`` for
    ``x``, ``/`` for Python's ``//`` (GSM8K uses it only where the division is exact), a
    leading ``+`` dropped, one space around each operator (``48 / 2``)."""
    e = expr.strip().lstrip("+").replace("//", "/").replace("x", "*").replace(",", "")
    e = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", e)
    e = re.sub(r"\s*([-+*/])\s*", r" \1 ", e).strip()
    e = re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", e))
    # a sign right after "(" or at the start is a sign, not an operator
    return re.sub(r"(^|\()\s*-\s+", r"\1-", e)


def _note(inner: str) -> tuple[str, Fraction] | None:
    """(expression as cotune writes it, exact value) of a note with an operation, else None."""
    expr, eq, _ = inner.rpartition("=")
    if not eq or not _HAS_OP.search(expr.replace("//", "/")):
        return None
    e = note_expression(expr)
    value = evaluate(e)
    return None if value is None else (e, value)


def _wrong(claims: list[Claim]) -> int:
    return sum(not c.correct for c in claims)


def _holds_at(claims: list[Claim], end: int, value: Fraction) -> bool:
    """Whether a true claim of ``value`` ends at ``end``."""
    return any(c.correct and c.span[1] == end and c.true_value == value for c in claims)


def _place(
    text: str, claims: list[Claim], k: int, end: int, expr: str, value: Fraction
) -> tuple[str, str] | None:
    """The line (whose claims are ``claims``) with the note at ``k`` (value shown up to
    ``end``) made a true claim, and how: ``(text, kind)``; None when no form adds it without
    adding a claim that does not hold."""
    if _holds_at(claims, end, value):
        return text, "carried"
    if any(c.span[1] == end for c in claims):
        # the text states its own claim here and it is not the note's ("50-8 = <<52-8=44>>44",
        # a typo in GSM8K): restating would only hide it; it stays, for cleaning to judge
        return None
    cur = _CUR_BEFORE.search(text, 0, k)
    where = cur.start() if cur else k
    pad = "" if where == 0 or text[where - 1] in " \t(" else " "
    chain = text[:where] + f"{pad}{expr} = " + text[where:]
    kind = "restated" if _EQ_BEFORE.search(text, 0, k) else "inserted"
    shown = text[k:end].strip().lstrip(_CUR).strip()
    word_end = _WORD_END.match(text, end).end()  # after a unit written on: "50%", "$65/wand"
    aside = text[:word_end] + f" ({expr} = {shown})" + text[word_end:]
    for cand in (chain, aside):
        found = find_claims(cand)
        if _wrong(found) <= _wrong(claims) and any(
            c.correct and c.true_value == value for c in found
        ):
            return cand, kind
    return None


def _convert_line(line: str, notes: Counter) -> str:
    """One line of a solution with each note carried, restated, inserted or removed."""
    line = _DOUBLED_CUR.sub(r"\1", line)  # "= $$<<4*15=60>>60"
    found = list(_NOTE.finditer(line))
    if not found:
        return line
    # The line without notes, and where each note was in it.
    parts, at, removed = [], [], 0
    pos = 0
    for m in found:
        parts.append(line[pos : m.start()])
        at.append(m.start() - removed)
        removed += m.end() - m.start()
        pos = m.end()
    parts.append(line[pos:])
    text = "".join(parts)
    claims = find_claims(text)
    # right to left, so what is inserted never moves a note still to be placed
    for m, k in zip(reversed(found), reversed(at), strict=True):
        parsed = _note(m.group(1))
        if parsed is None:
            notes["no_operation"] += 1
            continue
        shown = _SHOWN.match(text, k)
        placed = None if shown is None else _place(text, claims, k, shown.end(), *parsed)
        if placed is None:
            notes["unplaced"] += 1
            continue
        new_text, kind = placed
        notes[kind] += 1
        if new_text != text:
            text, claims = new_text, find_claims(new_text)
    return text


def convert(solution: str) -> Conversion:
    """GSM8K's solution text (before ``####``) -> reasoning with claims for its notes."""
    notes: Counter = Counter()
    lines = [_convert_line(x, notes).strip() for x in solution.strip().split("\n")]
    return Conversion("\n".join(x for x in lines if x), notes)


def _split_run_on(text: str, claims: list[Claim]) -> tuple[str, int]:
    """Split run-on chains ``a = b op c = d`` whose first "=" is false as written but true
    up to ``b`` (the running value): ``15 x 4 = 60 + 5 = 65`` -> ``15 x 4 = 60, 60 + 5 = 65``.
    Only where ``a`` is itself an operation. Returns the text and how many were split."""
    n = 0
    for c in reversed(claims):
        if c.correct or c.true_value is None or not _HAS_OP.search(c.expression):
            continue
        first = _FIRST_NUMBER.match(c.claimed)
        if first is None or parse_number(first.group(1)) != c.true_value:
            continue
        start, end = c.span
        right_at = text.rfind(c.claimed, start, end)
        if right_at < 0:
            continue
        value_end = right_at + first.end()
        text = text[:value_end] + f", {first.group(0).strip()}" + text[value_end:]
        n += 1
    return text, n


@dataclass
class Checked:
    """What :func:`check_claims` made of a reasoning: the (possibly repaired) text, the
    repairs, and the claims that do not hold (``false``) or cannot be evaluated
    (``unreadable``); both empty when every claim holds."""

    reasoning: str
    repairs: Counter = field(default_factory=Counter)
    false: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def check_claims(reasoning: str) -> Checked:
    """Repair what has one reading (run-on chains), and list what stays false or unreadable."""
    out = Checked(reasoning)
    claims = find_claims(reasoning)
    if all(c.correct for c in claims):
        return out
    text, n = _split_run_on(reasoning, claims)
    repaired = find_claims(text) if n else claims
    if n and all(c.correct for c in repaired):
        out.reasoning, claims = text, repaired
        out.repairs["run_on_chain"] += n
    for c in claims:
        if not c.correct:
            (out.unreadable if c.true_value is None else out.false).append(c.text)
    return out
