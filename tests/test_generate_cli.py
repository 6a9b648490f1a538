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


def test_generate_and_chat_take_the_calculator(monkeypatch):
    """``--calculator`` reaches the generator: the random tiny model writes no claim of its
    own, so one is forced after its first token, and the calculator fills in its value."""
    from cotune.generate import api, host

    prefix = "<reasoning>48 / 2 ="
    monkeypatch.setattr(
        api,
        "calculator_text",
        lambda text: prefix if "<reasoning>" not in text else host.calculator_text(text),
    )
    args = ["generate", "-m", "tiny", "-n", "16", "What is 2 + 3?"]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert prefix not in plain.output
    calc = runner.invoke(app, [*args, "--calculator"])
    assert calc.exit_code == 0, calc.output
    assert prefix + " 24" in calc.output
    chat = runner.invoke(app, ["chat", "-m", "tiny", "-n", "16", "--calculator"], input="Hi\n\n")
    assert chat.exit_code == 0, chat.output
    assert prefix + " 24" in chat.output


def test_generate_names_a_missing_model(tmp_path):
    r = runner.invoke(app, ["generate", "--model", str(tmp_path / "nowhere"), "hi"])
    assert r.exit_code == 2
    assert "nowhere" in r.output


def test_chat_streams_and_shows_reasoning_and_answer():
    r = runner.invoke(app, ["chat", "--model", "tiny", "-n", "8"], input="What is 2 + 3?\n\n")
    assert r.exit_code == 0, r.output
    assert "reasoning" in r.output and "answer" in r.output and "tokens, finished:" in r.output
