"""The reasoning format: the one place that says what a prompt, a completion and a correct
answer look like.

Data generation, tokenization, evaluation, RL rewards and the CLI all call this module, so
they can never disagree about whether ``<answer>48.</answer>`` answers "48" (it does).

Two output schemas:

* ``tags`` (default)::

      <reasoning>12 * 4: 10 * 4 = 40, 2 * 4 = 8, 40 + 8 = 48.</reasoning>
      <answer>48</answer>

* ``plain`` (the second seed write-up's Question/Reasoning/Answer schema)::

      Reasoning: ...
      Answer: 48

Two prompt templates: ``chat`` (Gemma turns; control tokens are returned as
:class:`Control` markers so the tokenizer inserts their ids, never parsing them from text)
and ``plain`` (``Question: ...`` for base models).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

Schema = Literal["tags", "plain"]
Template = Literal["chat", "plain"]
SCHEMAS: tuple[str, ...] = ("tags", "plain")
TEMPLATES: tuple[str, ...] = ("chat", "plain")

REASONING_OPEN, REASONING_CLOSE = "<reasoning>", "</reasoning>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

INSTRUCTIONS: dict[str, str] = {
    "tags": (
        "Think step by step inside <reasoning></reasoning>, then give only the final "
        "answer inside <answer></answer>."
    ),
    "plain": (
        "Think step by step after 'Reasoning:', then give only the final answer after 'Answer:'."
    ),
}


@dataclass(frozen=True)
class Control:
    """A Gemma control token (e.g. ``<start_of_turn>``) to be inserted as a token id."""

    piece: str


START_OF_TURN = Control("<start_of_turn>")
END_OF_TURN = Control("<end_of_turn>")
Segment = str | Control


# --------------------------------------------------------------------------- prompts


def prompt_segments(
    question: str,
    *,
    template: Template = "chat",
    schema: Schema = "tags",
    instruction: str | None = None,
    few_shot: list[tuple[str, str, str]] | None = None,
) -> list[Segment]:
    """The prompt as text pieces and control markers, ending where the completion starts.

    ``few_shot`` is a list of ``(question, reasoning, answer)`` shown before the question,
    so base models can be evaluated fairly with worked examples in the same schema.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; expected one of {TEMPLATES}")
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; expected one of {SCHEMAS}")
    instr = INSTRUCTIONS[schema] if instruction is None else instruction
    shots = ""
    for q, r, a in few_shot or []:
        shots += f"Question: {q.strip()}\n{render_completion(r, a, schema)}\n\n"
    body = f"{instr}\n\n{shots}Question: {question.strip()}"
    if template == "chat":
        return [START_OF_TURN, f"user\n{body}", END_OF_TURN, "\n", START_OF_TURN, "model\n"]
    return [f"{body}\n"]


def prompt_text(segments: list[Segment]) -> str:
    """A human-readable rendering (control tokens spelled out), for display only."""
    return "".join(s.piece if isinstance(s, Control) else s for s in segments)


def render_completion(reasoning: str, answer: str, schema: Schema = "tags") -> str:
    """The training target for one example (without the end token)."""
    reasoning, answer = reasoning.strip(), answer.strip()
    if schema == "tags":
        return f"{REASONING_OPEN}{reasoning}{REASONING_CLOSE}\n{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
    if schema == "plain":
        return f"Reasoning: {reasoning}\nAnswer: {answer}"
    raise ValueError(f"unknown schema {schema!r}; expected one of {SCHEMAS}")


def stop_strings(schema: Schema = "tags") -> list[str]:
    """Text after which generation may stop: nothing useful can follow it."""
    return [ANSWER_CLOSE] if schema == "tags" else ["\nQuestion:", "\n\n"]


# --------------------------------------------------------------------------- parsing


