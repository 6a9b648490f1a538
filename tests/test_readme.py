"""The README (and the cheap commands of docs/) run as written.

Every command line of the README's "CLI tour" bash block and its "Python API" block runs,
in order, in a fresh folder, and must exit 0. Only sizes change, through the explicit
table below (the tiny model and config instead of the 270M, few steps, small n); each
substitution must apply, so a README line that drifts from the table fails here as surely
as one that drifts from the code. Repository files the commands name (``configs/``,
``data/gsm8k/``) are linked into the folder.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotune.cli import app

ROOT = Path(__file__).resolve().parent.parent
# Real training, RL, quickstart and compiles in one test: minutes on a busy 2-core machine.
LONG = pytest.mark.timeout(1800)

QUICK_TRAIN = "--set train.steps=4 --set train.checkpoint_every=2 --set train.eval_every=2"
# (text in the documentation, what the test runs instead): sizes only
README_SIZES = [
    ("--n 5000", "--n 200"),
    ("configs/quickstart.yaml", f"configs/tiny.yaml {QUICK_TRAIN}"),
    ("--limit 100", "--limit 3"),
    ("configs/rl.yaml", "configs/rl-tiny.yaml --set rl.steps=1 --set rl.eval_size=2"),
    (
        "cotune quickstart ",
        f"cotune quickstart --config configs/tiny.yaml {QUICK_TRAIN} --n-test 4 ",
    ),
]
README_API_SIZES = [('"train.steps=30"', '"train.steps=4"')]
DATA_SIZES = [("--n 5000", "--n 200"), ("--n 10000", "--n 300")]
EXPORT_SIZES = [("--check 20", "--check 2"), ("n=20", "n=2")]
CHAT_INPUT = "What is 2 + 3?\n\n"


def fenced_block(doc: Path, heading: str, lang: str) -> str:
    """The first ```lang block after the heading line ``heading``."""
    text = doc.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    m = re.compile(rf"^```{lang}\n(.*?)^```", re.S | re.M).search(text, start)
    assert m, f"{doc.name}: no ```{lang} block after {heading!r}"
    return m.group(1)


def fenced_blocks(doc: Path, lang: str) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def command_lines(block: str) -> list[str]:
    """``cotune ...`` lines of a bash block, continuation lines joined, comments kept for
    shlex to drop."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [ln.strip() for ln in joined.splitlines() if ln.strip().startswith("cotune ")]


def substitute(text: str, table: list[tuple[str, str]], used: set[str]) -> str:
    for old, new in table:
        if old in text:
            text = text.replace(old, new)
            used.add(old)
    return text


@pytest.fixture()
def folder(tmp_path, monkeypatch) -> Path:
    """A fresh working folder with the repository's configs and GSM8K files linked in."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gsm8k").symlink_to(ROOT / "data" / "gsm8k")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(line: str) -> None:
    args = shlex.split(line, comments=True)
    assert args[0] == "cotune", line
    stdin = CHAT_INPUT if args[1] == "chat" else None
    r = CliRunner().invoke(app, args[1:], input=stdin)
    assert r.exit_code == 0, f"{line}\n-> exit {r.exit_code}\n{r.output}\n{r.exception!r}"


def run_python(code: str, cwd: Path) -> None:
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"{code}\n-> exit {r.returncode}\n{r.stdout}\n{r.stderr}"


@LONG
def test_readme_cli_tour(folder) -> None:
    used: set[str] = set()
    lines = command_lines(fenced_block(ROOT / "README.md", "## CLI tour", "bash"))
    assert len(lines) >= 10, lines
    for line in lines:
        run_cli(substitute(line + " ", README_SIZES, used).strip())
    assert used == {old for old, _ in README_SIZES}, "README no longer has: " + ", ".join(
        old for old, _ in README_SIZES if old not in used
    )


@LONG
def test_readme_python_api(folder) -> None:
    used: set[str] = set()
    code = fenced_block(ROOT / "README.md", "## Python API", "python")
    run_python(substitute(code, README_API_SIZES, used), folder)
    assert used == {old for old, _ in README_API_SIZES}


@LONG
def test_docs_data_quick_start(folder) -> None:
    used: set[str] = set()
    lines = command_lines(fenced_block(ROOT / "docs" / "data.md", "## Quick start", "bash"))
    assert len(lines) >= 6, lines
    for line in lines:
        run_cli(substitute(line, DATA_SIZES, used))
    assert used == {old for old, _ in DATA_SIZES}


@LONG
def test_docs_export_commands_and_python_api(folder) -> None:
    """Each bash block of docs/export.md with ``cotune`` lines runs on a fresh ``exports/``,
    against ``runs/NAME``, a short tiny run; then the Python API block."""
    run_cli(f"cotune train --config configs/tiny.yaml --out runs/NAME {QUICK_TRAIN}")
    doc = ROOT / "docs" / "export.md"
    used: set[str] = set()
    blocks = [b for b in map(command_lines, fenced_blocks(doc, "bash")) if b]
    assert len(blocks) >= 2 and sum(map(len, blocks)) >= 5, blocks
    for block in blocks:  # the blocks are alternatives: each may write the same folders
        shutil.rmtree(folder / "exports", ignore_errors=True)
        for line in block:
            run_cli(substitute(line, EXPORT_SIZES, used))
    shutil.rmtree(folder / "exports", ignore_errors=True)
    code = substitute(fenced_block(doc, "## Python API", "python"), EXPORT_SIZES, used)
    run_python(code, folder)
    assert used == {old for old, _ in EXPORT_SIZES}
