"""Importers: the shipped GSM8K sample, the other formats, the full GSM8K count, fuzzing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cotune import data
from cotune.data import DataError
from cotune.verify import find_claims

FIX = Path(__file__).parent / "fixtures" / "gsm8k"
FULL = Path(__file__).resolve().parents[1] / "data" / "gsm8k" / "train.jsonl"


def test_gsm8k_sample_imports_to_valid_records() -> None:
    recs = data.import_file("gsm8k", FIX / "train.jsonl")
    assert len(recs) == 40
    r = recs[0]
    assert r.answer == "72" and r.source == "gsm8k" and r.id == "gsm8k-train-1"
    assert (
        r.reasoning
        == "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
    )
    assert all("<<" not in x.reasoning and "####" not in x.reasoning for x in recs)
    kept, report = data.clean(recs, exclude=data.import_file("gsm8k", FIX / "test.jsonl"))
    assert report.n_out == len(kept) >= 38
    assert all(find_claims(x.reasoning) or x.reasoning for x in kept)


def test_gsm8k_thousands_separator_answers(tmp_path: Path) -> None:
    p = tmp_path / "g.jsonl"
    p.write_text(
        json.dumps(
            {
                "question": "How much?",
                "answer": "He has 1,000 + 250 = <<1000+250=1250>>1,250 dollars.\n#### 1,250",
            }
        )
        + "\n"
    )
    (r,) = data.import_file("gsm8k", p)
    kept, _ = data.clean([r])
    assert kept[0].answer == "1250" and kept[0].reasoning == "He has 1,000 + 250 = 1,250 dollars."


def test_gsm8k_blank_question_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "g.jsonl"
    rows = [
        {"question": "", "answer": "#### 0"},
        {"question": " \t\n", "answer": "2 + 2 = 4\n#### 4"},
        {"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"g.jsonl:1: field 'question': expected non-empty text"):
        data.import_file("gsm8k", p)
    rejects: list[data.Reject] = []
    (r,) = data.import_file("gsm8k", p, skip_invalid=True, rejects=rejects)
    assert r.question == "What is 2 + 2?" and r.answer == "4"
    assert [(x.line, x.reason) for x in rejects] == [(1, "invalid_line"), (2, "invalid_line")]
    assert all("field 'question'" in x.detail for x in rejects)


def test_full_gsm8k_train_import_count() -> None:
    recs = data.import_file("gsm8k", FULL)
    kept, report = data.clean(recs, exclude=data.import_file("gsm8k", FULL.with_name("test.jsonl")))
    assert len(recs) == 7473
    assert len(kept) >= 7400, str(report)


def test_prompt_completion_and_messages(tmp_path: Path) -> None:
    pc = tmp_path / "pc.jsonl"
    pc.write_text(
        "\n".join(
            json.dumps(x)
            for x in [
                {
                    "prompt": "Question: What is 2 + 3?",
                    "completion": "<reasoning>2 + 3 = 5.</reasoning>\n<answer>5</answer>",
                },
                {"prompt": "What is 4 * 2?", "completion": "Reasoning: 4 * 2 = 8.\nAnswer: 8"},
                {"prompt": "What is 9 - 1?", "completion": "9 - 1 = 8. The answer is 8."},
            ]
        )
    )
    recs = data.import_file("prompt-completion", pc)
    assert [(r.question, r.reasoning, r.answer) for r in recs[:2]] == [
        ("What is 2 + 3?", "2 + 3 = 5.", "5"),
        ("What is 4 * 2?", "4 * 2 = 8.", "8"),
    ]
    assert recs[2].answer == "8"
    msg = tmp_path / "m.jsonl"
    conv = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "What is 6 / 2?"},
            {"role": "assistant", "content": "<reasoning>6 / 2 = 3.</reasoning><answer>3</answer>"},
        ]
    }
    msg.write_text(
        json.dumps(conv)
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "hi"}]})
        + "\n"
    )
    with pytest.raises(
        DataError,
        match=r"m.jsonl:2: messages: expected a 'user' message followed by an 'assistant'",
    ):
        data.import_file("messages", msg)
    rejects: list[data.Reject] = []
    (r,) = data.import_file("messages", msg, skip_invalid=True, rejects=rejects)
    assert (r.question, r.reasoning, r.answer) == ("What is 6 / 2?", "6 / 2 = 3.", "3") and rejects[
        0
    ].line == 2


def test_csv_answer_only(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_text(
        'question,answer\n"What is 1,000 + 1?","1,001"\nWhat is 2 + 2?,4\n\nbad row,\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"e.csv:5: column 'answer'"):
        data.import_file("csv", p)
    recs = data.import_file("csv", p, skip_invalid=True)
    assert [(r.question, r.reasoning, r.answer) for r in recs] == [
        ("What is 1,000 + 1?", "", "1,001"),
        ("What is 2 + 2?", "", "4"),
    ]
    kept, report = data.clean(recs, require_reasoning=False)
    assert [r.answer for r in kept] == ["1001", "4"]
    _, strict = data.clean(recs)
    assert strict.reasons["empty_reasoning"] == 2
    (tmp_path / "h.csv").write_text("q,a\n1,2\n")
    with pytest.raises(DataError, match=r"h.csv:1: expected a header with 'question' and 'answer'"):
        data.import_file("csv", tmp_path / "h.csv")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(sorted(data.IMPORTERS)),
    lines=st.lists(
        st.one_of(
            st.binary(max_size=60),
            st.text(max_size=60).map(str.encode),
            st.fixed_dictionaries(
                {
                    "question": st.one_of(st.text(max_size=20), st.integers()),
                    "answer": st.text(max_size=20),
                },
                optional={
                    "reasoning": st.text(max_size=20),
                    "prompt": st.text(max_size=20),
                    "completion": st.text(max_size=40),
                    "messages": st.just(
                        [
                            {"role": "user", "content": "q"},
                            {"role": "assistant", "content": "<answer>1e5000</answer>"},
                        ]
                    ),
                },
            ).map(lambda d: json.dumps(d).encode()),
            st.sampled_from(
                [
                    b"[" * 5000,
                    b'{"question": "q", "answer": "1e5000", "reasoning": "1 + 1 = 2"}',
                    b"\x00,\x00",
                    b'"unterminated',
                ]
            ),
        ),
        max_size=6,
    ),
)
def test_fuzz_importers_never_traceback(tmp_path: Path, kind: str, lines: list[bytes]) -> None:
    p = tmp_path / f"fuzz.{'csv' if kind == 'csv' else 'jsonl'}"
    p.write_bytes(b"\n".join(lines))
    try:
        recs = data.import_file(kind, p)
    except DataError as e:
        assert str(e).startswith(f"{p}:") and e.line is not None and e.line >= 1
        recs = data.import_file(kind, p, skip_invalid=True)
    kept, report = data.clean(recs, require_reasoning=kind != "csv")
    assert report.n_in == len(recs) == report.n_out + sum(report.reasons.values())
