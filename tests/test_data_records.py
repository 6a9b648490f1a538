"""Canonical records: JSONL round trip and errors that name file, line and expectation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotune import data
from cotune.data import DataError, Record


def _write(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "in.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_round_trip(tmp_path: Path) -> None:
    recs = data.generate("all", 30, seed=0)
    p = tmp_path / "r.jsonl"
    assert data.write_jsonl(p, recs) == 30
    assert data.read_jsonl(p) == recs
    first = json.loads(p.read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["id", "task", "question", "reasoning", "answer", "source", "difficulty"]


def test_defaults_for_optional_fields(tmp_path: Path) -> None:
    p = _write(tmp_path, ['{"question": "q", "reasoning": "1 + 1 = 2", "answer": 2}'])
    (r,) = data.read_jsonl(p)
    assert r == Record("in-1", "unknown", "q", "1 + 1 = 2", "2", "in", None)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"question": "q", "answer": "1"}', "missing field 'reasoning'"),
        (
            '{"question": 3, "reasoning": "", "answer": "1"}',
            "field 'question': expected a string, got int",
        ),
        (
            '{"question": "q", "reasoning": "", "answer": "lots"}',
            "field 'answer': expected a number",
        ),
        (
            '{"question": "q", "reasoning": "", "answer": "1", "difficulty": 7}',
            "field 'difficulty'",
        ),
        ('{"question": "q", "reasoning": "", "answer": NaN}', "finite number"),
        ('{"question": " ", "reasoning": "", "answer": "1"}', "non-empty"),
    ],
)
def test_errors_name_file_line_and_expectation(tmp_path: Path, line: str, expected: str) -> None:
    good = '{"question": "q", "reasoning": "1 + 1 = 2", "answer": "2"}'
    p = _write(tmp_path, [good, "", line])
    with pytest.raises(DataError) as e:
        data.read_jsonl(p)
    assert str(e.value).startswith(f"{p}:3: ") and expected in str(e.value)
    assert (e.value.file, e.value.line) == (str(p), 3)


def test_skip_invalid_collects_rejects_for_a_sidecar(tmp_path: Path) -> None:
    good = '{"question": "q", "reasoning": "1 + 1 = 2", "answer": "2"}'
    p = _write(tmp_path, [good, "{oops", '{"question": "q"}'])
    rejects: list[data.Reject] = []
    recs = data.read_jsonl(p, skip_invalid=True, rejects=rejects)
    assert len(recs) == 1 and [r.line for r in rejects] == [2, 3]
    side = data.write_rejects(tmp_path / "out.jsonl", rejects)
    assert side.name == "out.jsonl.rejects.jsonl"
    rows = [json.loads(x) for x in side.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["raw"] == "{oops" and "malformed JSON" in rows[0]["detail"]
    assert "missing field" in rows[1]["detail"]


def test_non_utf8_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "b.jsonl"
    p.write_bytes(b'{"question": "\xff"}\n')
    with pytest.raises(DataError, match=r"b.jsonl:1: not UTF-8"):
        data.read_jsonl(p)
    with pytest.raises(DataError, match="file not found"):
        data.read_jsonl(tmp_path / "nope.jsonl")


def test_record_reads_like_a_dict() -> None:
    r = data.generate("add", 1)[0]
    assert r["question"] == r.question and r.get("answer") == r.answer and r.get("nope", 1) == 1
    with pytest.raises(KeyError):
        r["nope"]
