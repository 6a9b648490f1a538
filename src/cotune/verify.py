"""Arithmetic claims in reasoning text, and whether they are true.

A claim is an expression written with digits followed by ``=`` and a number, e.g.
``40 + 8 = 48`` or ``(12 - 2) * 3 = 30``. The same checker judges generated training data
(every claim must hold), evaluation (step validity) and RL rewards, so a step the data
generator would reject is also a step the evaluator counts as wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from cotune.format import parse_number

_NUMTOK = r"\$?\d+(?:,\d{3})*(?:\.\d+)?"
# "x" means "times" only between spaced numbers ("5 x 6"), never in "3x - 4" (a variable).
_OP = r"(?:\s*[-+*/×÷]\s*|\s+x\s+)"
# A term: numbers joined by operators, with optional parentheses and leading signs.
_TERM = (
    rf"(?:\(\s*)*-?\s*{_NUMTOK}(?:/\d+(?![\d.]))?"
    rf"(?:\s*\)*{_OP}(?:\(\s*)*-?\s*{_NUMTOK})*\s*\)*%?"
)
# A chain: "12 * 4 = 10 * 4 + 2 * 4 = 48" states two claims, each "=" between neighbours.
_CHAIN_RE = re.compile(rf"(?<![\w.,]){_TERM}(?:\s*=\s*{_TERM})+(?![\d])")
_HAS_OP = re.compile(rf"\d\s*\)*{_OP}\s*\(*\s*-?\s*\$?\d")


@dataclass(frozen=True)
class Claim:
    """One ``expression = value`` statement found in reasoning text."""

    text: str
    expression: str
    claimed: str
    true_value: Fraction | None  # None when the expression could not be evaluated
    correct: bool


class _Parser:
    """A tiny recursive-descent evaluator over exact fractions (no ``eval``)."""

    def __init__(self, s: str) -> None:
        s = (
            s.replace("×", "*")
            .replace("÷", "/")
            .replace("x", "*")
            .replace(",", "")
            .replace("$", "")
        )
        self.toks = re.findall(r"\d+(?:\.\d+)?|[-+*/()]", s)
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
        while self.peek() in ("*", "/"):
            op = self.take()
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
        if not re.fullmatch(r"\d+(?:\.\d+)?", t):
            raise ValueError(f"unexpected {t}")
        return Fraction(t)


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


def find_claims(text: str) -> list[Claim]:
    """Every checkable ``expression = value`` claim in ``text``, in order. Never raises.

    In a chain ``a = b = c`` each neighbouring pair is one claim; a pair of two plain
    numbers states nothing checkable and is skipped, as is anything with a percent sign.
    """
    if not isinstance(text, str):
        return []
    claims = []
    for m in _CHAIN_RE.finditer(text):
        terms = [t.strip() for t in m.group(0).split("=")]
        for left, right in zip(terms, terms[1:], strict=False):
            if "%" in left or "%" in right:
                continue
            if not (_HAS_OP.search(left) or _HAS_OP.search(right)):
                continue
            if left.count("(") != left.count(")"):
                left = left.strip("()").strip()
            if right.count("(") != right.count(")"):
                right = right.strip("()").strip()
            true = evaluate(left)
            if _HAS_OP.search(right):
                other = evaluate(right)
                ok = true is not None and other is not None and true == other
            else:
                ok = true is not None and _claim_holds(true, right.replace("$", ""))
            claims.append(Claim(f"{left} = {right}", left, right, true, ok))
    return claims


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
