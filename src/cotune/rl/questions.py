"""RL's questions: read from JSONL or generated, split into training and held-out sets, and
turned into prompts.

RL needs only a question and a gold answer per record (rewards score the model's own
reasoning), so its files are read with :func:`cotune.data.records.iter_json_lines` and
checked for those two fields, not for a full canonical record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotune import format as fmt
from cotune.config import ConfigError, RunConfig
from cotune.data import generate
from cotune.data.records import DataError, iter_json_lines
from cotune.model import Model


@dataclass
class Example:
    """One RL question: its prompt ids and the batch fields rewards receive."""

    prompt_ids: list[int]
    fields: dict[str, Any]


def read_questions(path: str | Path) -> list[dict[str, Any]]:
    """Records with a non-empty ``question`` and an ``answer``; the first bad line raises a
    :class:`~cotune.data.records.DataError` naming ``file:line``."""
    out = []
    for i, obj, _ in iter_json_lines(path):
        if isinstance(obj, DataError):
            raise obj
        if not isinstance(obj, dict) or "question" not in obj or "answer" not in obj:
            raise DataError("expected a record with 'question' and 'answer'", str(path), i)
        if not isinstance(obj["question"], str) or not obj["question"].strip():
            raise DataError("field 'question': expected non-empty text", str(path), i)
        out.append(obj)
    return out


def _generated(tasks: list[str], n: int, seed: int) -> list[dict[str, Any]]:
    return [r.to_dict() for r in generate(tasks=tasks, n=n, seed=seed)]


def load_rl_records(cfg: RunConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and held-out questions: JSONL sources as given, generators via cotune.data.

    Held-out questions come from ``data.val`` or from the generators with another seed;
    any held-out question that also appears in training is dropped.
    """
    rl = cfg.rl
    train: list[dict[str, Any]] = []
    tasks = list(rl.tasks or [])
    for src in cfg.data.train:
        if src.path:
            train.extend(read_questions(src.path))
        elif rl.tasks is None and src.generator:
            tasks.append(src.generator)
    if tasks:
        train.extend(_generated(tasks, rl.train_size, cfg.data.seed))
    if not train:
        raise ConfigError("rl: no training questions (data.train and rl.tasks are both empty)")
    if cfg.data.val:
        held = read_questions(cfg.data.val)
    elif tasks:
        held = _generated(tasks, rl.eval_size * 2, cfg.data.seed + 10_007)
    else:
        held = train[-rl.eval_size :]
        train = train[: -rl.eval_size] or train
    seen = {r["question"] for r in train}
    held = [r for r in held if r["question"] not in seen][: rl.eval_size]
    return train, held


def make_examples(records: Sequence[dict], model: Model, cfg: RunConfig) -> list[Example]:
    """Canonical records -> prompts in the run's template/schema (+ answer, question fields)."""
    out = []
    for r in records:
        seg = fmt.prompt_segments(
            r["question"], template=cfg.format.template, schema=cfg.format.schema_
        )
        fields = {"answer": str(r.get("answer", "")), "question": r["question"]}
        fields.update({k: v for k, v in r.items() if k not in ("question", "answer", "reasoning")})
        out.append(Example(model.tokenizer.encode_segments(seg), fields))
    return out
