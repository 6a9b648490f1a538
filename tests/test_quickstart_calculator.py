"""A recipe trained for the calculator (``data.style: tool``, ``train.mask_values``,
``eval.calculator``) is generated and evaluated with it everywhere: in the quickstart's
base and fine-tuned evaluations (so the two compare like for like), in the run it leaves
(``cotune generate/chat/eval`` default to it), and nowhere else."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from cotune.commands._model import use_calculator

ROOT = Path(__file__).resolve().parent.parent


def test_use_calculator_follows_the_flag_then_the_run() -> None:
    trained_for_it = SimpleNamespace(meta={"calculator": True})
    plain = SimpleNamespace(meta={})
    assert use_calculator(None, trained_for_it) is True
    assert use_calculator(None, plain) is False
    assert use_calculator(False, trained_for_it) is False  # --no-calculator wins
    assert use_calculator(True, plain) is True


def test_quickstart_with_the_calculator(tmp_path: Path) -> None:
    from cotune.quickstart import quickstart
    from cotune.runs import resolve

    out = tmp_path / "qs"
    quickstart(
        out,
        config=ROOT / "configs" / "tiny.yaml",
        overrides=[
            "train.steps=2",
            "train.checkpoint_every=2",
            "data.train=[{generator: arithmetic, n: 24}]",
            "data.style=tool",
            "train.mask_values=true",
            "eval.calculator=true",
            "data.val_size_for_accuracy=1",
            "eval.max_new_tokens=8",
        ],
        n_test=4,
        n_test_heldout=2,
        force=True,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calculator"] is True
    for part in ("eval_base", "eval_tuned", "eval_tuned_heldout_templates"):
        meta = json.loads((out / part / "report.json").read_text())["meta"]
        assert meta["calculator"] == "on", part
    compared = (out / "compare" / "compare.md").read_text()
    assert "calculator differs" not in compared
    # the training data is in the tool style: one claim per operation
    first = json.loads((out / "data" / "train.jsonl").read_text().splitlines()[0])
    assert ":" not in first["reasoning"].split("=")[0], first["reasoning"]
    # the run remembers it, so a command on the run generates with the calculator
    assert resolve(out / "sft").meta["calculator"] is True


def test_a_plain_run_does_not_use_the_calculator(tmp_path: Path) -> None:
    from cotune.config import load_config
    from cotune.runs import resolve
    from cotune.train.sft import train

    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        ["train.steps=1", "train.checkpoint_every=1", "data.train=[{generator: add, n: 8}]"],
    )
    train(cfg, tmp_path / "run", force=True)
    assert resolve(tmp_path / "run").meta["calculator"] is False
