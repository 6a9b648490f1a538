"""The quickstart's data split: disjoint sets, balanced tests, held-out phrasings kept apart."""

from __future__ import annotations

from collections import Counter

import pytest
from rich.console import Console
from test_data_phrasing import _shapes, shape

from cotune import data
from cotune.config import load_config
from cotune.data.generators import GROUPS
from cotune.eval import evaluate
from cotune.eval.compare import compare_reports
from cotune.quickstart import DEFAULT_CONFIG, _final_table, _same_questions, _split_data

SMALL = [
    "data.train=[{generator: arithmetic, n: 150}, {generator: word_problems, n: 100}]",
    "data.val_size_for_accuracy=10",
]
TASKS = GROUPS["arithmetic"] + GROUPS["word_problems"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(DEFAULT_CONFIG, SMALL)


@pytest.fixture(scope="module")
def parts(cfg):
    return _split_data(cfg, 60, 30)


def _keys(recs) -> set[str]:
    return {data.question_key(r.question) for r in recs}


def _seeds(recs) -> set[str]:
    return {r.id.split("/")[1] for r in recs}


def test_shipped_config_tests_levels_1_and_2(cfg) -> None:
    assert cfg.data.test_difficulty == [1, 2]


def test_no_question_in_two_sets(parts) -> None:
    names = ["train", "val", "test", "test_heldout_templates"]
    assert [len(parts[n]) > 0 for n in names] == [True] * 4
    for i, a in enumerate(names):
        assert len(_keys(parts[a])) == len(parts[a]), a  # no repeats inside a set either
        for b in names[i + 1 :]:
            assert not _keys(parts[a]) & _keys(parts[b]), (a, b)


def test_tests_come_from_their_own_seeds(parts) -> None:
    trained = _seeds(parts["train"]) | _seeds(parts["val"])
    test, held = _seeds(parts["test"]), _seeds(parts["test_heldout_templates"])
    assert not trained & test and not trained & held and not test & held


def test_tests_are_balanced_over_tasks_and_levels(parts) -> None:
    for name, per_cell in (("test", 2), ("test_heldout_templates", 1)):
        cells = Counter((r.task, r.difficulty) for r in parts[name])
        assert set(cells) == {(t, d) for t in TASKS for d in (1, 2)}, name
        assert set(cells.values()) == {per_cell}, name
    prefix = parts["test"][: len(TASKS) * 2]  # the base model's share is balanced too
    assert len({(r.task, r.difficulty) for r in prefix}) == len(prefix)
    short = {r.task for r in parts["test"][:10]}
    assert short & set(GROUPS["arithmetic"]) and short & set(GROUPS["word_problems"])


def test_templates_split_between_training_and_heldout_test(parts) -> None:
    train_shapes = set().union(*_shapes("train", TASKS).values())
    held_shapes = set().union(*_shapes("heldout", TASKS).values())
    assert not train_shapes & held_shapes
    for name in ("train", "val", "test"):
        got = {shape(r.question) for r in parts[name]}
        assert not got & held_shapes, (name, got & held_shapes)
    got = {shape(r.question) for r in parts["test_heldout_templates"]}
    assert not got & train_shapes, got & train_shapes
    assert len(got) >= len(TASKS)


def test_split_is_deterministic(cfg, parts) -> None:
    again = _split_data(cfg, 60, 30)
    assert again == parts
    assert _split_data(cfg, 60, 0)["test_heldout_templates"] == []


def test_same_questions_and_final_table(parts) -> None:
    test = parts["test"][:8]
    answers = {
        r.id: f"<reasoning>1 + 1 = 2.</reasoning>\n<answer>{r.answer}</answer>" for r in test
    }
    tuned = evaluate(None, test, completions=answers, progress=False, meta={"model": "tuned"})
    base = evaluate(None, test[:4], completions=["no idea"] * 4, progress=False)
    same = _same_questions(tuned, test[:4])
    assert same.metrics["n_examples"] == 4 and same.metrics["accuracy_strict"] == 1.0
    assert same.meta["data_fingerprint"] == base.meta["data_fingerprint"]
    assert same.meta["model"] == "tuned"
    cmp = compare_reports(base.to_dict(), same.to_dict())
    con = Console(record=True, width=200)
    con.print(_final_table("m", cmp, base, tuned, tuned))
    text = con.export_text()
    assert "(4 q)" in text and "(8 q)" in text and "unseen phrasings" in text
    assert "100.0% [67.6, 100.0]" in text  # 8/8 with its Wilson interval
    assert "+100.0 pts" in text
