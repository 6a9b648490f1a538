"""``cotune data ...`` through typer's CliRunner: happy paths and bad input (exit 1, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cotune import data
from cotune.commands.data import app

runner = CliRunner()
FIX = Path(__file__).parent / "fixtures" / "gsm8k"


def run(*args: str):
    res = runner.invoke(app, list(map(str, args)))
    assert "Traceback" not in res.output, res.output
    return res


def test_generate_validate_show(tmp_path: Path) -> None:
    out = tmp_path / "g.jsonl"
    res = run(
        "generate", "--tasks", "arithmetic,word_problems", "--n", "300", "--seed", "4", "--out", out
    )
    assert res.exit_code == 0, res.output
    recs = data.read_jsonl(out)
    assert len(recs) == 300 and recs == data.generate("arithmetic,word_problems", 300, seed=4)
    assert run("validate", out).exit_code == 0
    res = run("show", out, "--n", "2")
    assert res.exit_code == 0 and recs[0].question[:20] in res.output and "2 of 300" in res.output
    res = run("generate", "--tasks", "algebra", "--n", "3", "--out", out, "--force")
    assert res.exit_code == 1 and "unknown task or group 'algebra'" in res.output


def test_import_gsm8k_with_exclude(tmp_path: Path) -> None:
    out = tmp_path / "gsm.jsonl"
    res = run("import", "gsm8k", FIX / "train.jsonl", "--out", out, "--exclude", FIX / "test.jsonl")
    assert res.exit_code == 0, res.output
    kept = data.read_jsonl(out)
    side = [json.loads(x) for x in data.rejects_path(out).read_text().splitlines()]
    assert len(kept) + len(side) == 40 and len(kept) >= 38
    assert run("validate", out).exit_code == 0


def test_bad_input_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"question": "q", "reasoning": "1 + 1 = 2", "answer": "2"}\n{"question": "q2", "answer": "x"\n'
    )
    out = tmp_path / "o.jsonl"
    res = run("import", "jsonl", bad, "--out", out)
    assert (
        res.exit_code == 1
        and f"{bad}:2: malformed JSON" in res.output
        and "--skip-invalid" in res.output
    )
    res = run("import", "jsonl", bad, "--out", out, "--skip-invalid")
    assert res.exit_code == 0 and len(data.read_jsonl(out)) == 1
    assert json.loads(data.rejects_path(out).read_text())["line"] == 2
    res = run("validate", bad)
    assert res.exit_code == 1 and f"{bad}:2:" in res.output
    missing = tmp_path / "m.jsonl"
    missing.write_text('{"question": "q", "answer": "2"}\n')
    res = run("validate", missing)
    assert res.exit_code == 1 and f"{missing}:1: missing field 'reasoning'" in res.output
    unparsable = tmp_path / "u.csv"
    unparsable.write_text("question,answer\nWhat?,many\n")
    res = run("import", "csv", unparsable, "--out", out, "--force")
    assert (
        res.exit_code == 1
        and f"{unparsable}:2: column 'answer': expected a numeric answer" in res.output
    )
    res = run("show", tmp_path / "nope.jsonl")
    assert res.exit_code == 1 and "file not found" in res.output


def test_validate_reports_structural_problems_with_lines(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    rows = [
        {"question": "a?", "reasoning": "1 + 1 = 2.", "answer": "2"},
        {"question": "b?", "reasoning": "1 + 1 = 2, 2 + 1 = 3.", "answer": "2"},
        {"question": "a?", "reasoning": "1 + 1 = 2.", "answer": "2"},
    ]
    f.write_text("\n".join(map(json.dumps, rows)) + "\n")
    res = run("validate", f)
    assert res.exit_code == 1
    assert f"{f}:2: answer_inconsistent" in res.output and f"{f}:3: duplicate" in res.output


def test_mix_and_split(tmp_path: Path) -> None:
    gsm = tmp_path / "gsm.jsonl"
    assert run("import", "gsm8k", FIX / "train.jsonl", "--out", gsm).exit_code == 0
    out = tmp_path / "mix.jsonl"
    res = run(
        "mix",
        "--in",
        f"{gsm}:0.5",
        "--gen",
        "arithmetic:0.25",
        "--gen",
        "equations:0.25",
        "--n",
        "80",
        "--seed",
        "1",
        "--out",
        out,
    )
    assert res.exit_code == 0, res.output
    recs = data.read_jsonl(out)
    assert 70 <= len(recs) <= 80 and {r.task for r in recs} >= {"gsm8k", "linear_eq"}
    again = tmp_path / "mix2.jsonl"
    run(
        "mix",
        "--in",
        f"{gsm}:0.5",
        "--gen",
        "arithmetic:0.25",
        "--gen",
        "equations:0.25",
        "--n",
        "80",
        "--seed",
        "1",
        "--out",
        again,
    )
    assert again.read_text() == out.read_text()
    res = run("mix", "--gen", "nope:1", "--n", "5", "--out", out, "--force")
    assert res.exit_code == 1 and "unknown task" in res.output
    res = run("split", out, "--out-dir", tmp_path / "parts", "--fractions", "0.8,0.1,0.1")
    assert res.exit_code == 0
    n = sum(
        len(data.read_jsonl(tmp_path / "parts" / f"{k}.jsonl")) for k in ("train", "val", "test")
    )
    assert n == len(recs)
