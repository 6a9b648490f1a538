"""``cotune generate`` / ``cotune chat`` on the tiny model, through the real CLI app."""

from __future__ import annotations

from typer.testing import CliRunner

from cotune.cli import app

runner = CliRunner()


def test_generate_prints_a_completion():
    r = runner.invoke(app, ["generate", "--model", "tiny", "-n", "6", "What is 2 + 3?"])
    assert r.exit_code == 0, r.output
    assert r.output.strip()
    raw = runner.invoke(app, ["generate", "--model", "tiny", "-n", "6", "--raw", "12 + 7 ="])
    assert raw.exit_code == 0, raw.output
    exact = runner.invoke(app, ["generate", "-m", "tiny", "-n", "6", "--dtype", "float32", "hi"])
    assert exact.exit_code == 0, exact.output
    bad = runner.invoke(app, ["generate", "-m", "tiny", "--dtype", "float16", "hi"])
    assert bad.exit_code == 2


def test_generate_names_a_missing_model(tmp_path):
    r = runner.invoke(app, ["generate", "--model", str(tmp_path / "nowhere"), "hi"])
    assert r.exit_code == 2
    assert "nowhere" in r.output


def test_chat_streams_and_shows_reasoning_and_answer():
    r = runner.invoke(app, ["chat", "--model", "tiny", "-n", "8"], input="What is 2 + 3?\n\n")
    assert r.exit_code == 0, r.output
    assert "reasoning" in r.output and "answer" in r.output and "tokens, finished:" in r.output
