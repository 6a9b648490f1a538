"""The calculator (cotune.calculator.value_to_insert): the right value for a claim the text
ends with, and nothing anywhere else."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cotune.calculator import format_value, value_to_insert
from cotune.verify import evaluate, find_claims


@pytest.mark.parametrize(
    "text,value",
    [
        ("<reasoning>Natalia sold 48 / 2 =", "24"),
        ("<reasoning>Natalia sold 48/2=", "24"),
        ("Working 50 minutes, she earned 0.2 x 50 = $", "10"),
        ("12 * 4 = 10 * 4 + 2 * 4 = ", "48"),  # the last term of a chain
        ("(3 + 4) * 2 =", "14"),
        ("5 - 8 = ", "-3"),
        ("10 / 3 = ", "3.33"),  # rounded, and still a true step for verify
        ("2 / 3 =", "0.67"),
        ("2.5 * 1.5 =", "3.75"),
        ("1 / 300 =", "0.003"),
        ("100 x .20 =", "20"),  # GSM8K notation
        ("Red crayons: 4(3) =", "12"),
        ("$2000 / 2/3 = $", "3000"),
        ("Reasoning: 2 * 3 =", "6"),  # plain schema
        # not a claim verify would read: nothing is inserted
        ("She has 3 apples.", None),
        ("48 / 2", None),
        ("48 / 2 = 2", None),  # the model is already writing the value
        ("x = 7 =", None),
        ("50% of 80 =", None),
        ("60 minutes x 3/4 =", None),  # the claim is about 60 minutes, not 3/4
        ("3x - 4 =", None),
        ("5 / 0 =", None),
        ("(3 + 4 =", "7"),
        # outside reasoning
        ("<reasoning>3 + 4 = 7.</reasoning><answer>3 + 4 =", None),
        ("<reasoning>3 + 4 = 7.</reasoning>\n2 * 2 =", None),
        ("Reasoning: 3 + 4 = 7.\nAnswer: 2 * 2 =", None),
    ],
)
def test_value_to_insert(text: str, value: str | None) -> None:
    assert value_to_insert(text) == value


def test_format_value() -> None:
    assert format_value(Fraction(24)) == "24"
    assert format_value(Fraction(-1, 8)) == "-0.125"
    assert format_value(Fraction(39999, 10000)) == "3.9999"
    assert format_value(Fraction(40000 - 1, 10000) + Fraction(1, 3 * 10**6)) == "4.00"
    assert format_value(Fraction(10, 3)) == "3.33" and format_value(Fraction(-10, 3)) == "-3.33"
    assert format_value(Fraction(1, 3 * 10**7)) == "0.000000"


OPS = st.sampled_from(["+", "-", "*", "/", "x"])
NUMBERS = st.one_of(
    st.integers(0, 10**7).map(str),
    st.decimals(0, 10**4, places=2, allow_nan=False, allow_infinity=False).map(str),
)


@settings(max_examples=300)
@given(
    nums=st.lists(NUMBERS, min_size=2, max_size=5),
    ops=st.lists(OPS, min_size=4, max_size=4),
    before=st.sampled_from(["", "<reasoning>", "So she pays ", "Step 2: ", "He has 3 left, so "]),
    space=st.sampled_from(["", " ", "  "]),
)
@example(nums=["10", "3"], ops=["/", "+", "+", "+"], before="", space=" ")
def test_inserted_value_makes_the_claim_true(
    nums: list[str], ops: list[str], before: str, space: str
) -> None:
    expr = nums[0] + "".join(f" {o} {n}" for o, n in zip(ops, nums[1:], strict=False))
    text = f"{before}{expr} ={space}"
    value = value_to_insert(text)
    true = evaluate(expr)
    if true is None:  # division by zero
        assert value is None
        return
    assert value is not None, text
    claims = find_claims(text + value)
    assert claims[-1].correct and claims[-1].span[1] == len(text + value)
    assert abs(Fraction(value) - true) <= Fraction(1, 200)
    # filled: the text no longer ends with "=", so nothing more is inserted
    assert value_to_insert(text + value) is None


@settings(max_examples=400)
@given(
    text=st.text(alphabet=st.sampled_from(list("0123456789 +-*/x=().,$%<>abnrswe:\n")), max_size=60)
)
@example(text="<reasoning>1 + 2 =")
@example(text="</reasoning>1 + 2 =")
def test_never_touches_text_outside_a_claim(text: str) -> None:
    """For any text: None, or a value that completes a true claim ending exactly where the
    text ends (so appending it changes nothing before that point and no other claim)."""
    value = value_to_insert(text)
    if value is None:
        return
    assert text.rstrip(" \t$€£₹").endswith("=")
    filled = text + value
    before = [c for c in find_claims(text) if c.span[1] <= len(text) - 1]
    after = find_claims(filled)
    assert after[-1].correct and after[-1].span[1] == len(filled)
    # every claim that was already complete in the text is found, and judged, the same way
    assert [(c.text, c.correct) for c in before if c.span[1] < after[-1].span[0]] == [
        (c.text, c.correct) for c in after[:-1] if c.span[1] < after[-1].span[0]
    ]
    assert "</reasoning>" not in text and "<answer>" not in text


@given(st.text(max_size=200))
def test_never_raises(text: str) -> None:
    value = value_to_insert(text)
    assert value is None or isinstance(value, str)


def test_short_division_steps_get_quotient_and_remainder() -> None:
    """In short division (the ``uniform`` trace style) a whole-number division gets ``q r m``,
    which the verifier reads as a true step; elsewhere it gets its decimal value."""
    head = "<reasoning>272 / 8: 2 / 8 ="
    assert value_to_insert(head) == "0 r 2"
    after = "<reasoning>272 / 8: 2 / 8 = 0 r 2, 27 / 8 ="
    assert value_to_insert(after) == "3 r 3"
    assert [c.correct for c in find_claims(after + "3 r 3")] == [True, True]
    assert value_to_insert("<reasoning>One part: 27 / 8 =") == "3.375"
    # a header over another divisor, or a remainder written in an earlier answer, is not it
    assert value_to_insert("<reasoning>272 / 8: 2 / 3 =") == "0.67"
    old = "<reasoning>9 / 2 = 4 r 1.</reasoning><answer>1</answer> <reasoning>27 / 8 ="
    assert value_to_insert(old) == "3.375"


def test_short_division_head_is_a_division_of_its_own() -> None:
    """``7 - 8 / 8: 8 / 8 =`` works an expression whose last part is 8 / 8, not a short
    division of 8 by 8: its value is 1, not ``1 r 0``."""
    assert value_to_insert("<reasoning>7 - 8 / 8: 8 / 8 =") == "1"
    assert value_to_insert("<reasoning>272 / 8: 2 / 8 =") == "0 r 2"
