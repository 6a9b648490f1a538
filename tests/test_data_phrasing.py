"""Question phrasings: every split still verifies, and held-out phrasings never reach training."""

from __future__ import annotations

import random
import re
from collections import defaultdict

import pytest

from cotune import data
from cotune.data import phrasing, tasks_arith, tasks_percent, tasks_words
from cotune.data.generators import GROUPS, TASKS, verify_problem
from cotune.data.phrasing import HeldOut, phrase, spell, template_split

SPLITS = ("train", "heldout", "all")
SEEDS = range(150)
STORY_TASKS = GROUPS["arithmetic"] + GROUPS["word_problems"]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_difficulty_and_split_verifies(task: str, split: str) -> None:
    fn = TASKS[task]
    with template_split(split):
        for d in (1, 2, 3):
            for seed in SEEDS:
                p = fn(random.Random(seed * 7 + d), d)
                verify_problem(task, p)  # answer == independent check, every claim true
                assert p.question and "{" not in p.question and "}" not in p.question, p.question


@pytest.fixture(scope="module")
def chosen() -> dict[str, dict[str, list[tuple[tuple[str, ...], str]]]]:
    """Per split and task: every (templates offered, template picked) pair of phrase()."""
    out: dict[str, dict[str, list]] = {s: defaultdict(list) for s in SPLITS}
    current: list[str] = []

    def spy(rng: random.Random, templates):
        picked = phrase(rng, templates)
        out[phrasing.current_split()][current[-1]].append((tuple(templates), picked))
        return picked

    mp = pytest.MonkeyPatch()
    mp.setattr(tasks_arith, "phrase", spy)
    mp.setattr(tasks_words, "phrase", spy)
    mp.setattr(tasks_percent, "phrase", spy)
    try:
        for split in SPLITS:
            with template_split(split):
                for task, fn in TASKS.items():
                    current.append(task)
                    for d in (1, 2, 3):
                        for seed in SEEDS:
                            fn(random.Random(seed), d)
    finally:
        mp.undo()
    return out


def test_every_question_goes_through_phrase(chosen) -> None:
    for split in SPLITS:
        for task in TASKS:
            assert len(chosen[split][task]) == 3 * len(SEEDS), (split, task)


def test_heldout_templates_never_picked_for_training(chosen) -> None:
    for split, want_heldout in (("train", False), ("heldout", True)):
        for task, picks in chosen[split].items():
            for templates, picked in picks:
                kinds = {isinstance(t, HeldOut) for t in templates if str(t) == picked}
                assert kinds == {want_heldout}, (split, task, picked)
    # every branch of every task offers both kinds, so both splits always work
    for task, picks in chosen["all"].items():
        for templates, _ in picks:
            kinds = {isinstance(t, HeldOut) for t in templates}
            assert kinds == {True, False}, (task, templates)


_WORDS = {
    *phrasing.NAMES,
    *(w for pair in phrasing.ITEMS for w in pair),
    *tasks_words.GOODS,
    *(spell(i) for i in range(20)),
    *("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"),
    *("she", "he", "a", "an", "increase", "decrease", "more", "fewer", "up", "down"),
    *("phone", "case"),
}
_WORD_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _WORDS), key=len)[::-1]) + r")\b")
_NUM_RE = re.compile(r"[$₹]?-?\d[\d.,]*|[-+*/():]")


def shape(question: str) -> str:
    """A question with its numbers, names, items and other variable words blanked out."""
    q = _NUM_RE.sub("#", question)
    q = _WORD_RE.sub("_", q)
    return re.sub(r"[#_ -]+", " ", q).strip()


def _shapes(split: str, tasks: tuple[str, ...]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in data.generate(list(tasks), n=6000, seed=11, templates=split, unique=False):
        out[r.task].add(shape(r.question))
    return out


def test_heldout_wordings_differ_from_training_wordings() -> None:
    """Black-box: no held-out question, with numbers and names blanked, reads like a
    training question; and every story task has many phrasings, >= 2 held out."""
    train, held = _shapes("train", tuple(TASKS)), _shapes("heldout", tuple(TASKS))
    all_train = set().union(*train.values())
    for task in TASKS:
        assert held[task], task
        assert not held[task] & all_train, (task, held[task] & all_train)
    for task in STORY_TASKS:
        assert len(train[task]) + len(held[task]) >= 8, (task, train[task] | held[task])
        assert len(held[task]) >= 2, (task, held[task])


def test_stories_carry_words_and_irrelevant_numbers() -> None:
    recs = data.generate(list(STORY_TASKS), n=3000, seed=3, templates="all", difficulty=[1, 2])
    spelled = [
        r for r in recs if re.search(r"\b(two|three|four|five|six|seven|eight|nine)\b", r.question)
    ]
    aged = [
        r for r in recs if re.search(r"who is \d+|aged \d+|with \d+ (staff|workers)", r.question)
    ]
    assert len(spelled) > 50 and len({r.task for r in spelled}) >= 8
    assert len(aged) > 50 and len({r.task for r in aged}) >= 8


def test_same_seed_same_split_same_data_and_splits_differ() -> None:
    for split in SPLITS:
        a = data.generate(["arithmetic", "word_problems"], n=50, seed=4, templates=split)
        assert a == data.generate(["arithmetic", "word_problems"], n=50, seed=4, templates=split)
    tr = data.generate(["word_problems"], n=50, seed=4, templates="train")
    ho = data.generate(["word_problems"], n=50, seed=4, templates="heldout")
    assert {r.question for r in tr}.isdisjoint({r.question for r in ho})


def test_interleaved_streams_keep_their_own_split() -> None:
    """The split is set per task call, so two live streams cannot leak into each other."""
    kw = {"seed": 9, "difficulty": [1, 2]}
    alone = {s: data.generate(["all"], n=40, templates=s, **kw) for s in ("train", "heldout")}
    tr = data.iter_generate(["all"], templates="train", unique=True, **kw)
    ho = data.iter_generate(["all"], templates="heldout", unique=True, **kw)
    mixed: dict[str, list] = {"train": [], "heldout": []}
    for _ in range(40):
        mixed["train"].append(next(tr))
        mixed["heldout"].append(next(ho))
    assert mixed == alone
    assert phrasing.current_split() == "all"


def test_phrase_and_split_errors() -> None:
    rng = random.Random(0)
    with template_split("heldout"), pytest.raises(ValueError, match="no 'heldout' template"):
        phrase(rng, ("only {a}",))
    with pytest.raises(ValueError, match="templates must be one of"):
        data.generate(["add"], n=1, templates="test")
    with pytest.raises(ValueError, match="templates must be one of"), template_split("dev"):
        pass
    assert type(phrase(rng, (HeldOut("x"),))) is str


def test_spell() -> None:
    assert [spell(n) for n in (0, 7, 13, 20, 47, 90, 99)] == [
        "zero", "seven", "thirteen", "twenty", "forty-seven", "ninety", "ninety-nine",
    ]  # fmt: skip
    for bad in (-1, 100):
        with pytest.raises(ValueError):
            spell(bad)
