"""Reasoning-aware evaluation: format, answers, arithmetic steps, self-consistency, reports.

All judgements go through :mod:`cotune.format` and :mod:`cotune.verify`; see
:mod:`cotune.eval.metrics` for the exact definitions of every number.
"""

from __future__ import annotations

from cotune.eval.compare import Comparison, compare
from cotune.eval.inputs import EvalInputError, EvalRecord, load_predictions, load_records
from cotune.eval.metrics import (
    ExampleRow,
    SampleScore,
    aggregate,
    majority_vote,
    score_completion,
    score_example,
    wilson_interval,
)
from cotune.eval.report import Report, load_report, write_report
from cotune.eval.run import BUILTIN_SHOTS, choose_few_shot, evaluate

__all__ = [
    "BUILTIN_SHOTS",
    "Comparison",
    "EvalInputError",
    "EvalRecord",
    "ExampleRow",
    "Report",
    "SampleScore",
    "aggregate",
    "choose_few_shot",
    "compare",
    "evaluate",
    "load_predictions",
    "load_records",
    "load_report",
    "majority_vote",
    "score_completion",
    "score_example",
    "wilson_interval",
    "write_report",
]