@dataclass
class Parsed:
    """What a completion said, and everything wrong with how it said it."""

    reasoning: str | None
    answer: str | None
    well_formed: bool
    problems: list[str] = field(default_factory=list)
    answer_source: str | None = None  # "tag", "plain", "####", "the answer is", "last number"


_NUM = r"[-−+]?(?:[$₹€£]\s*)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-−+]?\.\d+"
_NUM_RE = re.compile(_NUM)
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_THE_ANSWER_RE = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|answer\s*[:=])\s*[:=]?\s*([^\n]+)", re.IGNORECASE
)


def _count(text: str, tag: str) -> int:
    return text.count(tag)


def _parse_tags(text: str) -> Parsed:
    problems: list[str] = []
    n = {t: _count(text, t) for t in (REASONING_OPEN, REASONING_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)}
    for tag, k in n.items():
        if k == 0:
            problems.append(f"missing {tag}")
        elif k > 1:
            problems.append(f"duplicated {tag}")
    reasoning = answer = None
    r_open, r_close = text.find(REASONING_OPEN), text.find(REASONING_CLOSE)
    if r_open >= 0 and r_close > r_open:
        reasoning = text[r_open + len(REASONING_OPEN) : r_close].strip()
        if not reasoning:
            problems.append("empty reasoning")
        if text[:r_open].strip():
            problems.append("text before <reasoning>")
    a_open = text.find(ANSWER_OPEN)
    a_close = text.find(ANSWER_CLOSE, a_open + 1) if a_open >= 0 else -1
    if a_open >= 0 and a_close > a_open:
        if n[ANSWER_OPEN] == 1 and n[ANSWER_CLOSE] == 1:
            answer = text[a_open + len(ANSWER_OPEN) : a_close].strip()
            if not answer:
                problems.append("empty answer")
                answer = None
        if text[a_close + len(ANSWER_CLOSE) :].strip():
            problems.append("text after </answer>")
        if 0 <= r_close and a_open < r_close:
            problems.append("<answer> before </reasoning>")
        elif r_close >= 0 and text[r_close + len(REASONING_CLOSE) : a_open].strip():
            problems.append("text between </reasoning> and <answer>")
    elif a_open >= 0:
        problems.append("unclosed <answer> (truncated?)")
    return Parsed(reasoning, answer, not problems, problems, "tag" if answer else None)


_PLAIN_R = re.compile(r"^\s*Reasoning:\s*", re.IGNORECASE)
_PLAIN_A = re.compile(r"^\s*Answer:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)


def _parse_plain(text: str) -> Parsed:
    problems: list[str] = []
    reasoning = answer = None
    m_r = _PLAIN_R.match(text)
    answers = list(_PLAIN_A.finditer(text))
    if not m_r:
        problems.append("missing Reasoning:")
    if not answers:
        problems.append("missing Answer:")
    elif len(answers) > 1:
        problems.append("duplicated Answer:")
    if m_r:
        end = answers[0].start() if answers else len(text)
        reasoning = text[m_r.end() : end].strip() or None
        if reasoning is None:
            problems.append("empty reasoning")
    if len(answers) == 1:
        answer = answers[0].group(1).strip() or None
        if answer is None:
            problems.append("empty answer")
        if text[answers[0].end() :].strip():
            problems.append("text after Answer:")
    return Parsed(reasoning, answer, not problems, problems, "plain" if answer else None)


def _fallback_answer(text: str) -> tuple[str | None, str | None]:
    m = _HASH_RE.findall(text)
    if m:
        return m[-1].strip(), "####"
    m = _THE_ANSWER_RE.findall(text)
    if m:
        cand = m[-1].strip()
        num = _NUM_RE.search(cand)
        return (num.group(0) if num else cand.rstrip(". ")), "the answer is"
    nums = _NUM_RE.findall(text)
    if nums:
        return nums[-1], "last number"
    return None, None


def parse_completion(text: str, schema: Schema = "tags", strict: bool = True) -> Parsed:
    """Parse a model completion. Never raises.

    Strict mode takes the answer only from the schema's answer slot (a single, closed
    ``<answer>`` tag or ``Answer:`` line). Lenient mode falls back, in order, to a unique
    tag even when other things are wrong, GSM8K's ``#### x``, "the answer is x", and the
    last number in the text; ``answer_source`` says which one was used.
    """
    if not isinstance(text, str):
        return Parsed(None, None, False, ["completion is not text"])
    parsed = _parse_plain(text) if schema == "plain" else _parse_tags(text)
    if strict or parsed.answer is not None:
        return parsed
    # Lenient: take the first closed answer tag even when duplicated, then fallbacks.
    if schema == "tags":
        m = re.search(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), text, re.S)
        if m and m.group(1).strip():
            parsed.answer, parsed.answer_source = m.group(1).strip(), "tag"
            return parsed
        body = text.split(ANSWER_OPEN)[-1] if ANSWER_OPEN in text else text
    else:
        body = text
    answer, source = _fallback_answer(body)
    if answer is None and body is not text:
        answer, source = _fallback_answer(text)
    parsed.answer, parsed.answer_source = answer, source
    if parsed.reasoning is None and text.strip():
        cut = text.find(ANSWER_OPEN)
        parsed.reasoning = (text[:cut] if cut >= 0 else text).replace(
            REASONING_OPEN, ""
        ).strip() or None
    return parsed


