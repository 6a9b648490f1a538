"""What an SFT run trains on: records from the config, tokenized, laid out in fixed-shape
steps (:mod:`cotune.train.batches`). ``cotune train --dry-run`` stops here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cotune.config import RunConfig
from cotune.data import generate, read_jsonl
from cotune.train.batches import Example, Plan, TokenizeStats, as_dict, make_plan, tokenize_records
from cotune.train.errors import TrainError

Record = dict[str, Any]


def _read(path: str | Path) -> list[Record]:
    return [r.to_dict() for r in read_jsonl(Path(path))]


def load_records(cfg: RunConfig) -> tuple[list[Record], list[Record]]:
    """Training and validation records from ``cfg.data`` (files and/or generators).

    Without ``data.val``, a ``val_fraction`` of the training records (seeded) is held out.
    """
    train: list[Record] = []
    for k, src in enumerate(cfg.data.train):
        if src.path is not None:
            recs = _read(src.path)[: src.n]
        else:
            recs = [
                as_dict(r)
                for r in generate(
                    tasks=[src.generator],
                    n=src.n or 1000,
                    seed=cfg.data.seed + k,
                    difficulty=cfg.data.difficulty,
                    style=cfg.data.style,
                )
            ]
        train.extend(recs)
    if cfg.data.val is not None:
        return train, _read(cfg.data.val)
    rng = np.random.default_rng(cfg.data.seed)
    idx = rng.permutation(len(train))
    n_val = int(round(len(train) * cfg.data.val_fraction))
    return [train[i] for i in sorted(idx[n_val:])], [train[i] for i in idx[:n_val]]


def tokenize(
    cfg: RunConfig, tokenizer: Any, records: Sequence[Record]
) -> tuple[list[Example], TokenizeStats]:
    f = cfg.format
    return tokenize_records(
        records,
        tokenizer,
        schema=f.schema_,
        template=f.template,
        max_seq_len=f.max_seq_len,
        max_reasoning_tokens=f.max_reasoning_tokens,
        overlong=f.overlong,
        mask_values=cfg.train.mask_values,
    )


def plan_for(cfg: RunConfig, examples: Sequence[Example]) -> Plan:
    return make_plan(
        examples,
        row_len=cfg.format.max_seq_len,
        rows_per_micro=cfg.train.batch_size,
        micro_batches=cfg.optim.grad_accum,
        pack=cfg.format.pack,
        steps=cfg.train.steps,
        epochs=cfg.train.epochs,
        seed=cfg.train.seed,
        bucket_multiple=cfg.train.bucket_multiple,
    )


@dataclass
class DryRun:
    stats: TokenizeStats
    plan: Plan
    examples: list[Example]


def dry_run(cfg: RunConfig, tokenizer: Any, train_records: Sequence[Record]) -> DryRun:
    """Tokenize and plan without any model compute; a TrainError when nothing is left."""
    examples, stats = tokenize(cfg, tokenizer, train_records)
    if not examples:
        raise TrainError(
            "no training data: 0 records; expected at least one record from data.train"
            if not stats.n_records
            else f"all {stats.n_records} training examples are longer than format.max_seq_len="
            f"{cfg.format.max_seq_len}; raise it or set format.overlong=truncate_reasoning"
        )
    return DryRun(stats, plan_for(cfg, examples), examples)
