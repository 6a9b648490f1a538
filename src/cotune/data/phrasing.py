"""Question phrasings and the template split that keeps some of them out of training.

Every task picks its question wording with :func:`phrase` from a tuple of templates.
Templates wrapped in :class:`HeldOut` are reserved for a *template-disjoint* test set:
generation under ``template_split("train")`` never emits them, ``"heldout"`` emits only
them, and ``"all"`` (the default) draws from every template. A model scored on held-out
phrasings therefore sees wordings it was never trained on, which tells reasoning apart
from memorised question shapes.

The split is a context variable rather than a task-function argument so that every task
keeps the ``f(rng, difficulty)`` signature; :func:`cotune.data.generators.iter_generate`
sets it around each task call (never across a ``yield``), so interleaved streams with
different splits cannot leak into each other.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

TEMPLATE_SPLITS = ("train", "heldout", "all")


class HeldOut(str):
    """A question template that is never used for training data (see the module docstring)."""

    __slots__ = ()


_SPLIT: ContextVar[str] = ContextVar("cotune_template_split", default="all")


def check_split(split: str) -> str:
    if split not in TEMPLATE_SPLITS:
        raise ValueError(f"templates must be one of {TEMPLATE_SPLITS}, got {split!r}")
    return split


@contextmanager
def template_split(split: str) -> Iterator[None]:
    """Phrase questions from the ``"train"``, ``"heldout"`` or ``"all"`` templates inside."""
    token = _SPLIT.set(check_split(split))
    try:
        yield
    finally:
        _SPLIT.reset(token)


def current_split() -> str:
    return _SPLIT.get()


def usable(templates: Sequence[str], split: str | None = None) -> list[str]:
    """The templates a split may use, in order."""
    split = check_split(split or _SPLIT.get())
    if split == "all":
        return list(templates)
    want = split == "heldout"
    return [t for t in templates if isinstance(t, HeldOut) == want]


def phrase(rng: random.Random, templates: Sequence[str]) -> str:
    """One template, uniformly from those the current split allows, as a plain ``str``."""
    pool = usable(templates)
    if not pool:
        raise ValueError(f"no {_SPLIT.get()!r} template among {list(templates)!r}")
    return str(rng.choice(pool))


_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def spell(n: int) -> str:
    """A whole number 0-99 in words (``47`` -> ``forty-seven``); reasoning keeps the digits."""
    if not 0 <= n <= 99:
        raise ValueError(f"spell() takes 0-99, got {n}")
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


# Shared vocabulary of the story phrasings (tasks_arith and tasks_words both use it).
NAMES = (
    "Asha", "Ben", "Chen", "Diya", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
    "Kavya", "Leo", "Maya", "Noah", "Omar", "Priya", "Ravi", "Sara", "Tom", "Zoe",
)  # fmt: skip
ITEMS = (
    ("pen", "pens"), ("notebook", "notebooks"), ("apple", "apples"), ("ticket", "tickets"),
    ("book", "books"), ("mango", "mangoes"), ("sticker", "stickers"), ("cup", "cups"),
    ("marker", "markers"), ("orange", "oranges"),
)  # fmt: skip


def a_(noun: str) -> str:
    """``noun`` with its indefinite article: ``a pen``, ``an orange``."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun
