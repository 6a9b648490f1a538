"""The arithmetic inside a trace, written as steps a small model can compute.

A 270M model reads digits one token at a time and writes a result most-significant digit
first, so a claim is easy for it when every digit of the result follows from the digits
directly above it: single-digit facts (``7 + 8 = 15``, ``13 - 7 = 6``, ``7 * 6 = 42``),
the same facts on round numbers (``40 * 30 = 1200``), placing parts side by side
(``500 + 120 + 12``), or taking a single digit off a round number (``40 - 4 = 36``). A claim
whose digits need a carry or a borrow carried across places (``43 - 7 = 36``,
``280 * 20 / 100 = 56``) is where the trained model went wrong most often, so the ``small``
style breaks every such operation into claims of the easy kinds, restating the running value
each time. ``uniform`` is ``small`` with one shape for every division and every
percentage, so no step depends on which case a number falls in: whole-number division one
digit at a time with its remainder (``272 / 8: 2 / 8 = 0 r 2, 27 / 8 = 3 r 3, 32 / 8 = 4 r 0,
so 34``) instead of round chunks and the subtractions they need, and every percentage that
is a multiple of 5 from tenths and half a tenth (``25%``: ``540 / 10 = 54, 54 * 2: ..., 54
/ 2 = 27, 108 + 27: ...``), never halving for 50% or quartering for 25%. ``compact`` writes one
claim per operation, as a person in a hurry would, but still works a bare sum, difference,
product or quotient by place value. ``tool`` is the plan alone, for generating with the
calculator (:mod:`cotune.calculator`): every operation is one claim, a bare ``974 - 754 =
220`` included, so every value in a trace is one the calculator fills in, and the model
only learns which numbers go into which operation. The recipe study (docs/recipe.md)
measures them on the same validation questions.

Every builder returns a list of claims (``"a op b = c"`` strings) whose last result is the
value asked for; :func:`cotune.verify.find_claims` checks each one when a problem is
generated. The style is a context variable so task functions need no extra argument:
``with trace_style("compact"): ...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from fractions import Fraction

from cotune.format import format_number as fmt

TRACE_STYLES = ("small", "compact", "uniform", "tool")
DEFAULT_STYLE = "small"
_STYLE: ContextVar[str] = ContextVar("cotune_trace_style", default=DEFAULT_STYLE)
# Decimal places short division writes at most (the quotients it is used for terminate).
SHORT_DIVISION_PLACES = 4

Num = int | Fraction


@contextmanager
def trace_style(name: str) -> Iterator[None]:
    """Generate traces in style ``name`` inside the block."""
    if name not in TRACE_STYLES:
        raise ValueError(f"unknown trace style {name!r}; expected one of {', '.join(TRACE_STYLES)}")
    token = _STYLE.set(name)
    try:
        yield
    finally:
        _STYLE.reset(token)


def small() -> bool:
    """Whether operations are broken into easy claims (``small`` and ``uniform``)."""
    return _STYLE.get() in ("small", "uniform")


def _uniform() -> bool:
    return _STYLE.get() == "uniform"


def tool() -> bool:
    """Whether every operation is one claim, left for the calculator to fill in (``tool``)."""
    return _STYLE.get() == "tool"


def _int(x: Num) -> int | None:
    """``x`` as a non-negative int when it is one, else None (decimals keep one claim)."""
    x = Fraction(x)
    return int(x) if x.denominator == 1 and x >= 0 else None


def _digits(x: int) -> list[int]:
    return [int(c) for c in reversed(str(x))]


def _parts(x: int) -> list[int]:
    """Non-zero place parts, largest first: 347 -> [300, 40, 7]."""
    return [d * 10**k for k, d in reversed(list(enumerate(_digits(x)))) if d]


def _round(x: int) -> bool:
    """One non-zero digit: 7, 40, 300."""
    return len(_parts(x)) <= 1


def parse_claim_value(c: str) -> Fraction:
    """The value a claim string states (what follows its last ``=``)."""
    return Fraction(c.rsplit("=", 1)[1].strip())


def claim(a: Num, op: str, b: Num, c: Num) -> str:
    return f"{fmt(Fraction(a))} {op} {fmt(Fraction(b))} = {fmt(Fraction(c))}"


# --------------------------------------------------------------------------- + and -


def add(a: Num, b: Num) -> list[str]:
    """``a + b``: place by place when digits carry (``40 + 30 = 70, 7 + 8 = 15, 70 + 15 = 85``)."""
    ia, ib = _int(a), _int(b)
    total = Fraction(a) + Fraction(b)
    # Split whenever both have two non-zero places or more: whether a carry happens is itself
    # a computation, so the shape of the trace depends only on the numbers' digits' places.
    if not small() or ia is None or ib is None or min(ia, ib) < 10 or _round(ia) or _round(ib):
        return [claim(a, "+", b, total)]
    pa, pb = _digits(ia), _digits(ib)
    sums = []
    for k in reversed(range(max(len(pa), len(pb)))):
        x = (pa[k] if k < len(pa) else 0) * 10**k
        y = (pb[k] if k < len(pb) else 0) * 10**k
        if x and y:
            sums.append((claim(x, "+", y, x + y), x + y))
        elif x or y:
            sums.append((None, x + y))
    steps = [s for s, _ in sums if s]
    cur = sums[0][1]
    for _, v in sums[1:]:
        steps.append(claim(cur, "+", v, cur + v))
        cur += v
    return steps


def _sub_int(a: int, b: int) -> list[str]:
    """``a - b`` for ints ``a >= b``, place by place with signed differences, the way a
    column subtraction goes without deciding where to borrow: each place of ``b`` is taken
    from the same place of ``a`` (``3 - 7 = -4`` may come out negative), then the places are
    put together from the top (``83 - 47: 80 - 40 = 40, 3 - 7 = -4, 40 - 4 = 36``). The
    shape depends only on which places are non-zero, and every putting-together claim takes
    one digit off (or places one beside) a number that is round below that place. The one
    comparison left is for a round ``b`` (a single digit at one place): when ``a``'s digit
    there is at least as big, one claim does it (``48 - 3 = 45``), a choice made by two
    digits the question puts side by side rather than by a borrow chain."""
    if b == 0:
        return [claim(a, "-", b, a)]
    da, db = _digits(a), _digits(b)
    if len(_parts(b)) == 1 and da[len(db) - 1] >= db[-1]:
        return [claim(a, "-", b, a - b)]  # one digit taken where it is: no borrow
    out: list[str] = []
    terms: list[int] = []
    for k in reversed(range(len(da))):
        x = da[k] * 10**k
        y = (db[k] if k < len(db) else 0) * 10**k
        if y and x:
            out.append(claim(x, "-", y, x - y))
        if x - y:
            terms.append(x - y)
    cur = terms[0] if terms else 0
    for t in terms[1:]:
        out.append(claim(cur, "+" if t > 0 else "-", abs(t), cur + t))
        cur += t
    if len(terms) == 1 and parse_claim_value(out[-1]) != cur:
        out.append(claim(a, "-", b, a - b))  # 217 - 210: the places left are copied
    return out


def sub(a: Num, b: Num) -> list[str]:
    """``a - b``: place by place with signed differences (:func:`_sub_int`)."""
    ia, ib = _int(a), _int(b)
    if ia is not None and ib is not None and ia < ib:  # negative: the other way round
        return [*worked(ib, "-", ia), claim(a, "-", b, Fraction(a) - Fraction(b))]
    if not small() or ia is None or ib is None:
        return [claim(a, "-", b, Fraction(a) - Fraction(b))]
    return _sub_int(ia, ib)


# --------------------------------------------------------------------------- * and /


def mul(a: Num, b: Num) -> list[str]:
    """``a * b``: partial products of place parts, then their running sum."""
    ia, ib = _int(a), _int(b)
    prod = Fraction(a) * Fraction(b)
    if not small() or ia is None or ib is None or (_round(ia) and _round(ib)) or not ia * ib:
        return [claim(a, "*", b, prod)]
    if ia < 10 <= ib:  # the one-digit factor second: 6 * 47 -> 40 * 6, 7 * 6
        ia, ib = ib, ia
    pairs = [(x, y) for x in _parts(ia) for y in _parts(ib)]
    steps = [claim(x, "*", y, x * y) for x, y in pairs]
    cur = pairs[0][0] * pairs[0][1]
    for x, y in pairs[1:]:  # partial products mostly sit in different places: one claim each
        steps.append(claim(cur, "+", x * y, cur + x * y))
        cur += x * y
    return steps


def div(a: Num, b: Num) -> list[str]:
    """``a / b`` (exact). ``small``: times-table facts on round chunks of the quotient
    (``498 / 6: 6 * 80 = 480, 498 - 480: ..., 18 / 6 = 3, 80 + 3 = 83``); a quotient with a
    decimal part ends on a small division (``14 / 4 = 3.5``). ``uniform``: the
    digits of :func:`short_division`, then the quotient (``272 / 8: 2 / 8 = 0 r 2, 27 / 8 =
    3 r 3, 32 / 8 = 4 r 0, so 34``)."""
    ia, ib = _int(a), _int(b)
    q = Fraction(a) / Fraction(b)
    whole = int(q)
    # Halving is local (each digit needs only its neighbour's parity), and so is dropping
    # zeros for tens and hundreds: one claim each, in every style.
    if ia is not None and ib is not None and _uniform() and ib not in (1, 2, 10, 100):
        if (q * 10**SHORT_DIVISION_PLACES).denominator == 1:
            steps, _, _ = short_division(ia, ib, decimals=True)
            return [*steps, f"so {fmt(q)}"]
    if (
        not small()
        or ia is None
        or ib is None
        or whole < 10
        or (whole == q and _round(whole))
        or not _terminates(q)
        or ib in (2, 10, 100)
    ):
        return [claim(a, "/", b, q)]
    hi = _parts(whole)[0]
    chunk = ib * hi
    return [
        claim(ib, "*", hi, chunk),
        *worked(ia, "-", chunk),
        *worked(ia - chunk, "/", ib),
        claim(hi, "+", q - hi, q),
    ]


def _terminates(q: Fraction) -> bool:
    """A finite decimal (denominator of 2s and 5s): only those are written as a claim."""
    d = q.denominator
    for f in (2, 5):
        while d % f == 0:
            d //= f
    return d == 1


def short_division(a: int, b: int, *, decimals: bool) -> tuple[list[str], int, int]:
    """Short division, one digit of ``a`` at a time: ``(claims, quotient, remainder)``.

    Each claim divides what is left (the last remainder with the next digit written after
    it) by ``b``: ``272 / 8`` is ``2 / 8 = 0 r 2, 27 / 8 = 3 r 3, 32 / 8 = 4 r 0``, and the
    quotient's digits are the claims' quotients in order (034). Why this shape: every claim
    is one times-table fact with its remainder, the number it divides is copied from right
    before it, and it starts at the first digit whatever its size, so no step asks the model
    to compare numbers or to subtract. ``decimals`` goes on past the last digit with a
    written zero (``20 / 5 = 4 r 0``) until nothing is left, for a quotient with a decimal
    end (192 / 5 = 38.4); the quotient returned is then the whole part."""
    steps, rest = [], 0
    for d in str(a):
        n = rest * 10 + int(d)
        q, rest = divmod(n, b)
        steps.append(f"{n} / {b} = {q} r {rest}")
    places = 0
    while decimals and rest and places < SHORT_DIVISION_PLACES:
        n = rest * 10
        q, rest = divmod(n, b)
        steps.append(f"{n} / {b} = {q} r {rest}")
        places += 1
    return steps, a // b, a % b


def chunks(a: int, b: int) -> tuple[list[str], int, int]:
    """Long division by round chunks: ``(claims, quotient, remainder)``, the remainder being
    what is left below ``b`` (``523 / 7: 7 * 70 = 490, 523 - 490: ..., 7 * 4 = 28, 33 - 28:
    ...`` leaves 5)."""
    if _uniform():
        return short_division(a, b, decimals=False)
    q = a // b
    out, rest = [], a
    for part in _parts(q):
        out += worked(b, "*", part)
        out += worked(rest, "-", b * part)
        rest -= b * part
    return out, q, rest


def worked(a: Num, op: str, b: Num) -> list[str]:
    """The claims of ``a op b``, headed by the operation when it takes more than one
    (``47 + 38: 40 + 30 = 70, 7 + 8 = 15, 70 + 15 = 85``): the header restates the numbers
    being worked on, so the parts that follow are copied from right before them."""
    fn = {"+": add, "-": sub, "*": mul, "/": div}[op]
    steps = fn(a, b)
    if len(steps) > 1:
        steps = [f"{fmt(Fraction(a))} {op} {fmt(Fraction(b))}: {steps[0]}", *steps[1:]]
    return steps


def percent_of(base: Num, p: Num) -> list[str]:
    """``p% of base`` from easy parts: halves and quarters, or tenths
    (``280 / 10 = 28, 28 * 2 = 56``), never ``base * p / 100`` in one claim. ``uniform``
    uses tenths for every multiple of 5 (``10%``: ``280 / 10 = 28, 28 * 1 = 28``), because
    a model trained on both shapes took the halving one for 5%, 20%, 25% and 45% alike; with
    that choice gone it added half a tenth where there was none (docs/recipe.md)."""
    base, p = Fraction(base), Fraction(p)
    v = base * p / 100
    if not small():
        return [f"{fmt(base)} * {fmt(p)} / 100 = {fmt(v)}"]
    if not _uniform() and p in (25, 50, 75):  # halves and quarters
        if p == 50:
            return worked(base, "/", 2)
        steps = [*worked(base, "/", 2), *worked(base / 2, "/", 2)]
        return steps if p == 25 else [*steps, *worked(base / 4, "*", 3)]
    if p % 5 == 0:
        tenth = base / 10
        tens, five = divmod(int(p), 10)
        steps = [claim(base, "/", 10, tenth)]
        part = tenth * tens
        if tens > 1 or (tens and _uniform()):
            steps += worked(tenth, "*", tens)
        if five:
            steps += worked(tenth, "/", 2)
            steps += worked(part, "+", tenth / 2) if tens else []
        return steps
    one = base / 100
    return [claim(base, "/", 100, one), *worked(one, "*", p)]
