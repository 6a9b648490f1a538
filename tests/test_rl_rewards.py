"""Rewards: what earns credit, and the malformed completions that must not."""

from __future__ import annotations

import pytest

from cotune import format as fmt
from cotune.config import RLCfg
from cotune.rl import rewards as R

Q = "What is 12 * 4?"
GOLD = "48"
GOOD = fmt.render_completion("12 * 4: 10 * 4 = 40, 2 * 4 = 8, 40 + 8 = 48.", "48")
W = RLCfg().reward_weights


def total(text: str, **kw) -> float:
    return R.combined_reward(W)([Q], [text], answer=[GOLD], question=[Q], **kw)[0]


def correct(text: str, question: str = Q, gold: str = GOLD, schema: str = "tags") -> float:
    return R.correctness_reward(
        [question], [text], answer=[gold], question=[question], schema=schema
    )[0]


def test_gold_answer_gets_full_reward() -> None:
    parts = R.reward_breakdown([Q], [GOOD], W, answer=[GOLD], question=[Q])
    assert parts["format"] == [1.0]
    assert parts["correct"] == [1.0]
    assert parts["steps"] == [1.0]
    assert parts["length"] == [0.0]
    assert total(GOOD) == pytest.approx(R.max_reward(W))


def test_wrong_answer_gets_low_reward() -> None:
    wrong = fmt.render_completion("12 * 4 = 12 + 12 + 12 = 36.", "36")
    assert correct(wrong) == 0.0
    assert total(wrong) < 0.5 * R.max_reward(W)
    # the chain states two claims: "12 * 4 = 12 + 12 + 12" (false), "12 + 12 + 12 = 36" (true)
    assert R.step_reward([Q], [wrong])[0] == 0.5


@pytest.mark.parametrize(
    "text",
    [
        "<reasoning></reasoning>\n<answer>48</answer>",  # empty reasoning
        "<reasoning>12 * 4 = 48</reasoning>\n<answer></answer>",  # empty answer
        "<reasoning>12 * 4 = 48</reasoning>\n<answer>48</answer><answer>48</answer>",
        "<reasoning>12 * 4 = 48</reasoning>\n<answer>47</answer>\n<answer>48</answer>",
        "<reasoning>12 * 4 = 48</reasoning>\n<answer>48</answer> Also 50 maybe.",
        "<reasoning>12 * 4 = 48</reasoning>\n<answer>48",  # truncated
        "The answer is 48.",  # no structure at all
    ],
)
def test_malformed_completions_get_no_correctness_credit(text: str) -> None:
    assert correct(text) == 0.0
    assert R.format_reward([Q], [text])[0] < 1.0


def test_answer_copied_from_question_without_reasoning_gets_nothing() -> None:
    q = "Tom has 12 apples and eats 0 of them. How many apples does he have?"
    copied = fmt.render_completion("12", "12")
    assert correct(copied, q, "12") == 0.0
    copied_prose = fmt.render_completion("Tom has 12 apples", "12")
    assert correct(copied_prose, q, "12") == 0.0
    # the same answer with actual work keeps its credit
    worked = fmt.render_completion("He eats none, so 12 - 0 = 12 apples remain.", "12")
    assert correct(worked, q, "12") == 1.0


def test_format_partial_credit_orders_structures() -> None:
    scores = R.format_reward(
        [Q] * 4,
        [
            GOOD,
            "<reasoning>12 * 4 = 48</reasoning>\n<answer>48",  # 3 of 4 tags
            "<reasoning>12 * 4 = 48",  # 1 of 4 tags
            "48",
        ],
    )
    assert scores[0] == 1.0
    assert 1.0 > scores[1] > scores[2] > scores[3] == 0.0


def test_step_validity_is_share_of_true_claims_and_zero_without_claims() -> None:
    half = fmt.render_completion("2 + 2 = 4 and 3 + 3 = 7", "4")
    none = fmt.render_completion("It is obviously forty-eight.", "48")
    assert R.step_reward([Q, Q], [half, none]) == [0.5, 0.0]


def test_length_penalty_for_rambling_and_truncation() -> None:
    long_ok = fmt.render_completion("40 + 8 = 48. " * 80, "48")
    assert R.length_reward([Q], [GOOD], budget_chars=600) == [0.0]
    pen = R.length_reward([Q], [long_ok], budget_chars=600)[0]
    assert -1.0 <= pen < 0.0
    assert R.length_reward([Q], ["<reasoning>40 + 8 = 48"], truncated=[True]) == [-1.0]
    # token budget, from the num_tokens batch field
    assert (
        R.length_reward([Q], [GOOD], budget_chars=None, budget_tokens=10, num_tokens=[30])[0]
        == -1.0
    )
    assert R.length_reward([Q], [GOOD], budget_chars=None, budget_tokens=10, num_tokens=[5]) == [
        0.0
    ]


def test_plain_schema_rewards() -> None:
    good = fmt.render_completion("40 + 8 = 48", "48", schema="plain")
    assert R.format_reward([Q], [good], schema="plain") == [1.0]
    assert correct(good, schema="plain") == 1.0
    assert correct(good + "\nAnswer: 50", schema="plain") == 0.0


def test_tunix_compatible_list_sums_to_combined() -> None:
    texts = [GOOD, "<reasoning>2 + 2 = 5</reasoning>\n<answer>48</answer>", "nope"]
    kw = {"answer": [GOLD] * 3, "question": [Q] * 3}
    combined = R.combined_reward(W)([Q] * 3, texts, **kw)
    summed = [
        sum(v)
        for v in zip(*(f([Q] * 3, texts, **kw) for f in R.weighted_reward_fns(W)), strict=True)
    ]
    assert combined == pytest.approx(summed)


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="answer"):
        R.correctness_reward([Q], [GOOD])
    with pytest.raises(ValueError, match="unknown reward"):
        R.reward_breakdown([Q], [GOOD], {"fromat": 1.0}, answer=[GOLD])
