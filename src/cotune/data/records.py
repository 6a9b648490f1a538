"""The canonical record and its JSONL files.

Every data source (generators, GSM8K, prompt/completion files, chat logs, CSV) becomes the
same seven-field record, so training, evaluation and RL never care where data came from::

    {"id": "add/0/17", "task": "add", "question": "What is 47 + 38?",
     "reasoning": "47 + 38: 40 + 30 = 70, 7 + 8 = 15, 70 + 15 = 85.", "answer": "85",
     "source": "generated", "difficulty": 1}

Reading is strict by default: the first bad line stops with ``file:line: what was expected``.
With ``skip_invalid`` the bad lines are collected as :class:`Reject` instead, so the caller
can write them to a ``<out>.rejects.jsonl`` sidecar; nothing disappears silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cotune.format import format_number, parse_number
from cotune.outputs import atomic_open

FIELDS: tuple[str, ...] = ("id", "task", "question", "reasoning", "answer", "source", "difficulty")
REQUIRED: tuple[str, ...] = ("question", "reasoning", "answer")


class DataError(ValueError):
    """Bad input data, phrased for the user: ``file:line: what was expected``."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        self.file, self.line, self.message = file, line, message
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(where + message)


@dataclass(frozen=True, slots=True)
class Record:
    """One reasoning example. ``reasoning`` may be empty only for answer-only eval sets."""

    id: str
    task: str
    question: str
    reasoning: str
    answer: str
    source: str
    difficulty: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        """``r["question"]`` works too, for code written against the JSONL dicts."""
        if key not in FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in FIELDS else default


@dataclass(frozen=True)
class Reject:
    """An input that did not become a record, and why (one line of a rejects sidecar)."""

    reason: str
    detail: str
    file: str | None = None
    line: int | None = None
    raw: Any = None
    index: int | None = None  # position in the input sequence (for rejects found by clean)

    def to_dict(self) -> dict[str, Any]:
        d = {"reason": self.reason, "detail": self.detail, "file": self.file, "line": self.line}
        if self.index is not None:
            d["index"] = self.index
        raw = self.raw
        if isinstance(raw, Record):
            raw = raw.to_dict()
        elif isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        d["raw"] = raw
        return d


def _text(d: dict[str, Any], key: str, default: str | None = None, *, numeric: bool = False) -> str:
    if key not in d:
        if default is None:
            raise DataError(f"missing field '{key}' (expected a string)")
        return default
    v = d[key]
    if isinstance(v, str):
        return v
    if numeric and isinstance(v, int | float) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v):
            raise DataError(f"field '{key}': expected a finite number or a string, got {v}")
        return format_number(parse_number(repr(v)) or 0) if isinstance(v, float) else str(v)
    raise DataError(f"field '{key}': expected a string, got {type(v).__name__}")


def record_from_dict(d: Any, *, default_id: str = "", default_source: str = "") -> Record:
    """Validate one parsed JSON object into a Record; raises DataError without a location."""
    if not isinstance(d, dict):
        raise DataError(
            f"expected a JSON object with fields {', '.join(FIELDS)}, got {type(d).__name__}"
        )
    question = _text(d, "question")
    reasoning = _text(d, "reasoning")
    answer = _text(d, "answer", numeric=True)
    if not question.strip():
        raise DataError("field 'question': expected non-empty text")
    if not answer.strip():
        raise DataError("field 'answer': expected a non-empty answer")
    if parse_number(answer) is None:
        raise DataError(
            f"field 'answer': expected a number (e.g. 48, -3, 2.5, 3/4), got {answer[:40]!r}"
        )
    diff = d.get("difficulty")
    if diff is not None and (
        isinstance(diff, bool) or not isinstance(diff, int) or not 1 <= diff <= 3
    ):
        raise DataError(f"field 'difficulty': expected an integer 1-3 or null, got {diff!r}")
    rid = d.get("id", default_id)
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str):
        raise DataError(f"field 'id': expected a string, got {type(rid).__name__}")
    task = _text(d, "task", "unknown")
    source = _text(d, "source", default_source)
    return Record(rid or default_id, task, question, reasoning, answer, source, diff)


