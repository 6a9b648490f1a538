"""Synthetic reasoning data: deterministic, endless, and verified before it is emitted.

``iter_generate(["arithmetic"], seed=0)`` is an endless iterator of records; the same seed
gives the same stream. Every problem is checked twice before it becomes a record:

1. its answer equals an independent exact-fraction recomputation from the question's numbers;
2. its reasoning has at least one ``a op b = c`` claim, :func:`cotune.verify.find_claims`
   finds every one of them true, and the last claim (or number) is the answer.

A problem that fails is a bug in a task function, so it raises :class:`GenerationError`
instead of being skipped.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import count, islice

from cotune.data import tasks_arith as ta
from cotune.data import tasks_percent as tp
from cotune.data import tasks_words as tw
from cotune.data.clean import (
    DEFAULT_MAX_REASONING_TOKENS,
    answer_consistent,
    estimate_tokens,
    question_key,
)
from cotune.data.phrasing import check_split, template_split
from cotune.data.records import Record
from cotune.data.steps import DEFAULT_STYLE, trace_style
from cotune.format import format_number, parse_number
from cotune.verify import find_claims

TaskFn = Callable[[random.Random, int], ta.Problem]

TASKS: dict[str, TaskFn] = {
    "add": ta.add,
    "sub": ta.sub,
    "mul": ta.mul,
    "div": ta.div,
    "div_remainder": ta.div_remainder,
    "expr": ta.expr,
    "linear_eq": ta.linear_eq,
    "percent": tp.percent,
    "discount": tp.discount,
    "markup": tp.markup,
    "reverse_price": tp.reverse_price,
    "unit_rate": tw.unit_rate,
    "ratio": tw.ratio,
    "speed": tw.speed,
    "change": tw.change,
    "average": tw.average,
    "multi_step": tw.multi_step,
}
GROUPS: dict[str, tuple[str, ...]] = {
    "arithmetic": ("add", "sub", "mul", "div", "div_remainder"),
    "expressions": ("expr",),
    "word_problems": (
        "percent",
        "discount",
        "markup",
        "reverse_price",
        "unit_rate",
        "ratio",
        "speed",
        "change",
        "average",
        "multi_step",
    ),  # fmt: skip
    "equations": ("linear_eq",),
}
GROUPS["all"] = tuple(TASKS)
DIFFICULTIES = (1, 2, 3)


class GenerationError(AssertionError):
    """A generated example failed verification: a bug in its task function."""


def resolve_tasks(tasks: str | Iterable[str]) -> list[str]:
    """Group and task names (``"arithmetic,percent"`` or a list) -> task names, in order."""
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        if name in GROUPS:
            out += [t for t in GROUPS[name] if t not in out]
        elif name in TASKS:
            out += [] if name in out else [name]
        else:
            known = ", ".join([*GROUPS, *TASKS])
            raise ValueError(f"unknown task or group {name!r}; expected one of: {known}")
    if not out:
        raise ValueError("no tasks given")
    return out


def _difficulties(difficulty: int | Sequence[int] | None) -> tuple[int, ...]:
    ds = (
        DIFFICULTIES
        if difficulty is None
        else (difficulty,)
        if isinstance(difficulty, int)
        else tuple(difficulty)
    )
    if not ds or any(d not in DIFFICULTIES for d in ds):
        raise ValueError(f"difficulty must be in {DIFFICULTIES}, got {difficulty!r}")
    return ds


def verify_problem(task: str, p: ta.Problem) -> str:
    """Check a problem as described in the module docstring; returns the answer text."""
    answer = format_number(p.answer)
    if p.answer != p.check or parse_number(answer) != p.check:
        raise GenerationError(f"{task}: answer {answer} != independent check {p.check} in {p}")
    claims = find_claims(p.reasoning)
    if not claims:
        raise GenerationError(f"{task}: no checkable claim in {p.reasoning!r}")
    bad = [c.text for c in claims if not c.correct]
    if bad:
        raise GenerationError(f"{task}: false claim(s) {bad} in {p.reasoning!r}")
    if answer_consistent(p.reasoning, answer, claims) is not True:
        raise GenerationError(f"{task}: reasoning does not end at {answer}: {p.reasoning!r}")
    return answer


def iter_generate(
    tasks: str | Iterable[str] = ("arithmetic",),
    *,
    seed: int = 0,
    difficulty: int | Sequence[int] | None = None,
    unique: bool = False,
    templates: str = "all",
    style: str = DEFAULT_STYLE,
) -> Iterator[Record]:
    """An endless, deterministic stream of verified records (task and difficulty drawn
    uniformly). ``unique`` skips questions already emitted by this stream. ``templates``
    picks the question phrasings: ``"train"``, ``"heldout"`` (never used for training) or
    ``"all"`` (see :mod:`cotune.data.phrasing`). ``style`` is the shape of the arithmetic
    in the reasoning (:mod:`cotune.data.steps`)."""
    names, ds = resolve_tasks(tasks), _difficulties(difficulty)
    check_split(templates)
    fns = [TASKS[n] for n in names]
    rng = random.Random(seed)
    seen: set[str] = set()
    misses = 0
    for i in count():
        k = rng.randrange(len(names))
        d = ds[rng.randrange(len(ds))]
        with template_split(templates), trace_style(style):
            p = fns[k](rng, d)
        answer = verify_problem(names[k], p)
        if estimate_tokens(p.reasoning) > DEFAULT_MAX_REASONING_TOKENS:
            # Long division by two digits at level 4 can outgrow what `data validate` and
            # training keep; such a draw is skipped so that every record emitted is usable.
            misses += 1
            if misses > 10_000:
                raise ValueError(f"every trace of {names} at difficulty {ds} is too long")
            continue
        if unique:
            key = question_key(p.question)
            if key in seen:
                misses += 1
                if misses > 10_000:
                    raise ValueError(
                        f"ran out of distinct questions for {names} at difficulty {ds}"
                    )
                continue
            seen.add(key)
        misses = 0
        yield Record(
            f"{names[k]}/{seed}/{i}", names[k], p.question, p.reasoning, answer, "generated", d
        )


def generate(
    tasks: str | Iterable[str] = ("arithmetic",),
    n: int = 100,
    *,
    seed: int = 0,
    difficulty: int | Sequence[int] | None = None,
    unique: bool = True,
    templates: str = "all",
    style: str = DEFAULT_STYLE,
) -> list[Record]:
    """The first ``n`` records of :func:`iter_generate` (distinct questions by default)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    stream = iter_generate(
        tasks, seed=seed, difficulty=difficulty, unique=unique, templates=templates, style=style
    )
    return list(islice(stream, n))
