"""Reading what evaluation is given: gold records and predictions made elsewhere.

Evaluation must accept more than cotune's own canonical records (``{id, task, question,
reasoning, answer, source, difficulty}``): an answer-only benchmark file with just
``id, question, answer`` (JSONL or CSV) is the common case when scoring a model someone
else trained. This loader is deliberately small and lenient about optional fields but
strict about the two that scoring needs (question, answer), and every error names the
file, the line and what was expected, so a user never sees a traceback for bad input.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotune.data.records import DataError, check_input_file, iter_json_lines


class EvalInputError(ValueError):
    """Bad evaluation input (data or predictions file); the message is for users."""


@dataclass(frozen=True)
class EvalRecord:
    """One gold example. ``reasoning`` is empty for answer-only data."""

    id: str
    question: str
    answer: str
    task: str = "unknown"
    difficulty: int | str | None = None
    reasoning: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "question": self.question,
            "reasoning": self.reasoning,
            "answer": self.answer,
            "source": self.source,
            "difficulty": self.difficulty,
        }


@dataclass
class Predictions:
    """Completions per record id, in file order, plus whether each hit the token limit."""

    completions: dict[str, list[str]] = field(default_factory=dict)
    truncated: dict[str, list[bool | None]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # first line each id appeared on


def _as_text(value: Any, *, where: str, key: str, required: bool) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise EvalInputError(f"{where}: key {key!r} is missing or empty; expected text")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise EvalInputError(
            f"{where}: key {key!r} is a {type(value).__name__}; expected text or a number"
        )
    return value if isinstance(value, str) else json.dumps(value)


def _difficulty(value: Any, where: str) -> int | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise EvalInputError(f"{where}: key 'difficulty' is a bool; expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    raise EvalInputError(
        f"{where}: key 'difficulty' is a {type(value).__name__}; expected an integer or a label"
    )


def record_from_mapping(obj: Any, where: str, default_id: str) -> EvalRecord:
    """Validate one record (canonical or answer-only). ``where`` is ``file:line``."""
    if not isinstance(obj, dict):
        raise EvalInputError(
            f"{where}: expected a JSON object with keys question and answer, "
            f"got {type(obj).__name__}"
        )
    rid = _as_text(obj.get("id"), where=where, key="id", required=False) or default_id
    return EvalRecord(
        id=rid,
        question=_as_text(obj.get("question"), where=where, key="question", required=True),
        answer=_as_text(obj.get("answer"), where=where, key="answer", required=True).strip(),
        task=_as_text(obj.get("task"), where=where, key="task", required=False) or "unknown",
        difficulty=_difficulty(obj.get("difficulty"), where),
        reasoning=_as_text(obj.get("reasoning"), where=where, key="reasoning", required=False),
        source=_as_text(obj.get("source"), where=where, key="source", required=False),
    )


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """``(line, value)`` per non-blank line through cotune's one JSONL reader
    (:func:`cotune.data.records.iter_json_lines`); the first bad line stops with file:line."""
    out = []
    for lineno, obj, _ in iter_json_lines(path):
        if isinstance(obj, DataError):
            raise EvalInputError(str(obj)) from None
        out.append((lineno, obj))
    return out


def _read_csv(path: Path) -> list[tuple[int, Any]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # skip a BOM
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise EvalInputError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    try:
        return _read_csv_text(path, text)
    except csv.Error as e:
        raise EvalInputError(f"{path}: malformed CSV ({e})") from None


def _read_csv_text(path: Path, text: str) -> list[tuple[int, Any]]:
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise EvalInputError(f"{path}:1: empty CSV; expected a header with question,answer")
        missing = {"question", "answer"} - {h.strip() for h in reader.fieldnames}
        if missing:
            raise EvalInputError(
                f"{path}:1: CSV header {reader.fieldnames} lacks {sorted(missing)}; "
                "expected at least question,answer (and optionally id,task,difficulty)"
            )
        out = []
        for row in reader:
            if None in row:  # more cells than header columns
                raise EvalInputError(
                    f"{path}:{reader.line_num}: {len(reader.fieldnames) + len(row[None])} "
                    f"cells; expected {len(reader.fieldnames)} (the header's columns)"
                )
            out.append((reader.line_num, {k.strip(): v for k, v in row.items()}))
        return out


def _rows(path: Path) -> list[tuple[int, Any]]:
    try:
        check_input_file(path)
    except DataError as e:
        raise EvalInputError(str(e)) from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path)
    raise EvalInputError(f"{path}: unknown extension {suffix!r}; expected .jsonl or .csv")


def load_records(path: str | Path, limit: int | None = None) -> list[EvalRecord]:
    """Gold records from JSONL or CSV; ``limit`` keeps the first N. Ids must be unique."""
    path = Path(path)
    records: list[EvalRecord] = []
    seen: dict[str, int] = {}
    for lineno, obj in _rows(path):
        where = f"{path}:{lineno}"
        rec = record_from_mapping(obj, where, default_id=f"line-{lineno}")
        if rec.id in seen:
            raise EvalInputError(
                f"{where}: duplicate id {rec.id!r} (first on line {seen[rec.id]}); "
                "expected unique ids"
            )
        seen[rec.id] = lineno
        records.append(rec)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise EvalInputError(f"{path}: no records; expected lines with question and answer")
    return records


def load_predictions(path: str | Path) -> Predictions:
    """Completions from JSONL: ``{"id", "completion"}`` per line (repeat an id for several
    samples) or ``{"id", "completions": [...]}``. An optional ``truncated`` flag (or
    ``finish_reason: "length"``) says the generator hit its token limit.
    """
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        raise EvalInputError(f"{path}: predictions must be JSONL; expected a .jsonl file")
    preds = Predictions()
    for lineno, obj in _rows(path):
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            raise EvalInputError(f"{where}: expected a JSON object with id and completion")
        rid = _as_text(obj.get("id"), where=where, key="id", required=True)
        if "completions" in obj:
            comps = obj["completions"]
            if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
                raise EvalInputError(f"{where}: key 'completions' must be a list of strings")
        elif "completion" in obj:
            if not isinstance(obj["completion"], str):
                raise EvalInputError(
                    f"{where}: key 'completion' is a {type(obj['completion']).__name__}; "
                    "expected a string (may be empty)"
                )
            comps = [obj["completion"]]
        else:
            raise EvalInputError(f"{where}: no 'completion' (or 'completions') key")
        flag = obj.get("truncated")
        if flag is None and "finish_reason" in obj:
            flag = obj["finish_reason"] == "length"
        if flag is not None and not isinstance(flag, bool):
            raise EvalInputError(f"{where}: key 'truncated' must be true or false")
        preds.completions.setdefault(rid, []).extend(comps)
        preds.truncated.setdefault(rid, []).extend([flag] * len(comps))
        preds.lines.setdefault(rid, lineno)
    if not preds.completions:
        raise EvalInputError(f"{path}: no predictions; expected lines with id and completion")
    return preds
