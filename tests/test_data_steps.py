"""The step builders behind every generated trace: each claim true, the last one the value,
and the ``small`` style never asks for a borrow across places or a product of two
multi-digit numbers in one claim."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cotune.data import steps as S
from cotune.format import parse_number
from cotune.verify import find_claims


def _check(claims: list[str], value: Fraction) -> None:
    stated = claims[-1].startswith("so ")  # short division states its quotient at the end
    if stated:
        assert parse_number(claims[-1].removeprefix("so ")) == value
        claims = claims[:-1]
    text = ", ".join(claims) + "."
    found = find_claims(text)
    assert len(found) == len(claims), (claims, [c.text for c in found])
    assert all(c.correct for c in found), [c.text for c in found if not c.correct]
    if not stated:  # the last claim's value; a remainder claim's is its remainder
        last = claims[-1].split("=")[-1].strip()
        assert parse_number(last.split(" r ")[-1]) == value


ints = st.integers(min_value=0, max_value=9999)


@pytest.mark.parametrize("style", S.TRACE_STYLES)
@given(a=ints, b=ints)
def test_add_sub_mul_claims_hold(style: str, a: int, b: int) -> None:
    with S.trace_style(style):
        _check(S.add(a, b), Fraction(a + b))
        _check(S.sub(a, b), Fraction(a - b))
        _check(S.mul(a, b % 100), Fraction(a * (b % 100)))


@pytest.mark.parametrize("style", S.TRACE_STYLES)
@given(q=st.integers(1, 999), d=st.integers(2, 25), r=st.integers(0, 24))
def test_div_claims_hold(style: str, q: int, d: int, r: int) -> None:
    with S.trace_style(style):
        _check(S.div(q * d, d), Fraction(q))
        if d in (4, 5, 8, 16, 20, 25):  # a terminating decimal quotient
            _check(S.div(q * d + r % d, d), Fraction(q * d + r % d, d))
        for op, fn in (("+", int.__add__), ("-", int.__sub__), ("*", int.__mul__)):
            _check(S.worked(q, op, d), Fraction(fn(q, d)))
        claims, quot, rest = S.chunks(q * d + r % d, d)
        assert (quot, rest) == divmod(q * d + r % d, d)
        if claims:
            _check(claims, Fraction(rest))


@pytest.mark.parametrize("style", S.TRACE_STYLES)
@given(base=st.integers(1, 200).map(lambda k: 20 * k), p=st.integers(1, 99))
def test_percent_claims_hold(style: str, base: int, p: int) -> None:
    with S.trace_style(style):
        claims = S.percent_of(base, p)
        if style == "compact":
            assert claims == [f"{base} * {p} / 100 = {S.fmt(Fraction(base * p, 100))}"]
        else:
            _check(claims, Fraction(base * p, 100))


def _numbers(claim: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", claim.split("=")[0])]


@given(a=st.integers(0, 99999), b=st.integers(0, 99999))
def test_small_subtraction_never_borrows_across_places(a: int, b: int) -> None:
    """Every claim of a small-style ``a - b`` is a digit fact at one place (``3 - 7 = -4``,
    ``800 - 400 = 400``), a lone digit taken where it is (``48 - 3 = 45``), or puts a place
    together with a number that is round below it: one digit off (``240 - 4 = 236``) or one
    beside (``400 + 2 = 402``), so no claim asks where a borrow comes from."""
    a, b = max(a, b), min(a, b)
    with S.trace_style("small"):
        claims = S.sub(a, b)
        for c in claims:
            x, y = _numbers(c.split(":")[-1])
            k = len(str(y)) - 1
            same_place = S._round(x) and S._round(y) and len(str(x)) == len(str(y))
            beside = S._round(y) and x % 10 ** (k + 1) == 0
            in_place = " - " in c and S._round(y) and (x // 10**k) % 10 >= y // 10**k
            assert same_place or beside or in_place or c == f"{a} - {b} = {a - b}", (a, b, c)
        assert claims and S.parse_claim_value(claims[-1]) == a - b


@given(a=st.integers(10, 999), b=st.integers(10, 999))
def test_small_subtraction_shape_ignores_digit_order(a: int, b: int) -> None:
    """Which claims a multi-place subtraction is made of depends on where its digits are
    non-zero, not on which digit is bigger: with every place non-zero and no two digits in
    the same place equal, there is one difference per place of ``b`` and one claim putting
    each further place together, whichever digit is the bigger one."""
    a, b = max(a, b), min(a, b)
    sa, sb = str(a), str(b).rjust(len(str(a)), "x")
    if "0" in sa + sb or len(S._parts(b)) < 2 or any(x == y for x, y in zip(sa, sb, strict=True)):
        return
    with S.trace_style("small"):
        n = len(S.sub(a, b))
    assert n == len(str(b)) + len(str(a)) - 1, (a, b, S.sub(a, b))


@given(a=st.integers(10, 999), b=st.integers(10, 99))
def test_small_products_are_digit_facts(a: int, b: int) -> None:
    with S.trace_style("small"):
        for c in S.mul(a, b):
            if " * " in c:
                x, y = _numbers(c)
                assert len(str(x).strip("0")) == 1 and len(str(y).strip("0")) == 1, c


def test_examples_read_as_a_person_writes() -> None:
    with S.trace_style("small"):
        assert S.sub(83, 47) == ["80 - 40 = 40", "3 - 7 = -4", "40 - 4 = 36"]
        assert S.sub(43, 7) == ["3 - 7 = -4", "40 - 4 = 36"]
        assert S.sub(48, 3) == ["48 - 3 = 45"]
        assert S.worked(1720, "-", 860) == [
            "1720 - 860: 700 - 800 = -100",
            "20 - 60 = -40",
            "1000 - 100 = 900",
            "900 - 40 = 860",
        ]
        assert S.sub(217, 210) == ["200 - 200 = 0", "10 - 10 = 0", "217 - 210 = 7"]
        assert S.worked(47, "+", 38) == ["47 + 38: 40 + 30 = 70", "7 + 8 = 15", "70 + 15 = 85"]
        assert S.worked(47, "+", 30) == ["47 + 30 = 77"]  # one claim: no header
        assert S.percent_of(280, 20) == [
            "280 / 10 = 28",
            "28 * 2: 20 * 2 = 40",
            "8 * 2 = 16",
            "40 + 16 = 56",
        ]
        assert S.sub(78, 43) == ["70 - 40 = 30", "8 - 3 = 5", "30 + 5 = 35"]
        assert S.div(498, 6) == [
            "6 * 80 = 480",
            "498 - 480: 400 - 400 = 0",
            "90 - 80 = 10",
            "10 + 8 = 18",
            "18 / 6 = 3",
            "80 + 3 = 83",
        ]
        assert S.div(206, 4) == ["4 * 50 = 200", "206 - 200 = 6", "6 / 4 = 1.5", "50 + 1.5 = 51.5"]
        assert S.chunks(523, 7) == (
            [
                "7 * 70 = 490",
                "523 - 490: 500 - 400 = 100",
                "20 - 90 = -70",
                "100 - 70 = 30",
                "30 + 3 = 33",
                "7 * 4 = 28",
                "33 - 28: 30 - 20 = 10",
                "3 - 8 = -5",
                "10 - 5 = 5",
            ],
            74,
            5,
        )
    with S.trace_style("compact"):
        assert S.sub(83, 47) == ["83 - 47 = 36"]


def test_unknown_style_is_named() -> None:
    with pytest.raises(ValueError, match="unknown trace style 'fancy'"), S.trace_style("fancy"):
        pass


def test_short_division_reads_one_digit_at_a_time() -> None:
    assert S.short_division(272, 8, decimals=False) == (
        ["2 / 8 = 0 r 2", "27 / 8 = 3 r 3", "32 / 8 = 4 r 0"],
        34,
        0,
    )
    assert S.short_division(523, 7, decimals=False) == (
        ["5 / 7 = 0 r 5", "52 / 7 = 7 r 3", "33 / 7 = 4 r 5"],
        74,
        5,
    )
    with S.trace_style("uniform"):
        assert S.worked(192, "/", 5) == [
            "192 / 5: 1 / 5 = 0 r 1",
            "19 / 5 = 3 r 4",
            "42 / 5 = 8 r 2",
            "20 / 5 = 4 r 0",
            "so 38.4",
        ]
        assert S.div(1264, 2) == ["1264 / 2 = 632"]  # halving stays one claim
        assert S.chunks(523, 7)[0][-1] == "33 / 7 = 4 r 5"


@given(a=st.integers(0, 99999), b=st.integers(2, 99))
def test_short_division_steps_are_table_facts_copied_from_before(a: int, b: int) -> None:
    """Every step divides a number below 10 * b (a one-digit quotient: a times-table fact),
    and the number it divides is the last remainder with the next digit of ``a`` after it."""
    steps, q, r = S.short_division(a, b, decimals=False)
    assert (q, r) == divmod(a, b)
    assert len(steps) == len(str(a))
    rest = 0
    digits = ""
    for step, d in zip(steps, str(a), strict=True):
        n, rhs = step.split(" / ")
        assert int(n) == 10 * rest + int(d) < 10 * b
        quot, rest = (int(x) for x in rhs.split(" = ")[1].split(" r "))
        digits += str(quot)
    assert int(digits) == q and rest == r
    assert all(c.correct for c in find_claims(", ".join(steps)))


def test_config_offers_every_trace_style() -> None:
    """``data.style`` lists the styles by hand (config sits below data and cannot import
    them), so the two lists are checked against each other here."""
    from typing import get_args

    from cotune.config import DataCfg

    assert get_args(DataCfg.model_fields["style"].annotation) == S.TRACE_STYLES
