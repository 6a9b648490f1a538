"""Every input parser, fuzzed: bad input is a clear cotune error or a correct parse, never a
traceback (issue 7). Complements the smaller fuzzers in test_format / test_config /
test_data_importers with hostile structured inputs (deep nesting, huge integers, NaN, lone
surrogates, NUL bytes, BOMs, tag soup) and round-trip checks on whatever parses.

The fast tier runs each fuzzer at a tenth of its budget (hundreds of cases);
``test_fuzz_full_budget`` (slow) reruns them all at the full budget, 1,000-5,000 cases each.
``FUZZ_SCALE`` (env) sets the multiplier. Counts: docs/reliability.md.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cotune import data
from cotune.config import ConfigError, RunConfig, load_config
from cotune.data.records import DataError, Record, read_jsonl, write_jsonl
from cotune.eval.inputs import EvalInputError, load_predictions, load_records
from cotune.format import answers_match, normalize_answer, parse_completion, parse_number
from cotune.verify import check_steps, find_claims

SCALE = float(os.environ.get("FUZZ_SCALE", "0.1"))  # the slow test below runs 1.0


def budget(n: int) -> settings:
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )


# --------------------------------------------------------------------------- strategies

_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["48", "1,234", "3/4", "-2.5", "#### 72", "\ud800", "1e5000", ""]),
)
_json = st.recursive(
    _json_scalar,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
_KEYS = [
    "id",
    "task",
    "question",
    "reasoning",
    "answer",
    "source",
    "difficulty",
    "prompt",
    "completion",
    "completions",
    "messages",
    "truncated",
    "finish_reason",
]
_texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "What is 2 + 2?",
            "2 + 2 = 4",
            "<reasoning>2 + 2 = 4</reasoning><answer>4</answer>",
            "Reasoning: 6 * 7 = 42\nAnswer: 42",
            "so #### 1,234",
            "The answer is 7.",
            "Question: What is 3 * 3?\nAnswer:",
        ]
    ),
)
_messages = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "assistant", "model", "system", 3]),
                "content": _texts,
            }
        ),
        _json,
    ),
    max_size=4,
)
# Objects that look like what each format expects, with any field wrong in any way.
_record_like = st.dictionaries(
    st.sampled_from(_KEYS),
    st.one_of(_texts, _json, _messages),
    max_size=len(_KEYS),
).map(json.dumps)
_HOSTILE = [
    "[" * 5000,
    '{"a":' * 3000,
    '{"question": "q", "answer": ' + "9" * 5000 + ', "reasoning": "r"}',
    '{"question": "q", "answer": NaN, "reasoning": "r"}',
    '{"question": "q", "answer": Infinity, "reasoning": "r"}',
    '{"question": "\\ud800", "answer": "1", "reasoning": "1 + 0 = 1"}',
    '{"id": "\\udfff", "question": "q?", "answer": "1", "reasoning": "r"}',
    '{"prompt": "q\\ud800", "completion": "<answer>1</answer>"}',
    '{"question": "q", "answer": "1", "reasoning": "r", "difficulty": 1e400}',
    '{"id": "x", "completion": "\\u0000"}',
    "\ufeff" + '{"question": "q", "answer": "1", "reasoning": "r"}',
    "question,answer",
    '"unterminated',
    "a\x00b,c",
    "\r\r\n",
]


def _line() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=60),
        st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),
        _record_like.map(str.encode),
        st.sampled_from(_HOSTILE).map(lambda s: s.encode("utf-8", "surrogatepass")),
    )


_files = st.lists(_line(), max_size=6).map(lambda ls: b"\n".join(ls))


def _roundtrip_ok(tmp: Path, recs: list[Record]) -> None:
    """Whatever parsed is usable downstream: written as UTF-8 JSONL and read back unchanged."""
    for r in recs:
        for k in ("id", "task", "question", "reasoning", "answer", "source"):
            assert isinstance(getattr(r, k), str)
        assert r.question.strip()
    out = tmp / "roundtrip.jsonl"
    write_jsonl(out, recs)
    assert read_jsonl(out) == recs


def _check_data_error(e: DataError, path: Path) -> None:
    assert str(e).startswith(f"{path}"), str(e)
    assert e.line is None or e.line >= 1, str(e)


# --------------------------------------------------------------------------- importers


@pytest.mark.parametrize("kind", sorted(data.IMPORTERS))
@budget(1000)
@given(content=_files)
@example(content=b'{"answer":"####0","question":""}')  # blank questions: rejects, never records
@example(content=b'{"answer":"#### 1","question":" \\t\\n"}')
def test_importers_each_kind(tmp_path: Path, kind: str, content: bytes) -> None:
    p = tmp_path / f"in.{'csv' if kind == 'csv' else 'jsonl'}"
    p.write_bytes(content)
    try:
        recs = data.import_file(kind, p)
    except DataError as e:
        _check_data_error(e, p)
        rejects: list = []
        recs = data.import_file(kind, p, skip_invalid=True, rejects=rejects)
        assert rejects and all(r.file == str(p) for r in rejects)
        data.write_rejects(tmp_path / "x.jsonl", rejects)  # the sidecar can always be written
    _roundtrip_ok(tmp_path, recs)
    for r in recs:
        if kind != "csv":
            assert parse_number(r.answer) is not None


@budget(2000)
@given(content=_files)
def test_record_jsonl_reading(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "r.jsonl"
    p.write_bytes(content)
    try:
        recs = read_jsonl(p)
    except DataError as e:
        _check_data_error(e, p)
        assert e.line is not None
        recs = read_jsonl(p, skip_invalid=True)
    _roundtrip_ok(tmp_path, recs)


@budget(1000)
@given(content=_files)
def test_rl_question_reading(tmp_path: Path, content: bytes) -> None:
    """RL's reader behind ``data.train: [{path: ...}]`` (question and answer only); SFT reads
    canonical records with ``read_jsonl`` (above)."""
    from cotune.rl.questions import read_questions

    p = tmp_path / "train.jsonl"
    p.write_bytes(content)
    try:
        recs = read_questions(p)
    except DataError as e:
        _check_data_error(e, p)
        return
    for r in recs:
        assert isinstance(r, dict) and isinstance(r["question"], str)


# --------------------------------------------------------------------------- eval inputs


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@budget(1500)
@given(content=_files, limit=st.one_of(st.none(), st.integers(1, 3)))
def test_eval_load_records(tmp_path: Path, suffix: str, content: bytes, limit: int | None) -> None:
    p = tmp_path / f"gold{suffix}"
    p.write_bytes(content)
    try:
        recs = load_records(p, limit=limit)
    except EvalInputError as e:
        assert str(e).startswith(str(p)), str(e)
        return
    assert recs and (limit is None or len(recs) <= limit)
    assert len({r.id for r in recs}) == len(recs)
    for r in recs:
        assert isinstance(r.question, str) and r.question.strip() and isinstance(r.answer, str)
        json.dumps(r.to_dict(), ensure_ascii=False).encode("utf-8")  # reportable as UTF-8


@budget(1500)
@given(content=_files)
def test_eval_load_predictions(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "preds.jsonl"
    p.write_bytes(content)
    try:
        preds = load_predictions(p)
    except EvalInputError as e:
        assert str(e).startswith(str(p)), str(e)
        return
    for rid, comps in preds.completions.items():
        assert isinstance(rid, str) and all(isinstance(c, str) for c in comps)
        assert len(preds.truncated[rid]) == len(comps)
        for c in comps:
            parse_completion(c, "tags", strict=True)


# --------------------------------------------------------------------------- format / verify

_TAGS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", "Reasoning:", "Answer:"]
_tag_soup = st.lists(
    st.one_of(
        st.sampled_from(_TAGS + ["####", "The answer is", "\n", " ", "="]),
        st.text(max_size=12),
        st.integers(-(10**12), 10**12).map(str),
        st.sampled_from(["1,234", "3/4", "1 1/2", "₹300", "50%", "−7", "0.333", "1e9"]),
    ),
    max_size=20,
).map("".join)


@budget(5000)
@given(text=st.one_of(_tag_soup, st.text()), schema=st.sampled_from(["tags", "plain"]))
def test_parse_completion_both_schemas(text: str, schema: str) -> None:
    strict = parse_completion(text, schema, strict=True)  # type: ignore[arg-type]
    lenient = parse_completion(text, schema, strict=False)  # type: ignore[arg-type]
    for p in (strict, lenient):
        assert p.well_formed == (not p.problems)
        assert p.answer is None or isinstance(p.answer, str)
    if strict.well_formed:  # lenient never loses a well-formed answer
        assert lenient.answer == strict.answer
    if strict.answer is not None:
        assert lenient.answer is not None


@budget(5000)
@given(
    a=st.one_of(_tag_soup, st.text(max_size=30), st.fractions().map(str)),
    b=st.one_of(st.text(max_size=30), st.integers().map(str), st.fractions().map(str)),
)
def test_answers_match_total(a: str, b: str) -> None:
    r = answers_match(a, b)
    assert r in (True, False) and answers_match(b, a) == r
    assert answers_match(a, a) == bool(normalize_answer(a))
    assert answers_match(None, b) is False


@budget(3000)
@given(x=st.fractions(max_denominator=1000), noise=st.sampled_from(["", " ", "$", "."]))
def test_answers_match_numbers(x: Fraction, noise: str) -> None:
    from cotune.format import format_number

    s = format_number(x)
    assert answers_match(s + (noise if noise == "." or noise == " " else ""), s)
    assert not answers_match(format_number(x + 1), s)


_arith = st.lists(
    st.one_of(
        st.integers(-(10**9), 10**9).map(str),
        st.sampled_from(["+", "-", "*", "/", "×", "÷", " x ", "=", "(", ")", "%", ",", ".", "$"]),
        st.text(max_size=4),
    ),
    max_size=25,
).map(" ".join)


@budget(3000)
@given(text=st.one_of(_arith, st.text(max_size=200)))
def test_find_claims_total(text: str) -> None:
    claims = find_claims(text)
    for c in claims:
        assert isinstance(c.correct, bool) and c.text
        assert c.true_value is None or isinstance(c.true_value, Fraction)
    rep = check_steps(text)
    assert rep is not None


@pytest.mark.parametrize(
    "text",
    [
        "(" * 5000 + "1" + ")" * 5000 + " = 1",
        "1" + " + 1" * 5000 + " = 5001",
        "9" * 5000 + " * " + "9" * 5000 + " = 1",
        "1 / 0 = 1",
        "0 / 0 = 0",
        "2 = 2 = 2 = " * 2000,
        "10 % 0 = 1",
    ],
)
def test_find_claims_hostile(text: str) -> None:
    for c in find_claims(text):
        assert isinstance(c.correct, bool)
    check_steps(text)


# --------------------------------------------------------------------------- config

_SECTIONS = list(RunConfig.model_fields)
_dotted = st.one_of(
    st.builds(
        lambda s, k: f"{s}.{k}",
        st.sampled_from(_SECTIONS),
        st.sampled_from(
            ["rank", "lr", "steps", "fsdp", "tp", "name", "schema", "train", "nope", "seed", ""]
        ),
    ),
    st.text(max_size=12),
    st.sampled_from(_SECTIONS),
)
_override = st.one_of(
    st.builds(
        lambda k, v: f"{k}={v}",
        _dotted,
        st.one_of(st.text(max_size=12), st.sampled_from(["[1, 2", "{a: 1}", "-1", "0", "1e400"])),
    ),
    st.text(max_size=20),
)


@budget(2000)
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.dictionaries(st.sampled_from(_SECTIONS + ["bogus"]), _json, max_size=4).map(json.dumps),
    ),
    overrides=st.lists(_override, max_size=4),
)
def test_config_text_and_overrides(tmp_path: Path, text: str, overrides: list[str]) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        cfg = load_config(p, overrides)
    except ConfigError as e:
        msg = str(e)
        assert msg and "Traceback" not in msg
        assert str(p) in msg or "--set" in msg, msg
        return
    assert isinstance(cfg, RunConfig)
    from cotune.config import dump_config

    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg), encoding="utf-8")
    assert load_config(again) == cfg  # a valid config survives its own dump


# --------------------------------------------------------------------------- full budget


@pytest.mark.slow
def test_fuzz_full_budget() -> None:
    """Every fuzzer above at its full budget (1,000-5,000 cases each; ~4 min on 2 cores)."""
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            __file__,
            "-m",
            "not slow",
        ],
        # The full budget is a fixed set (profile ci) even under make test-all, whose
        # thorough profile already searches randomly at THOROUGH_SCALE x the fast tier.
        env={**os.environ, "FUZZ_SCALE": "1", "HYPOTHESIS_PROFILE": "ci"},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-5000:]
