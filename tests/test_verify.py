"""Arithmetic claims: found where they are written, judged exactly."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cotune.verify import check_steps, evaluate, find_claims, operation


@pytest.mark.parametrize(
    "text,n,ok",
    [
        ("10 * 4 = 40, 2 * 4 = 8, 40 + 8 = 48.", 3, 3),
        ("12 * 4 = 120", 1, 0),
        ("(3 + 4) * 2 = 14", 1, 1),
        ("3 + 4 * 2 = 11", 1, 1),
        ("1,200 + 300 = 1,500", 1, 1),
        ("10 / 3 = 3.33", 1, 1),
        ("10 / 3 = 3.34", 1, 0),
        ("7 / 2 = 3.5 and 5 - 8 = -3", 2, 2),
        ("0.8x = 240 so x = 240 / 0.8 = 300", 1, 1),
        ("no arithmetic here", 0, 0),
        ("48/2 = 24", 1, 1),
        ("5 x 6 = 30 and 4 × 3 = 12 and 8 ÷ 2 = 4", 3, 3),
        ("$3 * 4 = $12", 1, 1),
        # the small style's signed-difference subtraction
        ("83 - 47: 80 - 40 = 40, 3 - 7 = -4, 40 - 4 = 36.", 3, 3),
        ("93 - 64: 90 - 60 = 30, 3 - 4 = -2, 30 - 2 = 28.", 3, 2),
        ("1720 - 860: 700 - 800 = -100, 20 - 60 = -40, 1000 - 100 = 900", 3, 3),
        ("700 - 800 = 100", 1, 0),
    ],
)
def test_claims(text: str, n: int, ok: int) -> None:
    rep = check_steps(text)
    assert (rep.n_claims, rep.n_correct) == (n, ok)


def test_evaluate_is_exact() -> None:
    assert evaluate("1 / 3 * 3") == 1
    assert evaluate("2 / 0") is None
    assert evaluate("(1 + 2") is None
    assert [c.correct for c in find_claims("2 + 2 = 5. 2 + 2 = 4")] == [False, True]


@settings(max_examples=1000, deadline=None)
@given(st.text())
def test_never_raises(text: str) -> None:
    rep = check_steps(text)
    assert 0 <= rep.n_correct <= rep.n_claims


@settings(max_examples=500, deadline=None)
@given(a=st.integers(0, 10**6), b=st.integers(0, 10**6), op=st.sampled_from("+-*"))
def test_true_claims_hold_false_ones_fail(a: int, b: int, op: str) -> None:
    v = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert check_steps(f"{a} {op} {b} = {v}").all_correct
    assert not check_steps(f"{a} {op} {b} = {v + 1}").all_correct


def test_notation_variants() -> None:
    assert check_steps("3x - 4 = 11").n_claims == 0  # x is a variable here, not "times"
    assert (check_steps("1/2 * 1/2 = 1/4").n_claims, check_steps("1/2 * 1/2 = 1/4").n_correct) == (
        1,
        1,
    )
    assert check_steps("$3 + $5 = $8").all_correct and check_steps("$3 + $5 = $8").n_claims == 1


def test_chained_claims() -> None:
    rep = check_steps("12 * 4 = 10 * 4 + 2 * 4 = 40 + 8 = 48")
    assert (rep.n_claims, rep.n_correct) == (3, 3)
    rep = check_steps("12 * 4 = 10 * 4 + 2 * 4 = 40 + 8 = 49")
    assert (rep.n_claims, rep.n_correct) == (3, 2)
    assert check_steps("x = 5 = 5").n_claims == 0


# GSM8K notation (docs/data.md): shapes the converted calculator notes and the solutions'
# own text use. Each pair: text, [(claim found, holds)].
@pytest.mark.parametrize(
    "text,found",
    [
        ("100 x .20 = 20", [("100 x .20 = 20", True)]),  # leading-dot decimal
        ("18*.5 = $9.00", [("18*.5 = $9.00", True)]),
        ("2 - .5 = 1.5", [("2 - .5 = 1.5", True)]),
        ("4 + 4 + 2 + 6 + 11 = €27", [("4 + 4 + 2 + 6 + 11 = €27", True)]),  # other currencies
        ("0.5 X 64 = 32", [("0.5 X 64 = 32", True)]),
        ("Red crayons: 4(3)=12", [("4(3) = 12", True)]),  # implicit product
        ("Week 2:300(.30)=90 pages", [("300(.30) = 90", True)]),
        ("Rodney:8(20)-14=146 pounds", [("8(20)-14 = 146", True)]),
        ("(1/2)(40) = 20", [("(1/2)(40) = 20", True)]),
        ("2 + 4 = 6 (6 apples)", [("2 + 4 = 6", True)]),  # a remark in parentheses
        ("$2000 / 2/3 = $3000", [("$2000 / 2/3 = $3000", True)]),  # divide by a fraction
        ("28 / 1/5 = 28 * 5 = 140", [("28 / 1/5 = 28 * 5", True), ("28 * 5 = 140", True)]),
        ("60/3/4 = 5", [("60/3/4 = 5", True)]),  # unspaced: left to right
        ("14 / 1 / 4 = 14 * 4", [("14 / 1 / 4 = 14 * 4", False)]),
        ("$130 / 2 = $65/wand", [("$130 / 2 = $65", True)]),  # a unit is not a variable
        ("9 * 100 = 900g of flour", [("9 * 100 = 900", True)]),
        ("12 * 4 = 48\n48 + 2 = 50", [("12 * 4 = 48", True), ("48 + 2 = 50", True)]),
        ("x = 3.5 and 5 - 8 = -3", [("5 - 8 = -3", True)]),
        ("is -3 + 5 = 2", [("-3 + 5 = 2", True)]),
        ("Therefore, over 100 acts, 70 + 40 = 100 people", [("70 + 40 = 100", False)]),
        # the expression visibly runs on outside what was found: no claim, never a false one
        ("60 minutes x 3/4 = 45 minutes", []),
        ("16 gallons * 1/4 = 16 * 1/4 = 4 gallons", [("16 * 1/4 = 4", True)]),
        ("25 time-outs - 1 = 25 - 1 = 24", [("25 - 1 = 24", True)]),
        ("12 – 2 = 12 - 2 = 10", [("12 - 2 = 10", True)]),
        ("W/2 - 2 = $55.", []),
        ("24V + 15 + 6 = $141", []),
        ("1 1/2 * 4 = 6", []),
        ("$100 000 x 10/100 = $10,000", []),
        ("21 x (1 and 1/3) = 28", []),
        ("4 / 3 = 1 and 1/3", []),
        ("$10/3=$3 and $1/3 per pizza", []),
        ("100 / 6= 16 and (2/3)", []),
        ("600 x 30 = 18 000 watts", []),
        ("22 - 16 = 16 + x - 16", []),
        ("2*4 = 8x-14", []),
        ("200=(5/4)x", []),
        ("23 = (1/2)*2M", []),
    ],
)
def test_gsm8k_notation(text: str, found: list[tuple[str, bool]]) -> None:
    claims = find_claims(text)
    assert [(c.text, c.correct) for c in claims] == found
    for c in claims:  # the span is where the claim was read
        start, end = c.span
        assert text[start:end].replace(" ", "") == c.text.replace(" ", "")


def test_evaluate_reads_only_arithmetic() -> None:
    assert evaluate(".5 * 4") == 2
    assert evaluate("4(17)") == 68
    assert evaluate("25 / 1/3") == 75 and evaluate("25/1/3") == Fraction(25, 3)
    # characters that are not arithmetic make it no expression, never skipped over
    assert evaluate("2 & 3") is None and evaluate("50%") is None and evaluate("3.") is None


def test_attached_variable_ends_no_claim() -> None:
    # "5A/5": the value is 5A, not 5 (GSM8K train: "100/5 = 5A/5 or 20 = A")
    assert [c.text for c in find_claims("100/5 = 5A/5 or 20 = A")] == []
    assert [c.text for c in find_claims("192 / 1.2 = 1.2Y / 1.2")] == []


@pytest.mark.parametrize(
    ("expression", "op"),
    [
        ("40 + 8", "+"),
        ("3 - 6", "-"),
        ("3 - -6", "-"),  # the second minus is a sign
        ("-3 + 5", "+"),
        ("90 x 3", "*"),
        ("4(17)", "*"),  # implicit product
        ("$1,250 / 5", "/"),
        ("280 * 20 / 100", "several"),
        ("(12 - 2) * 3", "several"),
        ("12", "other"),
        ("twelve * 3", "other"),
    ],
)
def test_operation_of_a_claim(expression: str, op: str) -> None:
    assert operation(expression) == op


def test_remainder_claims_of_short_division() -> None:
    """``a / b = q r m`` is true when q and m are the whole quotient and the remainder; a
    wrong quotient or remainder is false, and a remainder with a decimal part is not read
    as one."""
    got = [(c.text, c.correct) for c in find_claims("27 / 8 = 3 r 3, 52 / 7 = 7 r 3.")]
    assert got == [("27 / 8 = 3 r 3", True), ("52 / 7 = 7 r 3", True)]
    assert [c.correct for c in find_claims("27 / 8 = 3 r 4")] == [False]
    assert [c.correct for c in find_claims("27 / 8 = 2 r 11")] == [False]  # m must be < b
    assert [c.correct for c in find_claims("5 / 0 = 1 r 0")] == [False]
    assert [c.text for c in find_claims("12 / 5 = 2 r 2.5")] == ["12 / 5 = 2"]
    assert [c.text for c in find_claims("10 - 3 = 7 r 2")] == ["10 - 3 = 7"]
