"""The reasoning format: matching table, parsing problems, and never-raise properties."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cotune.format import (
    END_OF_TURN,
    START_OF_TURN,
    Control,
    answers_match,
    format_number,
    normalize_answer,
    parse_completion,
    parse_number,
    prompt_segments,
    render_completion,
)

MATCH_TABLE = [
    ("₹300", "300", True),
    ("1,234", "1234", True),
    ("0.5", "1/2", True),
    ("48.", "48", True),
    ("$18.00", "18", True),
    ("-3", "3", False),
    ("12", "120", False),
    ("", "0", False),
    ("3/4", "0.75", True),
    ("1 1/2", "1.5", True),
    ("50%", "50", True),
    ("48 apples", "48", True),
    ("€ 2,500.50", "2500.5", True),
    ("−7", "-7", True),
    ("  48  ", "48", True),
    ("0.3333", "1/3", False),
    ("0.3333333", "1/3", True),
    ("Paris", "paris.", True),
    ("Paris", "London", False),
    ("12 km/h", "12", True),
    ("Rs. 300", "300", True),
    ("49", "48", False),
    ("1,000,000", "1000000", True),
    ("0", "", False),
    ("x", "0", False),
]


@pytest.mark.parametrize("pred,gold,expected", MATCH_TABLE)
def test_answers_match_table(pred: str, gold: str, expected: bool) -> None:
    assert answers_match(pred, gold) is expected
    assert answers_match(gold, pred) is expected


def test_parse_number_values() -> None:
    assert parse_number("1,234.5") == Fraction(2469, 2)
    assert parse_number("-$4") == -4
    assert parse_number("-1 1/2") == Fraction(-3, 2)
    assert parse_number("abc") is None
    assert parse_number("3/0") is None
    assert normalize_answer("$1,200.00") == "1200"
    assert normalize_answer("  The Cat. ") == "the cat"


def test_format_number() -> None:
    assert format_number(Fraction(5, 2)) == "2.5"
    assert format_number(Fraction(1, 3)) == "1/3"
    assert format_number(48) == "48"
    assert format_number(Fraction(-1, 8)) == "-0.125"


def test_well_formed_tags() -> None:
    p = parse_completion("<reasoning>10 * 4 = 40</reasoning>\n<answer>40</answer>")
    assert p.well_formed and p.answer == "40" and p.reasoning == "10 * 4 = 40"
    assert p.problems == []


@pytest.mark.parametrize(
    "text,problem",
    [
        ("<answer>4</answer>", "missing <reasoning>"),
        ("<reasoning>x</reasoning><answer>4</answer><answer>5</answer>", "duplicated <answer>"),
        ("<reasoning>x</reasoning><answer>4</answer> and more", "text after </answer>"),
        ("<reasoning>x</reasoning><answer> </answer>", "empty answer"),
        ("<reasoning>x</reasoning><answer>4", "unclosed <answer> (truncated?)"),
        ("<reasoning></reasoning><answer>4</answer>", "empty reasoning"),
    ],
)
def test_problems_are_named(text: str, problem: str) -> None:
    p = parse_completion(text)
    assert not p.well_formed
    assert problem in p.problems


def test_strict_refuses_duplicates_lenient_falls_back() -> None:
    dup = "<reasoning>r</reasoning><answer>4</answer><answer>5</answer>"
    assert parse_completion(dup).answer is None
    assert parse_completion(dup, strict=False).answer == "4"
    assert parse_completion("so #### 1,234", strict=False).answer == "1,234"
    lenient = parse_completion("We get 3 then 7. The answer is 42.", strict=False)
    assert lenient.answer == "42" and lenient.answer_source == "the answer is"
    assert parse_completion("5 plus 6 is 11", strict=False).answer_source == "last number"
    assert parse_completion("<reasoning>2+2=4</reasoning><answer>4", strict=False).answer == "4"


def test_plain_schema_roundtrip_and_problems() -> None:
    text = render_completion("0.8x = 240, x = 300", "₹300", "plain")
    p = parse_completion(text, schema="plain")
    assert p.well_formed and p.answer == "₹300" and answers_match(p.answer, "300")
    assert "missing Answer:" in parse_completion("Reasoning: hi", schema="plain").problems


def test_prompt_templates() -> None:
    segs = prompt_segments("What is 2 + 2?")
    assert segs[0] == START_OF_TURN and END_OF_TURN in segs and segs[-1] == "model\n"
    assert all(not (isinstance(s, str) and "<start_of_turn>" in s) for s in segs)
    plain = prompt_segments(
        "What is 2 + 2?", template="plain", few_shot=[("1+1?", "1 + 1 = 2", "2")]
    )
    assert len(plain) == 1 and not any(isinstance(s, Control) for s in plain)
    assert "Question: 1+1?" in plain[0] and plain[0].endswith("Question: What is 2 + 2?\n")
    with pytest.raises(ValueError, match="template"):
        prompt_segments("q", template="nope")  # type: ignore[arg-type]


_no_tags = st.text().filter(lambda s: "<" not in s and ">" not in s and s.strip() == s)


@settings(max_examples=1000, deadline=None)
@given(r=_no_tags.filter(bool), a=_no_tags.filter(bool))
def test_roundtrip_tags(r: str, a: str) -> None:
    p = parse_completion(render_completion(r, a))
    assert (p.reasoning, p.answer, p.well_formed) == (r, a, True)


@settings(max_examples=1000, deadline=None)
@given(text=st.text(), strict=st.booleans(), schema=st.sampled_from(["tags", "plain"]))
def test_parse_never_raises(text: str, strict: bool, schema: str) -> None:
    p = parse_completion(text, schema=schema, strict=strict)  # type: ignore[arg-type]
    assert p.well_formed == (not p.problems)


@settings(max_examples=2000, deadline=None)
@given(a=st.text(), b=st.text())
def test_answers_match_never_raises(a: str, b: str) -> None:
    assert answers_match(a, b) in (True, False)
    assert isinstance(normalize_answer(a), str)


@settings(max_examples=500, deadline=None)
@given(st.fractions(max_denominator=64))
def test_format_number_is_exact(x: Fraction) -> None:
    assert parse_number(format_number(x)) == x
    assert answers_match(format_number(x), format_number(x))