# --------------------------------------------------------------------------- answers

_CURRENCY = "$₹€£¥"
_WORD_CURRENCY = re.compile(r"^(?:rs\.?|inr|usd|eur|dollars?)\s*", re.IGNORECASE)
_MIXED = re.compile(r"^([-+]?\d+)\s+(\d+)\s*/\s*(\d+)")
_FRAC = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_DEC = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?", re.IGNORECASE)


def parse_number(s: str) -> Fraction | None:
    """The exact value of a number as people write answers, or None. Never raises.

    Accepts ``1,234``, ``$18.00``, ``₹300``, ``-3``, ``−3``, ``50%`` (as 50), ``3/4``,
    ``1 1/2``, ``48.`` and trailing words or units (``48 apples``, ``12 km/h``).
    """
    if not isinstance(s, str):
        return None
    if len(s) > 1000:
        return None
    t = unicodedata.normalize("NFKC", s).strip().replace("−", "-").replace("–", "-")
    t = t.strip("*_`\"' ")
    t = _WORD_CURRENCY.sub("", t)
    neg = False
    if t[:1] in "+-" and t[1:2] and t[1:2] in _CURRENCY:
        neg, t = t[0] == "-", t[1:]
    t = t.lstrip(_CURRENCY).strip()
    t = _WORD_CURRENCY.sub("", t)
    if neg:
        t = "-" + t
    t = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", t)  # thousands separators
    t = (
        re.sub(r"(?<=\d) (?=\d{3}(?!\d)(?!\s*/))", "", t)
        if re.match(r"^[-+]?\d{1,3}( \d{3})+\b", t)
        else t
    )
    try:
        m = _MIXED.match(t)
        if m:
            whole, num, den = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if den == 0:
                return None
            frac = Fraction(num, den)
            return whole - frac if whole < 0 or m.group(1).startswith("-") else whole + frac
        m = _FRAC.match(t)
        if m:
            den = Fraction(m.group(2))
            return None if den == 0 else Fraction(m.group(1)) / den
        m = _DEC.match(t)
        if m and m.group(0) not in ("+", "-", "."):
            txt = m.group(0)
            if "e" in txt.lower() and abs(int(re.split("[eE]", txt)[1])) > 100:
                return None  # 1e5000 is not an answer, and would not print back
            return Fraction(txt.rstrip(".") or "0") if txt.rstrip(".") not in ("+", "-") else None
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def normalize_answer(s: str | None) -> str:
    """A canonical string for an answer: the exact number if there is one, else folded text.

    Numbers become ``"48"``, ``"3/4"`` or ``"-1/2"``; other answers are case-folded with
    whitespace and surrounding punctuation squeezed. Empty input gives ``""``.
    """
    if not isinstance(s, str):
        return ""
    num = parse_number(s)
    if num is not None:
        return str(num)
    t = unicodedata.normalize("NFKC", s).casefold()
    t = re.sub(r"\s+", " ", t).strip(" .,:;!?\"'`*_")
    return t


