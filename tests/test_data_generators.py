"""Generators: every task, 1,000 seeds, answers and every claim verified independently."""

from __future__ import annotations

import random
import re
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cotune import data
from cotune.data import steps, tasks_arith
from cotune.data.generators import GROUPS, TASKS, GenerationError, verify_problem
from cotune.format import (
    answers_match,
    format_number,
    parse_completion,
    parse_number,
    render_completion,
)
from cotune.verify import evaluate, find_claims

# "47 + 38:" heads a plain arithmetic task worked in several claims; a one-claim trace
# ("40 + 85 = 125.") states its operation itself.
_HEADER = re.compile(r"^(-?\d+ [-+*/] \d+)(?::| = )")


def _check_problem(task: str, p: tasks_arith.Problem) -> None:
    """Everything a consumer relies on, re-checked here without the generator's helpers."""
    answer = format_number(p.answer)
    assert parse_number(answer) == p.check, (task, p)
    claims = find_claims(p.reasoning)
    assert claims, (task, p.reasoning)
    assert all(c.correct for c in claims), (task, p.reasoning)
    # compact: one claim per operation; small: every operation split into digit facts,
    # which costs claims and tokens (docs/recipe.md measures the trade).
    max_claims, max_tokens = (28, 340) if steps.small() else (5, 80)
    assert 1 <= len(claims) <= max_claims, (task, p.reasoning)
    m = _HEADER.match(p.reasoning)
    if task in ("add", "sub", "mul", "div"):
        assert m is not None and evaluate(m.group(1)) == p.answer, (task, p.reasoning)
    if task == "expr":  # headed by the expression, or (one operation) the claim itself
        assert evaluate(re.split(r":| = ", p.reasoning)[0]) == p.answer
    for schema in ("tags", "plain"):
        parsed = parse_completion(
            render_completion(p.reasoning, answer, schema), schema, strict=True
        )
        assert parsed.well_formed, (task, parsed.problems)
        assert parsed.answer == answer and parsed.reasoning == p.reasoning
        assert answers_match(parsed.answer, format_number(p.check))
    assert data.estimate_tokens(p.reasoning) <= max_tokens, (task, p.reasoning)


@pytest.mark.parametrize("style", steps.TRACE_STYLES)
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_1000_seeds_verified(task: str, style: str) -> None:
    fn = TASKS[task]
    with steps.trace_style(style):
        for seed in range(1000):
            rng = random.Random(seed)
            p = fn(rng, seed % 3 + 1)
            verify_problem(task, p)
            _check_problem(task, p)


@settings(max_examples=300, deadline=None)
@given(
    task=st.sampled_from(sorted(TASKS)), seed=st.integers(0, 2**32), d=st.sampled_from([1, 2, 3])
)
def test_property_any_seed(task: str, seed: int, d: int) -> None:
    p = TASKS[task](random.Random(seed), d)
    verify_problem(task, p)
    _check_problem(task, p)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**9), group=st.sampled_from(sorted(GROUPS)))
def test_same_seed_same_data(seed: int, group: str) -> None:
    a = data.generate([group], n=20, seed=seed)
    b = data.generate([group], n=20, seed=seed)
    assert a == b
    assert data.generate([group], n=20, seed=seed + 1) != a
    for r in a:
        assert r.source == "generated" and r.difficulty in (1, 2, 3) and r.task in GROUPS[group]


def test_stream_is_endless_and_prefix_stable() -> None:
    it = data.iter_generate("arithmetic", seed=3)
    first = [next(it) for _ in range(50)]
    assert [r.id for r in first] == [
        r.id for r in data.generate("arithmetic", 50, seed=3, unique=False)
    ]
    assert len({r.question for r in data.generate("all", 2000, seed=0)}) == 2000


def test_difficulty_levels_and_groups() -> None:
    for level in (1, 2, 3):
        recs = data.generate("arithmetic", 60, seed=0, difficulty=level)
        assert {r.difficulty for r in recs} == {level}
    easy = data.generate(["add"], 200, seed=0, difficulty=1)
    hard = data.generate(["add"], 200, seed=0, difficulty=3)
    assert max(int(r.answer) for r in easy) < 200 < min(int(r.answer) for r in hard)
    assert {r.task for r in data.generate("word_problems", 400, seed=1)} == set(
        GROUPS["word_problems"]
    )
    with pytest.raises(ValueError, match="unknown task or group 'nope'"):
        data.generate("nope", 1)
    with pytest.raises(ValueError, match="difficulty"):
        data.generate("add", 1, difficulty=4)


def test_several_phrasings_per_task() -> None:
    for task in TASKS:
        recs = data.generate([task], 150, seed=0)
        openings = {" ".join(r.question.split()[:2]) for r in recs}
        assert len(openings) >= 2, task


def test_negative_results_and_remainders() -> None:
    subs = data.generate(["sub"], 300, seed=0, difficulty=3)
    assert any(Fraction(r.answer) < 0 for r in subs)
    rem = data.generate(["div_remainder"], 50, seed=0)
    for r in rem:
        a, b = map(int, re.findall(r"\d+", r.reasoning.split(":")[0]))
        assert int(r.answer) == a % b != 0


def test_reasoning_style_matches_the_spec() -> None:
    p = tasks_arith.Problem(
        "What is 47 + 38?",
        "47 + 38: " + tasks_arith.claims(*tasks_arith._place_add(47, 38, (10, 1))),
        Fraction(85),
        Fraction(85),
    )
    assert p.reasoning == "47 + 38: 40 + 30 = 70, 7 + 8 = 15, 70 + 15 = 85."
    rev = [
        r
        for r in data.generate(["reverse_price"], 400, seed=0, difficulty=1)
        if "after a 20% discount" in r.question
    ]
    assert rev and all(
        answers_match(
            r.answer, format_number(parse_number(r.question.split("for ")[1]) / Fraction(4, 5))
        )
        for r in rev
    )


def test_verification_catches_a_buggy_task(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tasks_arith.Problem("What is 2 + 2?", "2 + 2 = 5.", Fraction(5), Fraction(4))
    with pytest.raises(GenerationError, match="independent check"):
        verify_problem("add", bad)
    lie = tasks_arith.Problem("What is 2 + 2?", "2 + 3 = 4, so 4.", Fraction(4), Fraction(4))
    with pytest.raises(GenerationError, match="false claim"):
        verify_problem("add", lie)
    none = tasks_arith.Problem("What is 2 + 2?", "It is 4.", Fraction(4), Fraction(4))
    with pytest.raises(GenerationError, match="no checkable claim"):
        verify_problem("add", none)
    monkeypatch.setitem(TASKS, "add", lambda rng, d: bad)
    with pytest.raises(GenerationError):
        data.generate(["add"], 1)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_tool_traces_hold_the_values_the_calculator_writes(task: str) -> None:
    """A ``tool`` trace is trained for generation with the calculator, so each claim's value
    must be exactly what the calculator would write after its ``=``: else the text the model
    learns to continue from is not the text it will see."""
    from cotune.calculator import value_to_insert
    from cotune.verify import find_claims

    fn = TASKS[task]
    with steps.trace_style("tool"):
        for seed in range(300):
            p = fn(random.Random(seed), seed % 2 + 1)
            found = find_claims(p.reasoning)
            assert found, (task, p.reasoning)
            for c in found:
                before = p.reasoning[: c.span[1] - len(c.claimed)].rstrip()
                assert value_to_insert("<reasoning>" + before) == c.claimed, (task, p.reasoning)
