"""`cotune eval` from the command line: --predictions, --compare and inconsistent flags."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from cotune.cli import app

runner = CliRunner()

DATA = [
    {"id": "a", "task": "arith", "question": "What is 12 * 4?", "answer": "48", "difficulty": 1},
    {"id": "b", "task": "arith", "question": "What is 7 + 5?", "answer": "12", "difficulty": 1},
    {"id": "c", "task": "word", "question": "Sam has 3 and gets 4. How many?", "answer": "7"},
]


def tagged(reasoning: str, answer: str) -> str:
    return f"<reasoning>{reasoning}</reasoning>\n<answer>{answer}</answer>"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def files(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", DATA)
    before = write_jsonl(
        tmp_path / "before.jsonl",
        [
            {"id": "a", "completion": "12 * 4 = 48"},  # lenient only
            {"id": "b", "completion": tagged("7 + 5 = 11", "11")},  # wrong step, wrong answer
            {"id": "c", "completion": "<reasoning>3 + 4 =", "truncated": True},
        ],
    )
    after = write_jsonl(
        tmp_path / "after.jsonl",
        [
            {"id": "a", "completion": tagged("10 * 4 = 40, 40 + 8 = 48", "48")},
            {"id": "b", "completion": tagged("7 + 5 = 12", "12")},
            {"id": "b", "completion": tagged("7 + 5 = 13", "12")},  # right via wrong step
            {"id": "b", "completion": tagged("7 + 5 = 12", "13")},
            {"id": "c", "completion": tagged("3 + 4 = 7", "7")},
        ],
    )
    return data, before, after


def run(*args: str):
    return runner.invoke(app, ["eval", *map(str, args)])


def test_predictions_mode_writes_report(tmp_path, files):
    data, before, after = files
    res = run("--predictions", before, "--data", data, "--out", tmp_path / "A", "--quiet")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "A" / "report.json").read_text())
    m = rep["metrics"]
    assert (m["n_examples"], m["n_completions"]) == (3, 3)
    assert m["format_strict"] == pytest.approx(1 / 3)
    assert m["format_lenient"] == pytest.approx(1.0)  # "48", "11", and "3" as the last number
    assert m["accuracy_strict"] == 0
    assert m["accuracy_lenient"] == pytest.approx(1 / 3)
    assert m["steps"]["claims"] == 2 and m["steps"]["true_claims"] == 1
    assert m["truncated"] == 1
    assert rep["meta"]["mode"] == "predictions" and rep["meta"]["predictions"] == str(before)
    assert rep["meta"]["template"] == "chat" and "prompt_example" in rep["meta"]
    for png in ("accuracy_by_task.png", "overview.png"):
        assert (tmp_path / "A" / png).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "A" / "report.md").is_file()

    res = run("--predictions", after, "--data", data, "--out", tmp_path / "B", "--quiet")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "B" / "report.json").read_text())["metrics"]
    assert (m["n_completions"], m["samples_per_example"]) == (5, 3)
    assert m["accuracy_strict"] == pytest.approx(4 / 5)
    assert m["majority_accuracy"] == 1.0  # b: 12, 12, 13 -> 12
    assert m["steps"]["right_answer_wrong_step"] == 1

    # the predictions file written by eval scores to the same numbers again
    res = run(
        "--predictions", tmp_path / "B" / "predictions.jsonl", "--data", data,
        "--out", tmp_path / "B2", "--quiet",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    m2 = json.loads((tmp_path / "B2" / "report.json").read_text())["metrics"]
    assert m2 == m


def test_compare_mode(tmp_path, files):
    data, before, after = files
    for name, preds in (("A", before), ("B", after)):
        assert run("--predictions", preds, "--data", data, "--out", tmp_path / name).exit_code == 0
    res = run("--compare", tmp_path / "A", tmp_path / "B", "--out", tmp_path / "cmp")
    assert res.exit_code == 0, res.output
    assert "accuracy (strict)" in res.output and "+80.0 pts" in res.output
    c = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    acc = next(r for r in c["metrics"] if r["metric"] == "accuracy (strict)")
    assert acc["a"] == 0 and acc["b"] == pytest.approx(0.8) and acc["delta"] == pytest.approx(0.8)
    word = next(r for r in c["by_task_accuracy_strict"] if r["task"] == "word")
    assert (word["a"], word["b"]) == (0, 1.0)
    assert any("samples differs" in w for w in c["warnings"])
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "cmp" / "compare.md").read_text()
    cell = r"\[\d+\.\d, \d+\.\d\] \(n=\d+\)"  # the 95% interval and its n
    assert re.search(
        rf"\| accuracy \(strict\) \| 0\.0% {cell} \| 80\.0% {cell} \| \+80\.0 pts \|", md
    )
    # without --out it only prints
    res = run("--compare", tmp_path / "A", tmp_path / "B")
    assert res.exit_code == 0 and "format (strict)" in res.output


def test_compare_warns_when_one_side_had_the_calculator(tmp_path, files):
    from cotune.eval.compare import compare_reports

    data, before, _ = files
    assert run("--predictions", before, "--data", data, "--out", tmp_path / "A").exit_code == 0
    a = json.loads((tmp_path / "A" / "report.json").read_text())
    assert a["meta"].get("calculator") is None  # scored as given: unknown, not "off"
    alone = json.loads(json.dumps(a))
    alone["meta"].update(mode="generate", calculator="off")
    calc = json.loads(json.dumps(a))
    calc["meta"].update(mode="generate", calculator="on")
    unsaid = json.loads(json.dumps(a))
    unsaid["meta"].update(mode="generate")  # a generated report without the key: off
    assert not any("calculator" in w for w in compare_reports(alone, unsaid).warnings)
    assert any(
        w.startswith("calculator differs: 'off' vs 'on'")
        for w in compare_reports(unsaid, calc).warnings
    )


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "choose exactly one of --model"),
        (["--predictions", "P", "--compare", "A", "B"], "choose exactly one"),
        (
            ["--predictions", "P", "--data", "D", "--out", "O", "--samples", "3"],
            "--samples only apply when generating",
        ),
        (["--predictions", "P", "--out", "O"], "needs --data FILE and --out DIR"),
        (["--compare", "A", "B", "--data", "D"], "drop --data"),
        (["--compare", "A", "B", "--calculator"], "drop --calculator"),
        (
            ["--predictions", "P", "--data", "D", "--out", "O", "--calculator"],
            "--calculator only apply when generating",
        ),
        (
            ["--model", "tiny", "--data", "D", "--out", "O", "--samples", "3"],
            "needs --temperature > 0",
        ),
        (
            ["--model", "tiny", "--data", "D", "--out", "O", "--tokenizer", "tiny"],
            "--tokenizer only applies",
        ),
        (
            ["--predictions", "P", "--data", "D", "--out", "O", "--schema", "xml"],
            "expected tags or plain",
        ),
    ],
)
def test_inconsistent_flags(args, message):
    res = run(*args)
    assert res.exit_code == 2
    assert message in res.output


def test_bad_inputs_are_reported_not_raised(tmp_path, files):
    data, before, _ = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q", "answer": "1"}\n{"id": "b", "answer": "2"}\n')
    res = run("--predictions", before, "--data", bad, "--out", tmp_path / "o")
    assert res.exit_code == 2 and f"{bad}:2: key 'question' is missing" in res.output
    stray = write_jsonl(tmp_path / "stray.jsonl", [{"id": "zzz", "completion": "1"}])
    res = run("--predictions", stray, "--data", data, "--out", tmp_path / "o")
    assert res.exit_code == 2 and f"{stray}:1: id 'zzz' is not in" in res.output
    res = run("--compare", tmp_path / "nope", tmp_path / "nope2")
    assert res.exit_code == 2 and "no report found" in res.output
