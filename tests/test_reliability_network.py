"""No network at run time: the whole quickstart path runs with every socket forbidden.

Forbidding is done by replacing ``socket.socket.connect`` / ``connect_ex``,
``socket.create_connection`` and ``socket.getaddrinfo`` with functions that record the
attempt and raise. The test fails on any attempt, even one that the code caught and
ignored (a silent fallback would still be a network dependency).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_network(monkeypatch):
    attempts: list[str] = []

    def forbid(name):
        def f(*args, **kwargs):
            attempts.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
            raise OSError(f"network access forbidden in this test ({name})")

        return f

    monkeypatch.setattr(socket.socket, "connect", forbid("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", forbid("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", forbid("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", forbid("getaddrinfo"))
    yield attempts
    assert not attempts, f"network was attempted: {attempts[:5]}"


def test_forbidding_works(no_network) -> None:
    with pytest.raises(OSError, match="forbidden"):
        socket.create_connection(("example.com", 80), timeout=1)
    no_network.clear()


def test_quickstart_tiny_without_network(tmp_path: Path, no_network) -> None:
    from cotune.model import load
    from cotune.quickstart import quickstart

    m = load("tiny")
    assert m.tokenizer.encode("2 + 2 = 4")
    out = tmp_path / "qs"
    res = quickstart(
        out,
        config=ROOT / "configs" / "tiny.yaml",
        overrides=[
            "train.steps=3",
            "train.checkpoint_every=3",
            "data.train=[{generator: arithmetic, n: 24}]",
            "data.val_size_for_accuracy=1",
            "eval.max_new_tokens=8",
        ],
        n_test=4,
        force=True,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sft_steps"] == 3 and summary["n_test"] == 4
    for part in ("eval_base/report.json", "eval_tuned/report.json", "compare/compare.md"):
        assert (out / part).is_file(), part
    assert res.base["n_examples"] == 4


@pytest.mark.slow
def test_real_default_model_without_network(no_network) -> None:
    """The embedded gemma3-270m (GGUF shipped as a Python package) loads offline."""
    from cotune.generate import generate
    from cotune.model import load

    m = load("gemma3-270m")
    assert m.config.num_layers >= 18
    prompt = "The capital of France is Paris. The capital of Germany is"
    text = generate(m, [prompt], max_new_tokens=3, raw=True)[0]
    assert "Berlin" in text