def _decimals(x: Fraction) -> int | None:
    """Digits after the point of ``x``'s exact decimal form; None if it has none (1/3)."""
    d, k = x.denominator, [0, 0]
    for i, q in enumerate((2, 5)):
        while d % q == 0:
            d, k[i] = d // q, k[i] + 1
    return max(k) if d == 1 else None


def answers_match(pred: str | None, gold: str | None, rel_tol: float = 1e-6) -> bool:
    """Whether a predicted answer equals the gold one. Never raises; empty never matches.

    Numbers compare by value (exactly, or within ``rel_tol`` relative error so that
    ``0.333333333`` and ``1/3`` agree); anything else compares by normalized text.
    """
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    if not pred.strip() or not gold.strip():
        return False
    p, g = parse_number(pred), parse_number(gold)
    if p is not None and g is not None:
        if p == g:
            return True
        # Tolerance only excuses a decimal rounding a value that has no exact decimal form
        # (0.3333333 for 1/3), by at most half its last digit; else 1000002 "matched" 1000001.
        kp, kg = _decimals(p), _decimals(g)
        if (kp is None) == (kg is None):
            return False
        k = kp if kp is not None else kg
        scale = max(abs(g), Fraction(1))
        return abs(p - g) <= min(Fraction(rel_tol) * scale, Fraction(1, 2 * 10**k))
    if p is not None or g is not None:
        return False
    np_, ng = normalize_answer(pred), normalize_answer(gold)
    return bool(np_) and np_ == ng


def format_number(x: Fraction | int) -> str:
    """How cotune writes a number in reasoning and answers: ``48``, ``2.5``, ``1/3``."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:  # terminating decimal
        s = f"{float(x):.10f}".rstrip("0").rstrip(".")
        if Fraction(s) == x:
            return s
    return f"{x.numerator}/{x.denominator}"


# Exact up to this many decimals; a value with more (or a repeating one) is rounded.
MAX_EXACT_DECIMALS = 6
ROUND_DECIMALS = 2


def _exact_places(x: Fraction) -> int | None:
    """Decimal places ``x`` needs exactly, or None if it repeats or needs too many."""
    places = _decimals(x)
    return places if places is not None and places <= MAX_EXACT_DECIMALS else None


def _fixed(x: Fraction, places: int) -> str:
    """``x`` rounded to ``places`` decimals (half to even), all of them written."""
    q = round(x * 10**places)
    sign, digits = ("-" if q < 0 else ""), str(abs(q)).rjust(places + 1, "0")
    if not places:
        return f"{sign}{digits}"
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def format_value(x: Fraction) -> str:
    """How the calculator (:mod:`cotune.calculator`) writes a value, and so how a ``tool``-style
    trace writes one: exactly when it has at most
    :data:`MAX_EXACT_DECIMALS` decimals (``24``, ``0.2``, ``-3.125``), else rounded to
    :data:`ROUND_DECIMALS` places with every place written (``10 / 3`` -> ``3.33``, ``4.00``),
    more places for a small value that would round to zero. verify accepts a decimal
    rounded correctly at its own precision, so the step stays true."""
    places = _exact_places(x)
    if places is not None:
        return _fixed(x, places)
    for places in range(ROUND_DECIMALS, MAX_EXACT_DECIMALS + 1):
        if round(x * 10**places) != 0:
            break
    return _fixed(x, places)
