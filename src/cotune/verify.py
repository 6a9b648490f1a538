"""Arithmetic claims in reasoning text, and whether they are true.

A claim is an expression written with digits followed by ``=`` and a number, e.g.
``40 + 8 = 48`` or ``(12 - 2) * 3 = 30``. The same checker judges generated training data
(every claim must hold), evaluation (step validity) and RL rewards, so a step the data
generator would reject is also a step the evaluator counts as wrong.

Numbers and operators are read as word problems write them (GSM8K's solutions among them):
``$12``, ``€27``, ``1,250``, ``.5``, ``5 x 6``, ``0.5 X 64``, ``4(17)``, ``25 / 1/3``. A claim
whose expression visibly starts or goes on outside the numbers (``60 minutes x 3/4 = 45``,
``17/3 = 5 and 2/3``) is not judged at all: reading only its numeric part would call a true
step false.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

from cotune.format import parse_number

# Currency signs a number may carry ("$3 * 4 = $12", "€55 - €27 = €28"); values ignore them.
CURRENCIES = "$€£₹"
_CUR = CURRENCIES
# A number: "1,250", "2.5" and GSM8K's leading-dot decimals (".5", "$.25").
_NUMTOK = rf"[{_CUR}]?(?:\d+(?:,\d{{3}})*(?:\.\d+)?|\.\d+)"
# "x" (or "X") means "times" only between spaced numbers ("5 x 6"), never in "3x - 4" (a
# variable).
_OP = r"(?:\s*[-+*/×÷]\s*|\s+[xX]\s+)"
# Between numbers: an operator, or "(" right after a number or ")" (implicit product: "4(17)",
# "300(.30)", "(1/2)(40)"). With a space ("6 (6 apples)") it is prose, not a product.
_JOIN = rf"(?:(?:\s*\))*{_OP}|\)*(?=\())"
# A term: numbers joined by operators, with optional parentheses and leading signs. Every
# stretch of spaces has one place to go (no "\s*\s*"), so a long run of operators without
# "=" fails in linear time instead of trying every way to split the spaces.
_TERM = (
    rf"(?:\(\s*)*(?:-\s*)?{_NUMTOK}(?:/\d+(?![\d.]))?"
    rf"(?:{_JOIN}(?:\(\s*)*(?:-\s*)?{_NUMTOK})*(?:\s*\))*%?"
)
# A chain: "12 * 4 = 10 * 4 + 2 * 4 = 48" states two claims, each "=" between neighbours.
_CHAIN_RE = re.compile(rf"(?<![\w.,]){_TERM}(?:\s*=\s*{_TERM})+(?![\d])")
_HAS_OP = re.compile(rf"\d\s*\)*(?:{_OP}|\(|\)\s*\()\s*\(*\s*-?\s*[{_CUR}]?\.?\d")
# Text just before a chain showing that its first expression starts earlier, outside what
# can be checked: an operator ("60 minutes x 3/4 = 45", "W/2 - 2 = 55", "12 – 2 = 10") or a
# word's "(" ("f(3) = 5").
_CUT_BEFORE = re.compile(r"(?:[-+*/×÷^–—]|(?<![A-Za-z])[xX]|[\w)]\()[ \t]*\Z")
# ... a number, when the chain starts with one: "1 1/2 * 4 = 6", "$100 000 x 10/100".
_NUMBER_BEFORE = re.compile(r"\d[ \t]+\Z")
_NUMBER_START = re.compile(rf"[{_CUR}]?\.?\d")
# ... the "1 and" of a mixed number, when the chain starts with a fraction: "(1 and 1/3) = 28".
_MIXED_BEFORE = re.compile(r"\d[ \t]+and[ \t]+\Z")
_FRACTION_START = re.compile(r"[(\s]*\d+\s*/\s*\d")
# ... a word, when the chain starts with a spaced minus: "25 time-outs - 1 = 24" (the "-"
# subtracts from the time-outs; "is -3 + 5 = 2" is a negative number and stays).
_WORD_BEFORE = re.compile(r"[\w)][ \t]+\Z")
_MINUS_START = re.compile(r"-\s")
# Text just after a chain showing that its last expression goes on: the rest of a mixed
# number ("= 1 and 1/3", "= 5 2/3", "= $3 and $1/3"), space-grouped thousands ("= 18 000"),
# a term with a variable ("= 8x-14", "= 16 + x", "= 3/x", "= 5A/5", "= (5/4)x", "= 2M" at
# the end of a line) or an attached "(" ("= 8(20)").
# A unit is not a variable: "= $65/wand", "= 5 km/h", "= 900g of flour" keep their claim.
_CUT_AFTER = re.compile(
    rf"[ \t]*(?:and[ \t]+)?\(?[{_CUR}]?\d+[ \t]*/[ \t]*\d|[ \t]+\d{{3}}(?![\d.,/])"
    r"|[A-Za-z]+[ \t]*[-+*^(]|[A-Za-z](?![A-Za-z])[ \t]*[/=]|[ \t]*[-+*×÷^][ \t]*[A-Za-z(]"
    r"|[ \t]*/[ \t]*[A-Za-z](?![A-Za-z])|\(|(?<=\))[A-Za-z]|[A-Za-z][ \t]*(?:=|\n|\Z)"
)
# "27 / 8 = 3 r 3": a division of whole numbers stated with its remainder (the steps of
# short division, cotune.data.steps.short_division); true when 3 * 8 + 3 = 27 and 3 < 8.
_REMAINDER_AFTER = re.compile(r"[ \t]+r[ \t]+(\d+)(?![\w/]|[.,]\d)")
_WHOLE_DIVISION = re.compile(r"(\d+)\s*/\s*(\d+)")
_WHOLE = re.compile(r"\d+")
_ALLOWED = re.compile(r"[\d.\s+\-*/()]*")
# A fraction written without spaces after a spaced "/" is one number: "25 / 1/3" divides by a
# third (75), as people read it, not "(25 / 1) / 3". Elsewhere "/" keeps its usual
# left-to-right reading ("60/3/4"); next to "*", "+", "-" the two readings agree.
_SPACED_FRACTION = re.compile(r"(\s/\s*|/\s+)(\d+(?:\.\d+)?/\d+(?:\.\d+)?)(?![\d./])")


@dataclass(frozen=True)
class Claim:
    """One ``expression = value`` statement found in reasoning text."""

    text: str
    expression: str
    claimed: str
    true_value: Fraction | None  # None when the expression could not be evaluated
    correct: bool
    # where the claim is in the text: text[start:end] is what was judged (before any
    # unbalanced parenthesis was trimmed)
    span: tuple[int, int] = field(default=(0, 0), compare=False, repr=False)


class _Parser:
    """A tiny recursive-descent evaluator over exact fractions (no ``eval``)."""

    def __init__(self, s: str) -> None:
        s = s.replace("×", "*").replace("÷", "/").replace("x", "*").replace("X", "*")
        s = s.replace(",", "")
        s = s.translate({ord(c): None for c in _CUR})
        if not _ALLOWED.fullmatch(s):  # anything else is not arithmetic: never skip over it
            raise ValueError("not an arithmetic expression")
        s = _SPACED_FRACTION.sub(r"\1(\2)", s)
        self.toks = re.findall(r"\d+(?:\.\d+)?|\.\d+|[-+*/()]|\S", s)
        self.i = 0

    def parse(self) -> Fraction:
        v = self.expr()
        if self.i != len(self.toks):
            raise ValueError("trailing tokens")
        return v

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        t = self.peek()
        if t is None:
            raise ValueError("unexpected end")
        self.i += 1
        return t

    def expr(self) -> Fraction:
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            v = v + self.term() if op == "+" else v - self.term()
        return v

    def term(self) -> Fraction:
        v = self.unary()
        while self.peek() in ("*", "/", "("):
            op = "*" if self.peek() == "(" else self.take()  # "4(17)": implicit product
            r = self.unary()
            if op == "*":
                v = v * r
            else:
                if r == 0:
                    raise ZeroDivisionError
                v = v / r
        return v

    def unary(self) -> Fraction:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "(":
            self.take()
            v = self.expr()
            if self.take() != ")":
                raise ValueError("unbalanced")
            return v
        t = self.take()
        if not re.fullmatch(r"\d+(?:\.\d+)?|\.\d+", t):
            raise ValueError(f"unexpected {t}")
        return Fraction(t)


@lru_cache(maxsize=1 << 16)  # the same steps recur across a data set; the value is immutable
def evaluate(expression: str) -> Fraction | None:
    """Exact value of an arithmetic expression, or None if it is not one."""
    try:
        if expression.count("(") != expression.count(")"):
            return None
        return _Parser(expression).parse()
    except (ValueError, ZeroDivisionError, IndexError):
        return None


def _claim_holds(true: Fraction, claimed_text: str) -> bool:
    claimed = parse_number(claimed_text.replace(" ", ""))
    if claimed is None:
        return False
    if claimed == true:
        return True
    # A rounded decimal is true when it is the correctly rounded value at its precision.
    digits = claimed_text.split(".")[1] if "." in claimed_text else ""
    digits = re.match(r"\d*", digits).group(0)  # type: ignore[union-attr]
    if digits:
        return abs(true - claimed) <= Fraction(1, 2 * 10 ** len(digits))
    return False


def _cut_before(text: str, start: int, chain: str) -> bool:
    """Whether the text before a chain shows that its first expression starts earlier."""
    lo = max(0, start - 16)

    def ends(p: re.Pattern[str]) -> bool:
        return p.search(text, lo, start) is not None

    return (
        ends(_CUT_BEFORE)
        or (ends(_NUMBER_BEFORE) and _NUMBER_START.match(chain) is not None)
        or (ends(_MIXED_BEFORE) and _FRACTION_START.match(chain) is not None)
        or (ends(_WORD_BEFORE) and _MINUS_START.match(chain) is not None)
    )


def find_claims(text: str) -> list[Claim]:
    """Every checkable ``expression = value`` claim in ``text``, in order. Never raises.

    In a chain ``a = b = c`` each neighbouring pair is one claim; a pair of two plain
    numbers states nothing checkable and is skipped, as is anything with a percent sign,
    and a side whose expression visibly runs on outside the numbers (``60 minutes x 3/4 =
    45``: the claim is about 60 minutes, not 3/4; ``17/3 = 5 and 2/3``; ``W/2 - 2 = 55``):
    judging the part that was found would call a true step false.
    """
    if not isinstance(text, str):
        return []
    claims = []
    for m in _CHAIN_RE.finditer(text):
        # (term, start, end) with the term stripped, in text coordinates
        terms: list[tuple[str, int, int]] = []
        pos = m.start()
        for raw in m.group(0).split("="):
            lead = len(raw) - len(raw.lstrip())
            terms.append((raw.strip(), pos + lead, pos + lead + len(raw.strip())))
            pos += len(raw) + 1
        cut_first = _cut_before(text, m.start(), m.group(0))
        cut_last = _CUT_AFTER.match(text, terms[-1][2]) is not None
        pairs = list(zip(terms, terms[1:], strict=False))
        for k, ((left, start, _), (right, _, end)) in enumerate(pairs):
            if (k == 0 and cut_first) or (k == len(pairs) - 1 and cut_last):
                continue
            if "%" in left or "%" in right:
                continue
            if not (_HAS_OP.search(left) or _HAS_OP.search(right)):
                continue
            if left.count("(") != left.count(")"):
                left = left.strip("()").strip()
            if right.count("(") != right.count(")"):
                right = right.strip("()").strip()
            rem = _remainder_claim(text, left, right, start, end) if k == len(pairs) - 1 else None
            if rem is not None:
                claims.append(rem)
                continue
            true = evaluate(left)
            if _HAS_OP.search(right):
                other = evaluate(right)
                ok = true is not None and other is not None and true == other
            else:
                value = right.translate({ord(c): None for c in _CUR})
                ok = true is not None and _claim_holds(true, value)
            claims.append(Claim(f"{left} = {right}", left, right, true, ok, (start, end)))
    return claims


def whole_division(expression: str) -> tuple[int, int] | None:
    """``(a, b)`` when ``expression`` divides one whole number by another (``27 / 8``)."""
    m = _WHOLE_DIVISION.fullmatch(expression)
    return (int(m[1]), int(m[2])) if m else None


def _remainder_claim(text: str, left: str, right: str, start: int, end: int) -> Claim | None:
    """``a / b = q r m`` when the text goes on from ``a / b = q`` with `` r m``: true when
    ``q`` and ``m`` are the whole quotient and the remainder."""
    after = _REMAINDER_AFTER.match(text, end)
    division = whole_division(left)
    if after is None or division is None or _WHOLE.fullmatch(right) is None:
        return None
    (a, b), q, m = division, int(right), int(after[1])
    true = Fraction(a, b) if b else None
    ok = b > 0 and q == a // b and m == a % b
    claimed = f"{right} r {after[1]}"
    return Claim(f"{left} = {claimed}", left, claimed, true, ok, (start, after.end()))


OPERATIONS = ("+", "-", "*", "/", "several", "other")


def operation(expression: str) -> str:
    """The arithmetic a claim's expression asks for: ``+``, ``-``, ``*`` or ``/`` when it is
    one operation on two numbers, ``several`` for more (``280 * 20 / 100``), ``other`` when
    it is not an expression.

    Why: step validity per operation shows which facts a model has not learned (its
    subtractions, say, while its products hold), which a single rate hides.
    """
    try:
        toks = _Parser(expression).toks
    except ValueError:
        return "other"
    ops = []
    for i, t in enumerate(toks):
        after_operand = i > 0 and (toks[i - 1] == ")" or toks[i - 1][-1].isdigit())
        if t in "+-*/" and after_operand:  # a "-" after an operator or "(" is a sign
            ops.append(t)
        elif t == "(" and after_operand:  # "4(17)": an implicit product
            ops.append("*")
    if not ops:
        return "other"
    return ops[0] if len(ops) == 1 else "several"


@dataclass(frozen=True)
class StepReport:
    n_claims: int
    n_correct: int

    @property
    def all_correct(self) -> bool:
        return self.n_correct == self.n_claims

    @property
    def validity(self) -> float | None:
        return None if self.n_claims == 0 else self.n_correct / self.n_claims


def check_steps(text: str | None) -> StepReport:
    """How many of the reasoning's arithmetic claims are true."""
    claims = find_claims(text or "")
    return StepReport(len(claims), sum(c.correct for c in claims))
