"""A weighted, deterministic mixture of record files and generators: one training set.

Sources are anything shaped like :class:`cotune.config.DataSource` (``path`` or
``generator``, ``weight``, optional fixed ``n``), so a run config's ``data.train`` list can
be passed straight in. The shape is a :class:`Source` protocol rather than an import: the
config sits above data (it checks generator names against data's task registry).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import islice
from typing import Protocol

from cotune.data.generators import iter_generate
from cotune.data.importers import import_file
from cotune.data.records import Record


class Source(Protocol):
    """One ingredient of a mixture: a JSONL file (``path``) or a generator, its weight and
    an optional fixed count."""

    path: str | None
    generator: str | None
    n: int | None
    weight: float


def _counts(sources: Sequence[Source], n: int | None) -> list[int]:
    """How many records each source gives: its own ``n``, else a share of the total ``n``
    by weight (largest remainder, so the counts add up exactly)."""
    fixed = [s.n for s in sources]
    free = [i for i, k in enumerate(fixed) if k is None]
    if free and n is None:
        raise ValueError("give a total n, or an n for every source")
    out = [k or 0 for k in fixed]
    rest = max(0, (n or 0) - sum(out))
    total_w = sum(sources[i].weight for i in free) or 1.0
    shares = [(rest * sources[i].weight / total_w, i) for i in free]
    for share, i in shares:
        out[i] = int(share)
    leftover = rest - sum(out[i] for i in free)
    for _, i in sorted(shares, key=lambda t: (-(t[0] - int(t[0])), t[1]))[:leftover]:
        out[i] += 1
    return out


def mix(
    sources: Sequence[Source],
    n: int | None = None,
    *,
    seed: int = 0,
    difficulty: int | Sequence[int] | None = None,
    kind: str = "jsonl",
    templates: str = "all",
    style: str | None = None,
) -> list[Record]:
    """Records from each source in proportion to its weight, shuffled together.

    Files are sampled without replacement (repeated in shuffled passes only if a source is
    asked for more records than it has); generator ``i`` uses seed ``seed * 1000 + i`` so
    sources never share a stream; ``templates`` is the generators' question-phrasing split
    (:mod:`cotune.data.phrasing`), ``style`` their trace style (:mod:`cotune.data.steps`).
    Same arguments -> same list.
    """
    if not sources:
        raise ValueError("mix needs at least one source")
    rng = random.Random(seed)
    out: list[Record] = []
    for i, (src, k) in enumerate(zip(sources, _counts(sources, n), strict=True)):
        if k == 0:
            continue
        if src.generator is not None:
            stream = iter_generate(
                src.generator,
                seed=seed * 1000 + i,
                difficulty=difficulty,
                unique=True,
                templates=templates,
                **({"style": style} if style else {}),
            )
            out += islice(stream, k)
            continue
        pool = import_file(kind, src.path or "")
        if not pool:
            raise ValueError(f"{src.path}: no records to mix")
        picked: list[Record] = []
        while len(picked) < k:
            batch = pool[:]
            rng.shuffle(batch)
            picked += batch[: k - len(picked)]
        out += picked
    rng.shuffle(out)
    return out