def check_input_file(path: Path) -> None:
    """DataError unless ``path`` is a file that can be read (a folder is named as such)."""
    if path.is_dir():
        raise DataError("is a directory, expected a file", str(path))
    if not path.is_file():
        raise DataError("file not found", str(path))


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any, str]]:
    """Yield ``(line_number, JSON value or DataError, raw line)`` for each non-blank line.

    The one place that turns a JSONL file into values: undecodable bytes, malformed JSON,
    lone surrogates, huge integers and deep nesting become a DataError for that line (the
    line is cut to 2,000 characters then). A UTF-8 byte order mark (Windows editors write
    one) is skipped. Raises only for a missing file or a folder."""
    p = Path(path)
    check_input_file(p)
    with p.open("rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if i == 1 else "utf-8")
            except UnicodeDecodeError as e:
                err = DataError(f"not UTF-8 text (byte {e.start})", str(p), i)
                yield i, err, raw.decode("utf-8", "replace")[:2000]
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if "\\u" in line:  # a lone surrogate would only fail later, when written
                    json.dumps(obj, ensure_ascii=False).encode("utf-8")
            except (ValueError, RecursionError) as e:  # ValueError: also >4300-digit ints
                msg = getattr(e, "msg", None) or {
                    RecursionError: "nested too deeply",
                    UnicodeEncodeError: "lone surrogate \\u escape",
                }.get(type(e), "number too long")
                err = DataError(
                    f"malformed JSON ({msg}); expected one JSON object per line", str(p), i
                )
                yield i, err, line[:2000]
                continue
            yield i, obj, line


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Record | DataError, str]]:
    """Yield ``(line_number, Record or DataError, raw line)`` for each non-blank line.
    Never raises for bad content (only for a missing file, as DataError)."""
    p = Path(path)
    for i, obj, line in iter_json_lines(p):
        if isinstance(obj, DataError):
            yield i, obj, line
            continue
        try:
            rec = record_from_dict(obj, default_id=f"{p.stem}-{i}", default_source=p.stem)
        except DataError as e:
            yield i, DataError(e.message, str(p), i), line[:2000]
        else:
            yield i, rec, line


def read_jsonl(
    path: str | Path, *, skip_invalid: bool = False, rejects: list[Reject] | None = None
) -> list[Record]:
    """Read canonical records. Strict: raise DataError at the first bad line. With
    ``skip_invalid``, bad lines are appended to ``rejects`` (if given) and skipped."""
    out: list[Record] = []
    for i, item, raw in iter_jsonl(path):
        if isinstance(item, Record):
            out.append(item)
        elif not skip_invalid:
            raise item
        elif rejects is not None:
            rejects.append(Reject("invalid_line", item.message, str(path), i, raw.rstrip("\n")))
    return out


def jsonl_line(r: Record) -> str:
    """One record as a JSONL line (UTF-8 text, not ASCII-escaped)."""
    return json.dumps(r.to_dict(), ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, records: list[Record] | Iterator[Record]) -> int:
    """Write records, one JSON object per line, atomically (an interrupted write leaves
    the previous file). Returns the count."""
    n = 0
    with atomic_open(path) as f:
        for r in records:
            f.write(jsonl_line(r))
            n += 1
    return n


def rejects_path(out: str | Path) -> Path:
    """The sidecar next to an output file: ``train.jsonl`` -> ``train.jsonl.rejects.jsonl``."""
    return Path(f"{out}.rejects.jsonl")


def write_rejects(out: str | Path, rejects: list[Reject]) -> Path:
    """Write the rejects sidecar for ``out`` (always, even if empty, so runs are comparable)."""
    p = rejects_path(out)
    with atomic_open(p) as f:
        for r in rejects:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False, default=str) + "\n")
    return p
