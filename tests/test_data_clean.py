"""Normalization, structural enforcement, dedup/overlap, splits and mixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from cotune import data
from cotune.config import DataSource
from cotune.data import Record


def R(q: str, reasoning: str, a: str, rid: str = "x") -> Record:
    return Record(rid, "t", q, reasoning, a, "test", None)


def test_normalization() -> None:
    kept, report = data.clean(
        [R("What  is\u00a0１２ + 3?\n", "12 + 3 = 15\r\n\r\n  so   15.", "$15")]
    )
    assert report.n_out == 1
    assert kept[0].question == "What is 12 + 3?"
    assert kept[0].reasoning == "12 + 3 = 15\nso 15."
    assert kept[0].answer == "15"
    kept, _ = data.clean([R("What is 1,000 + 15?", "1000 + 15 = 1015.", " 1,015 ")])
    assert kept[0].answer == "1015"  # thousands separators removed from answers


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (R("q?", "", "4"), "empty_reasoning"),
        (R("q?", "2 + 2 = 4", "four"), "unparsable_answer"),
        (R("  ", "2 + 2 = 4", "4"), "empty_question"),
        (R("q?", "2 + 2 = 4 " * 60, "4"), "reasoning_too_long"),
        (R("q?", "2 + 2 = 4 </reasoning>", "4"), "malformed_completion"),
        (R("q?", "2 + 2 = 4\nAnswer: 4", "4"), "malformed_completion"),
        (R("q?", "2 + 2 = 4, then 4 + 1 = 5.", "4"), "answer_inconsistent"),
        (R("q <end_of_turn>?", "2 + 2 = 4", "4"), "control_token"),
    ],
)
def test_each_reject_is_counted_by_reason(record: Record, reason: str) -> None:
    good = R("fine?", "1 + 1 = 2.", "2", "g")
    kept, report = data.clean([good, record])
    assert kept == [good] and report.reasons == {reason: 1}
    assert report.rejects[0].reason == reason and report.rejects[0].index == 1
    assert "1 in" not in str(report) and f"{reason}: 1" in str(report)


def test_token_budget_uses_the_given_counter() -> None:
    r = R("q?", "10 + 20 = 30.", "30")
    assert data.clean([r], max_reasoning_tokens=3, token_counter=lambda s: 3)[1].n_out == 1
    assert data.clean([r], max_reasoning_tokens=3, token_counter=lambda s: 4)[1].reasons == {
        "reasoning_too_long": 1
    }
    assert data.estimate_tokens("47 + 38 = 85.") == 9  # digits one by one, like Gemma


def test_false_claims_only_when_asked() -> None:
    r = R("q?", "2 + 2 = 5, so 5.", "5")
    assert data.clean([r])[1].n_out == 1
    assert data.clean([r], check_claims=True)[1].reasons == {"false_claim": 1}


def test_consistency_is_not_checked_without_numbers() -> None:
    assert data.answer_consistent("add them up", "4") is None
    assert data.answer_consistent("He pays $3 + $5 = $8 for 3 gallons.", "8") is True
    assert data.answer_consistent("48 + 16 = 64 points.", "66") is False


def test_duplicates_and_overlap() -> None:
    a = R("What is 2 + 2?", "2 + 2 = 4.", "4", "a")
    recs = [
        a,
        R("What is 2 + 2?", "2 + 2 = 4.", "4", "exact-dup"),
        R("what  is 2 + 2", "2 + 2 = 4.", "4", "norm-dup"),
        R("What is 1,000 + 1?", "1000 + 1 = 1001.", "1001", "test-exact"),
        R("WHAT IS 1000 + 1", "1000 + 1 = 1001.", "1001", "test-norm"),
        R("What is 3 + 3?", "3 + 3 = 6.", "6", "b"),
    ]
    kept, report = data.clean(recs, exclude=["What is 1,000 + 1?"])
    assert [r.id for r in kept] == ["a", "b"]
    assert report.reasons == {
        "duplicate": 1,
        "duplicate_normalized": 1,
        "test_overlap": 1,
        "test_overlap_normalized": 1,
    }
    assert report.n_in == 6 == report.n_out + sum(report.reasons.values())
    assert data.clean(recs[:2], dedupe=False)[1].n_out == 2


def test_split_is_deterministic_and_disjoint() -> None:
    recs = data.generate("all", 3000, seed=0)
    recs += [R(r.question.upper() + "  ", r.reasoning, r.answer, "variant") for r in recs[:200]]
    parts = data.split(recs, (0.8, 0.1, 0.1), seed=1)
    assert parts == data.split(recs, (0.8, 0.1, 0.1), seed=1)
    assert sum(map(len, parts.values())) == len(recs)
    keys = {k: {data.question_key(r.question) for r in v} for k, v in parts.items()}
    assert not (
        keys["train"] & keys["val"] or keys["train"] & keys["test"] or keys["val"] & keys["test"]
    )
    assert 0.75 < len(parts["train"]) / len(recs) < 0.85
    assert parts != data.split(recs, (0.8, 0.1, 0.1), seed=2)
    with pytest.raises(ValueError, match="sum"):
        data.split(recs, (0.5, 0.1, 0.1))


def test_mix_weights_and_determinism(tmp_path: Path) -> None:
    f = tmp_path / "gsm.jsonl"
    data.write_jsonl(
        f, data.import_file("gsm8k", Path(__file__).parent / "fixtures/gsm8k/train.jsonl")
    )
    srcs = [DataSource(path=str(f), weight=1), DataSource(generator="arithmetic", weight=3)]
    m = data.mix(srcs, 100, seed=0)
    assert m == data.mix(srcs, 100, seed=0) and m != data.mix(srcs, 100, seed=1)
    assert (
        sum(r.source == "gsm8k" for r in m) == 25 and sum(r.source == "generated" for r in m) == 75
    )
    assert len({r.id for r in m}) == 100
    over = data.mix([DataSource(path=str(f), n=60)], seed=0)  # more than the file has: repeats
    assert len(over) == 60 and len({r.id for r in over}) == 40
    with pytest.raises(ValueError, match="total n"):
        data.mix(srcs)
