"""Arithmetic, expression and equation problems, with the reasoning a careful person writes.

Each task is ``f(rng, difficulty) -> Problem``. The reasoning is a few short claims
``a op b = c`` (place value for + and -, partial products for *, chunked long division for /)
so :func:`cotune.verify.find_claims` can check every step. ``Problem.check`` is the answer
computed a second, independent way (straight from the question's numbers with exact
fractions); :mod:`cotune.data.generators` refuses any problem where the two disagree.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

from cotune.data import steps as S
from cotune.data.phrasing import ITEMS, NAMES, HeldOut, phrase, spell
from cotune.format import format_number as fmt
from cotune.format import format_value
from cotune.verify import evaluate


@dataclass(frozen=True, slots=True)
class Problem:
    question: str
    reasoning: str
    answer: Fraction  # what the reasoning arrived at
    check: Fraction  # the same answer computed independently from the question's numbers


def claims(*steps: str) -> str:
    """Join steps into one short sentence: ``a, b, c.``"""
    return ", ".join(steps) + "."


def _digits(rng: random.Random, n: int) -> int:
    return rng.randint(10 ** (n - 1), 10**n - 1)


def _ask(rng: random.Random, templates: tuple[str, ...], **nums: int) -> str:
    """A question from one of ``templates`` (see :func:`cotune.data.phrasing.phrase`).

    Templates may use the numbers as digits (``{a}``) or in words (``{wa}``, digits above
    99), and a ``{name}``, an item (``{one}``/``{many}``) and an ``{age}`` that the answer
    does not depend on, so stories can carry an irrelevant number.
    """
    t = phrase(rng, templates)
    name, (one, many), age = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(7, 15)
    spelled = {f"w{k}": spell(v) if 0 <= v <= 99 else str(v) for k, v in nums.items()}
    return t.format(**nums, **spelled, name=name, one=one, many=many, age=age)


def _split(x: int, units: tuple[int, ...]) -> list[int]:
    """Place-value parts of ``x`` at the given units, e.g. 347 at (100, 10, 1) -> [300, 40, 7]."""
    parts = []
    for u in units:
        parts.append(x - x % u)
        x %= u
    return parts


# --------------------------------------------------------------------------- + and -

_ADD_Q = (
    "What is {a} + {b}?",
    "Compute {a} + {b}.",
    "Add {a} and {b}.",
    "Find the sum of {a} and {b}.",
    "What do you get when you add {b} to {a}?",
    "{a} + {b} = ?",
    "{name} has {a} {many} and gets {b} more. How many {many} does {name} have now?",
    "{name}, who is {age}, has {a} {many} and is given {b} more. How many {many} is that in all?",
    "A bus has {a} people on it. At the next stop {b} more get on and nobody gets off. "
    "How many people are on the bus now?",
    HeldOut("Increase {a} by {b}. What number do you get?"),
    HeldOut(
        "A farm with {age} workers picks {a} kg of apples in the morning and {b} kg in the "
        "afternoon. How many kg does it pick that day?"
    ),
    HeldOut("What number is {b} more than {a}?"),
)
_ADD_WORDS = ("What is {wa} plus {wb}?", HeldOut("Put {wa} and {wb} together. What total is that?"))
_SUB_Q = (
    "What is {a} - {b}?",
    "Compute {a} - {b}.",
    "Subtract {b} from {a}.",
    "What is {b} less than {a}?",
    "Find the difference {a} - {b}.",
    "{a} - {b} = ?",
    HeldOut("What is {a} minus {b}?"),
    HeldOut("Start at {a} and count back {b}. Where do you end up?"),
)
_SUB_STORY = (  # only when the result is positive
    "{name} has {a} {many} and gives {b} away. How many {many} are left?",
    "{name}, who is {age}, had {a} {many} and lost {b} of them. How many does {name} have now?",
    "A shelf holds {a} books. {b} are taken off it. How many books remain on the shelf?",
    "Subtract {wb} from {wa}.",
    HeldOut(
        "A tank holds {a} litres of water and {b} litres leak out. How many litres are still "
        "in the tank?"
    ),
    HeldOut("How much larger is {a} than {b}?"),
)


def _place_add(a: int, b: int, units: tuple[int, ...]) -> list[str]:
    pa, pb = _split(a, units), _split(b, units)
    steps, sums = [], []
    for x, y in zip(pa, pb, strict=True):
        if x or y:
            steps.append(f"{x} + {y} = {x + y}")
            sums.append(x + y)
    if len(sums) > 1:
        steps.append(" + ".join(map(str, sums)) + f" = {a + b}")
    return steps


def add(rng: random.Random, d: int) -> Problem:
    if d == 1:
        a, b, units = _digits(rng, 2), _digits(rng, 2), (10, 1)
    elif d == 2:
        a, b, units = _digits(rng, 3), _digits(rng, 3), (100, 10, 1)
    else:
        a, b, units = _digits(rng, 4), _digits(rng, rng.choice((3, 4))), (100, 1)
    q = _ask(rng, _ADD_Q + (_ADD_WORDS if a < 100 and b < 100 else ()), a=a, b=b)
    if S.small():
        r = claims(*S.worked(a, "+", b))
    elif S.tool():
        r = claims(S.claim(a, "+", b, a + b))
    else:
        r = f"{a} + {b}: " + claims(*_place_add(a, b, units))
    return Problem(q, r, Fraction(a + b), Fraction(a) + Fraction(b))


def _place_sub(a: int, b: int, units: tuple[int, ...]) -> list[str]:
    """Take ``b`` away from ``a`` one place at a time (a >= b)."""
    steps, cur = [], a
    for part in _split(b, units):
        if part:
            steps.append(f"{cur} - {part} = {cur - part}")
            cur -= part
    return steps or [f"{a} - 0 = {a}"]


def sub(rng: random.Random, d: int) -> Problem:
    n, units, p_neg = {1: (2, (10, 1), 0.0), 2: (3, (100, 10, 1), 0.2), 3: (4, (100, 1), 0.5)}[d]
    a, b = _digits(rng, n), _digits(rng, n if d < 3 else rng.choice((3, 4)))
    if (a < b) != (rng.random() < p_neg):
        a, b = b, a
    if a == b:
        b -= 1
    q = _ask(rng, _SUB_Q + (_SUB_STORY if a > b else ()), a=a, b=b)
    if S.small():
        r = claims(*S.worked(a, "-", b))
    elif S.tool():
        r = claims(S.claim(a, "-", b, a - b))
    elif a >= b:
        r = f"{a} - {b}: " + claims(*_place_sub(a, b, _units_for(b, units)))
    else:  # negative result: subtract the other way round, then flip the sign
        steps = _place_sub(b, a, _units_for(a, units))
        r = f"{a} - {b}: " + claims(*steps, f"so {a} - {b} = {a - b}")
    return Problem(q, r, Fraction(a - b), Fraction(a) - Fraction(b))


def _units_for(x: int, units: tuple[int, ...]) -> tuple[int, ...]:
    return units if x >= units[0] else tuple(u for u in units if u < units[0]) or (1,)


# --------------------------------------------------------------------------- *

_MUL_Q = (
    "What is {a} * {b}?",
    "Compute {a} * {b}.",
    "Multiply {a} by {b}.",
    "What is {a} times {b}?",
    "Find the product of {a} and {b}.",
    "{a} * {b} = ?",
    "Multiply {a} by {wb}.",
    HeldOut("What is {a} multiplied by {b}?"),
    HeldOut("{b} copies of {a} are added together. What is the total?"),
)
_MUL_STORY = (  # only for a positive product
    "{name} buys {b} boxes with {a} {many} in each. How many {many} is that?",
    "A hall has {a} rows with {b} seats in each row. How many seats are there?",
    "{name}, who is {age}, saves {b} coins every day for {a} days. How many coins is that?",
    HeldOut("A baker fills {b} trays and puts {a} rolls on each tray. How many rolls are baked?"),
)


def _partial_products(a: int, b: int) -> list[str]:
    """``a * b`` by splitting the second factor (or the first when the second is one digit)."""
    if b < 10:  # 347 * 6: 300 * 6, 47 * 6
        hi, lo = a - a % 10 ** (len(str(a)) - 1), a % 10 ** (len(str(a)) - 1)
        pairs = [(hi, b), (lo, b)]
    else:  # 47 * 38: 47 * 30, 47 * 8
        hi, lo = b - b % 10 ** (len(str(b)) - 1), b % 10 ** (len(str(b)) - 1)
        pairs = [(a, hi), (a, lo)]
    pairs = [(x, y) for x, y in pairs if x and y]
    steps = [f"{x} * {y} = {x * y}" for x, y in pairs]
    if len(pairs) > 1:
        steps.append(f"{pairs[0][0] * pairs[0][1]} + {pairs[1][0] * pairs[1][1]} = {a * b}")
    return steps


def mul(rng: random.Random, d: int) -> Problem:
    if d == 1:
        a, b = _digits(rng, 2), rng.randint(2, 9)
    elif d == 2:
        a, b = _digits(rng, 2), _digits(rng, 2)
    else:
        a, b = _digits(rng, 3), _digits(rng, 2)
    neg = d == 3 and rng.random() < 0.25
    sa = -a if neg else a
    q = _ask(rng, _MUL_Q + (() if neg else _MUL_STORY), a=sa, b=b)
    if S.small() and not neg:
        r = claims(*S.worked(a, "*", b))
    elif S.tool():
        r = claims(S.claim(sa, "*", b, sa * b))
    else:
        steps = S.mul(a, b) if S.small() else _partial_products(a, b)
        if neg:
            steps.append(f"so {sa} * {b} = {sa * b}")
        r = f"{sa} * {b}: " + claims(*steps)
    return Problem(q, r, Fraction(sa * b), Fraction(sa) * Fraction(b))


# --------------------------------------------------------------------------- /

_DIV_Q = (
    "What is {a} / {b}?",
    "Compute {a} / {b}.",
    "Divide {a} by {b}.",
    "What is {a} divided by {b}?",
    "How many times does {b} go into {a}?",
    "{a} / {b} = ?",
    "Divide {a} by {wb}.",
    "{a} {many} are shared equally among {b} friends. How many does each friend get?",
    "{name}, who is {age}, packs {a} eggs into boxes of {b}. How many boxes are filled?",
    "A rope {a} cm long is cut into {b} equal pieces. How long is each piece in cm?",
    HeldOut("{a} is split into {b} equal parts. How big is each part?"),
    HeldOut(
        "A school orders {a} chairs for {b} classrooms, the same number for each. How many "
        "chairs does each classroom get?"
    ),
    HeldOut(
        "{a} sweets are put into {wb} jars, the same number in every jar. How many go in each?"
    ),
)
_REM_Q = (
    "What is the remainder when {a} is divided by {b}?",
    "Divide {a} by {b}. What is the remainder?",
    "Find the remainder of {a} / {b}.",
    "{a} sweets are shared equally among {b} children, each getting as many as possible. "
    "How many sweets are left over?",
    "{a} eggs are packed into boxes of {b}. How many eggs are left after filling as many "
    "full boxes as possible?",
    "Divide {a} by {wb}. What is the remainder?",
    "{name}, who is {age}, shares {a} pencils equally among {b} friends, each getting as many as "
    "possible. How many pencils does {name} have left?",
    "{a} people wait for a ride. Each car takes exactly {b}. After as many cars as possible are "
    "filled, how many people are still waiting?",
    HeldOut("What is left over when {a} is split into as many groups of {b} as possible?"),
    HeldOut(
        "{a} books go onto shelves that hold {b} books each. Every shelf is filled before the "
        "next is started. How many books are on the last, partly filled shelf?"
    ),
)


def _long_division(a: int, d: int) -> list[str]:
    """Chunked long division: take off the biggest round multiple, then the rest."""
    q = a // d
    if q < 10:
        return [f"{d} * {q} = {a}", f"so {a} / {d} = {q}"]
    hi = q - q % 10 ** (len(str(q)) - 1)
    lo = q - hi
    if lo == 0:
        return [f"{d} * {hi} = {a}", f"so {a} / {d} = {q}"]
    rest = a - d * hi
    return [
        f"{d} * {hi} = {d * hi}",
        f"{a} - {d * hi} = {rest}",
        f"{rest} / {d} = {lo}",
        f"{hi} + {lo} = {q}",
    ]


def div(rng: random.Random, d: int) -> Problem:
    if d == 1:
        b, q = rng.randint(2, 9), rng.randint(2, 12)
    elif d == 2:
        b, q = rng.randint(2, 9), rng.randint(13, 99)
    else:
        b, q = (
            (rng.randint(11, 25), rng.randint(12, 99))
            if rng.random() < 0.5
            else (rng.randint(3, 9), rng.randint(100, 999))
        )
    a = b * q
    prob = _ask(rng, _DIV_Q, a=a, b=b)
    if S.small():
        r = claims(*S.worked(a, "/", b))
    elif S.tool():
        r = claims(S.claim(a, "/", b, q))
    else:
        r = f"{a} / {b}: " + claims(*_long_division(a, b))
    return Problem(prob, r, Fraction(q), Fraction(a) / Fraction(b))


def div_remainder(rng: random.Random, d: int) -> Problem:
    lo, hi, dlo, dhi = {1: (10, 60, 2, 9), 2: (100, 999, 3, 9), 3: (1000, 9999, 11, 30)}[d]
    b = rng.randint(dlo, dhi)
    a = rng.randint(lo, hi)
    if a % b == 0:
        a += rng.randint(1, b - 1)
    q = a // b
    prob = _ask(rng, _REM_Q, a=a, b=b)
    if S.small():
        r = f"{a} / {b}: " + claims(*S.chunks(a, b)[0])
    elif S.tool():  # the whole part is copied from the quotient the calculator writes
        r = claims(
            f"{a} / {b} = {format_value(Fraction(a, b))}",
            f"Whole: {q}",
            f"{b} * {q} = {b * q}",
            f"Left: {a} - {b * q} = {a - b * q}",
        )
    else:
        r = f"{a} / {b}: " + claims(f"{b} * {q} = {b * q}", f"{a} - {b * q} = {a - b * q}")
    exact = Fraction(a, b)
    return Problem(prob, r, Fraction(a - b * q), (exact - exact.__floor__()) * b)


# --------------------------------------------------------------------------- expressions

_EXPR_Q = (
    "What is {e}?",
    "Compute {e}.",
    "Evaluate {e}.",
    "Work out {e}.",
    "Find the value of {e}.",
    "{e} = ?",
    HeldOut("Simplify {e} to a single number."),
    HeldOut("What number does {e} equal?"),
)
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
Node = int | tuple[str, "Node", "Node"]


def _render(n: Node) -> str:
    if isinstance(n, int):
        return str(n)
    op, left, right = n
    ls, rs = _render(left), _render(right)
    if isinstance(left, tuple) and _PREC[left[0]] < _PREC[op]:
        ls = f"({ls})"
    if isinstance(right, tuple) and _PREC[right[0]] <= _PREC[op]:
        rs = f"({rs})"  # also a + (b + c): the brackets show the order the steps use
    return f"{ls} {op} {rs}"


def _reduce(n: Node, steps: list[str], allow_neg: bool) -> Fraction | None:
    """Evaluate children first (the order of operations), writing one claim per operation.
    None when a step is not nice (inexact division, unwanted negative, too big)."""
    if isinstance(n, int):
        return Fraction(n)
    op, left, right = n
    a = _reduce(left, steps, allow_neg)
    b = _reduce(right, steps, allow_neg) if a is not None else None
    if a is None or b is None:
        return None
    if op == "/" and (b == 0 or (a / b).denominator != 1):
        return None
    v = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else a}[op]
    if (v < 0 and not allow_neg) or abs(v) > 10_000:
        return None
    steps.append(f"{fmt(a)} {op} {fmt(b)} = {fmt(v)}")
    return v


def _tree(rng: random.Random, n_ops: int, hi: int) -> Node:
    if n_ops == 0:
        return rng.randint(1, hi)
    k = rng.randint(0, n_ops - 1)
    op = rng.choice("+-*/")
    left, right = _tree(rng, k, hi), _tree(rng, n_ops - 1 - k, hi)
    if op == "/" or (op == "*" and isinstance(right, int)):  # doable by hand
        right = rng.randint(2, 9)
    return (op, left, right)


def expr(rng: random.Random, d: int) -> Problem:
    n_ops, hi = {1: (2, 12), 2: (3, 20), 3: (rng.choice((3, 4)), 30)}[d]
    while True:  # rejection sampling: a few tries find a tree with nice steps
        t = _tree(rng, n_ops, hi)
        steps: list[str] = []
        v = _reduce(t, steps, allow_neg=d == 3)
        if v is None:
            continue
        e = _render(t)
        if d >= 2 and "(" not in e and rng.random() < 0.7:
            continue  # make parentheses common above level 1
        check = evaluate(e)
        if check is None:
            continue
        prob = phrase(rng, _EXPR_Q).format(e=e)
        if S.tool() and len(steps) == 1:  # one operation: the claim is the whole trace
            return Problem(prob, claims(*steps), v, check)
        return Problem(prob, f"{e}: " + claims(*steps), v, check)


# --------------------------------------------------------------------------- equations

_VARS = ("y", "n", "k", "m")  # never "x": cotune.verify reads "3x - 4" as 3 * -4
_EQ_Q = (
    "Solve for {v}: {eq}",
    "Solve {eq}.",
    "Find {v} if {eq}.",
    "If {eq}, what is {v}?",
    "What value of {v} makes {eq} true?",
    HeldOut("Determine {v}, given that {eq}."),
    HeldOut("Which number must {v} be so that {eq}?"),
)


def _term(c: int, v: str) -> str:
    return {1: v, -1: f"-{v}"}.get(c, f"{c}{v}")


def _plus(b: int) -> str:
    return f"+ {b}" if b >= 0 else f"- {-b}"


def linear_eq(rng: random.Random, d: int) -> Problem:
    v = rng.choice(_VARS)
    form = rng.choice(
        {
            1: ("add", "sub", "mul"),
            2: ("axb", "axb", "div", "paren"),
            3: ("both", "both", "paren_neg"),
        }[d]
    )
    lo = -12 if d == 3 else 1
    s = rng.randint(lo, 15 if d < 3 else 20) or 7  # the solution
    a = rng.randint(2, 9)
    b = rng.randint(1, 20) if form != "sub" else rng.randint(1, max(1, s - 1))
    if form == "add":
        eq, steps, check = f"{v} + {b} = {s + b}", [f"{s + b} - {b} = {s}"], Fraction(s + b - b)
    elif form == "sub":
        eq, steps, check = f"{v} - {b} = {s - b}", [f"{s - b} + {b} = {s}"], Fraction(s - b + b)
    elif form == "mul":
        eq, steps, check = f"{a}{v} = {a * s}", [f"{a * s} / {a} = {s}"], Fraction(a * s, a)
    elif form == "axb":
        sign = rng.choice((1, -1))
        c = a * s + sign * b
        eq = f"{_term(a, v)} {_plus(sign * b)} = {c}"
        undo = f"{c} - {b} = {c - b}" if sign > 0 else f"{c} + {b} = {c + b}"
        steps = [undo, f"{a * s} / {a} = {s}"]
        check = (Fraction(c) - sign * b) / a
    elif form == "div":
        c = s + b
        s = s * a  # the solution is a multiple of a, so v / a is whole
        eq = f"{v} / {a} + {b} = {c}"
        steps, check = [f"{c} - {b} = {c - b}", f"{c - b} * {a} = {s}"], (Fraction(c) - b) * a
    elif form in ("paren", "paren_neg"):
        sign = 1 if form == "paren" else rng.choice((1, -1))
        c = a * (s + sign * b)
        eq = f"{a}({v} {_plus(sign * b)}) = {c}"
        inner = s + sign * b
        undo = f"{inner} - {b} = {s}" if sign > 0 else f"{inner} + {b} = {s}"
        steps, check = [f"{c} / {a} = {inner}", undo], Fraction(c, a) - sign * b
    else:  # both sides: a v + b = c v + e
        c = rng.choice([k for k in range(1, 10) if k != a])
        e = a * s + b - c * s
        eq = f"{_term(a, v)} {_plus(b)} = {_term(c, v)} {_plus(e)}"
        steps = [f"{a} - {c} = {a - c}", f"{e} - {b} = {e - b}", f"{e - b} / {a - c} = {s}"]
        check = Fraction(e - b, a - c)
    prob = phrase(rng, _EQ_Q).format(v=v, eq=eq)
    return Problem(prob, claims(*steps, f"so {v} = {s}"), Fraction(s), check)
