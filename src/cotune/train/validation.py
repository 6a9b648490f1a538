"""Validation during SFT: greedy answer accuracy on held-out questions, and the ``best/``
checkpoint it picks.

Loss says how well the model imitates the traces; what a run is for is right answers, so
the best checkpoint is the one with the highest strict answer accuracy, decoded exactly as
``cotune eval`` decodes (:mod:`cotune.generate`, the run's template, schema and calculator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cotune.config import RunConfig
from cotune.format import answers_match, parse_completion
from cotune.generate import generate
from cotune.train.checkpoint import RunCheckpoints
from cotune.train.metrics import MetricsLogger

Record = dict[str, Any]
ValFn = Callable[[Any, Sequence[Record]], dict[str, float]]


def answer_accuracy(model: Any, records: Sequence[Record], cfg: RunConfig) -> dict[str, float]:
    """Share of validation questions answered correctly (strict parse, greedy decoding)."""
    if not records:
        return {}
    texts = generate(
        model,
        [r["question"] for r in records],
        max_new_tokens=cfg.eval.max_new_tokens,
        template=cfg.format.template,
        schema=cfg.format.schema_,
        temperature=0.0,
        calculator=cfg.eval.calculator,
    )
    ok = well = 0
    for rec, text in zip(records, texts, strict=True):
        p = parse_completion(text, cfg.format.schema_, strict=True)
        well += int(p.well_formed)
        ok += int(answers_match(p.answer, rec["answer"]))
    return {"val_accuracy": ok / len(records), "val_well_formed": well / len(records)}


@dataclass
class Best:
    """The best validation accuracy so far and its step; a better one is saved to ``best/``."""

    accuracy: float | None = None
    step: int | None = None

    def update(
        self,
        metrics: dict[str, float],
        step: int,
        trainable: Any,
        ckpts: RunCheckpoints,
        logger: MetricsLogger,
    ) -> None:
        if not metrics or "val_accuracy" not in metrics:
            return
        logger.log(step, **metrics)
        acc = float(metrics["val_accuracy"])
        if self.accuracy is None or acc > self.accuracy:
            ckpts.save_best(step, trainable, {"step": step, **metrics})
            self.accuracy, self.step = acc, step
