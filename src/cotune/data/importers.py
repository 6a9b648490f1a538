"""Importers: other people's data formats -> canonical records.

Record shapes (the ``kind``):

* ``gsm8k``: ``{"question", "answer"}`` with ``<<48/2=24>>`` calculator notes and ``#### 72``;
  each note becomes a claim :mod:`cotune.verify` checks (:mod:`cotune.data.gsm8k`).
* ``prompt-completion``: ``{"prompt", "completion"}``; the completion is parsed leniently
  with :func:`cotune.format.parse_completion` (tags, plain, ``####``, "the answer is").
* ``messages``: ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``.
* ``columns`` (``csv`` is the same): ``question`` and ``answer`` columns or their common
  aliases, plus optional ``id``, ``task``, ``reasoning``, ``source``, ``difficulty``; without
  a reasoning column, answer-only records for evaluation.
* ``jsonl``: canonical records.

Where the rows come from (by ``path``): JSON lines, a CSV file (``columns`` only), or a
table source read by :mod:`cotune.data.tables`: a ``.parquet`` / ``.arrow`` file, a folder
saved by Hugging Face ``datasets`` (``split`` picks a split), a folder of Parquet files.

Each importer yields ``(line or row, Record | DataError, raw)`` and never raises for bad
content, so :func:`import_file` can either stop at the first error (naming file and line or
row) or collect rejects for a sidecar.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cotune.data import gsm8k, tables
from cotune.data.records import (
    DataError,
    Record,
    Reject,
    check_input_file,
    iter_json_lines,
    iter_jsonl,
    record_from_dict,
)
from cotune.data.tables import TableError
from cotune.format import parse_completion, parse_number

Item = tuple[int, Record | DataError, str]


def _lines(path: Path) -> Iterator[tuple[int, Any, str]]:
    """JSON objects per line (or a DataError for that line)."""
    return iter_json_lines(path)


def _field(obj: Any, key: str, what: str, unit: str = "field") -> str:
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object with {what}, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"missing {unit} '{key}' (expected {what})")
    v = obj[key]
    if not isinstance(v, str):
        got = "null" if v is None else type(v).__name__
        raise DataError(f"{unit} '{key}': expected a string, got {got}")
    return v


def _answer(answer: str | None, where: str) -> str:
    if answer is None or not answer.strip():
        raise DataError(f"{where}: no answer found (expected e.g. <answer>48</answer>, '#### 48')")
    if parse_number(answer) is None:
        raise DataError(f"{where}: expected a numeric answer, got {answer.strip()[:40]!r}")
    return answer.strip()


def _wrap(path: Path, make: Callable[[Any, int], Record]) -> Iterator[Item]:
    for i, obj, raw in _lines(path):
        if isinstance(obj, DataError):
            yield i, obj, raw
            continue
        try:
            yield i, make(obj, i), raw
        except DataError as e:
            yield i, DataError(e.message, str(path), i), raw


def parse_gsm8k_answer(text: str, notes: Counter | None = None) -> tuple[str, str]:
    """GSM8K's answer field -> (reasoning, final answer).

    Each ``<<48/2=24>>`` calculator note becomes a claim :mod:`cotune.verify` checks, and
    run-on chains are split (:mod:`cotune.data.gsm8k`); ``notes`` (if given) counts what
    happened to each note (``note_carried``, ...) and each repair (``repaired_run_on_chain``).
    Claims that stay false are left in the text for :func:`cotune.data.clean` with
    ``check_claims=True`` to drop, counted by reason.
    """
    if "####" not in text:
        raise DataError("field 'answer': expected GSM8K '#### <number>' at the end")
    body, _, final = text.rpartition("####")
    answer = _answer(final, "field 'answer' after ####")
    conv = gsm8k.convert(body)
    checked = gsm8k.check_claims(conv.reasoning)
    if notes is not None:
        notes.update({f"note_{k}": v for k, v in conv.notes.items()})
        notes.update({f"repaired_{k}": v for k, v in checked.repairs.items()})
    return checked.reasoning, answer


# A row maker turns one parsed row (a JSON object, or a table row as a dict) and its default
# id into a Record, raising DataError (without a location) for bad content. ``unit`` is how
# the messages name a key: "field" in JSON, "column" in a table.
RowMaker = Callable[[Any, str], Record]


def _gsm8k_row(notes: Counter | None, unit: str = "field") -> RowMaker:
    what = "'question' and 'answer' strings"

    def make(obj: Any, rid: str) -> Record:
        q = _field(obj, "question", what, unit).strip()
        if not q:
            raise DataError(f"{unit} 'question': expected non-empty text")
        reasoning, answer = parse_gsm8k_answer(_field(obj, "answer", what, unit), notes)
        return Record(rid, "gsm8k", q, reasoning, answer, "gsm8k", None)

    return make


def iter_gsm8k(path: str | Path, notes: Counter | None = None) -> Iterator[Item]:
    p = Path(path)
    make = _gsm8k_row(notes)
    yield from _wrap(p, lambda obj, i: make(obj, f"gsm8k-{p.stem}-{i}"))


def _completion(text: str) -> tuple[str, str]:
    """(reasoning, answer) from a completion in either schema or free text."""
    best = None
    for schema in ("tags", "plain"):
        parsed = parse_completion(text, schema, strict=False)  # type: ignore[arg-type]
        if parsed.answer is not None and (best is None or parsed.well_formed):
            best = parsed
        if parsed.well_formed:
            break
    if best is None:
        _answer(None, "completion")
    assert best is not None
    return (best.reasoning or "").strip(), _answer(best.answer, "completion")


_Q_PREFIX = re.compile(r"(?:^|\n)\s*Question:\s*", re.IGNORECASE)


def _question(prompt: str) -> str:
    """The question from a prompt: the text after the last ``Question:`` if there is one."""
    parts = _Q_PREFIX.split(prompt)
    q = parts[-1] if len(parts) > 1 else prompt
    q = re.sub(r"\n\s*(?:Reasoning|Answer):\s*$", "", q.strip(), flags=re.IGNORECASE)
    if not q.strip():
        raise DataError("prompt: expected a non-empty question")
    return q.strip()


def _prompt_completion_row(source: str, unit: str = "field") -> RowMaker:
    what = "'prompt' and 'completion' strings"

    def make(obj: Any, rid: str) -> Record:
        q = _question(_field(obj, "prompt", what, unit))
        reasoning, answer = _completion(_field(obj, "completion", what, unit))
        return Record(rid, "imported", q, reasoning, answer, source, None)

    return make


def iter_prompt_completion(path: str | Path) -> Iterator[Item]:
    p = Path(path)
    make = _prompt_completion_row(p.stem)
    yield from _wrap(p, lambda obj, i: make(obj, f"{p.stem}-{i}"))


def _messages_row(source: str, unit: str = "field") -> RowMaker:
    def make(obj: Any, rid: str) -> Record:
        what = "a 'messages' list of {role, content}"
        if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
            raise DataError(
                f"expected a JSON object with {what}"
                if unit == "field"
                else "column 'messages': expected a list of {role, content}"
            )
        user = reply = None
        for k, m in enumerate(obj["messages"]):
            role = m.get("role") if isinstance(m, dict) else None
            content = m.get("content") if isinstance(m, dict) else None
            if not isinstance(role, str) or not isinstance(content, str):
                raise DataError(f"messages[{k}]: expected {{'role': str, 'content': str}}")
            if role == "user":
                user, reply = content, None
            elif role in ("assistant", "model") and user is not None:
                reply = content
        if user is None or reply is None:
            raise DataError("messages: expected a 'user' message followed by an 'assistant' reply")
        reasoning, answer = _completion(reply)
        return Record(rid, "imported", _question(user), reasoning, answer, source, None)

    return make


def iter_messages(path: str | Path) -> Iterator[Item]:
    p = Path(path)
    make = _messages_row(p.stem)
    yield from _wrap(p, lambda obj, i: make(obj, f"{p.stem}-{i}"))


_Q_COLS = ("question", "problem", "input", "prompt")
_A_COLS = ("answer", "target", "output", "solution")
# Columns that map onto record fields of the same name; any other column is named in a
# warning, since a record has no place to keep it.
_FIELD_COLS = ("id", "task", "reasoning", "source", "difficulty")


def _difficulty_cell(text: str) -> int | None:
    if not text:
        return None
    if text.isdigit() and 1 <= int(text) <= 3:
        return int(text)
    raise DataError(f"column 'difficulty': expected an integer 1-3 or empty, got {text[:20]!r}")


def iter_csv(path: str | Path, warnings: list[str] | None = None) -> Iterator[Item]:
    """Answer-only records from a CSV with a header (question/answer or common aliases).

    ``id``, ``task``, ``reasoning``, ``source`` and ``difficulty`` columns fill those record
    fields (an empty cell keeps the default). Other columns cannot be kept; they are named
    in ``warnings`` (if given) so they are never dropped unnoticed. Ids must be unique.
    """
    p = Path(path)
    check_input_file(p)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        yield line, DataError(f"not UTF-8 text (byte {e.start})", str(p), line), ""
        return
    reader = csv.reader(io.StringIO(text.replace("\0", ""), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            yield (
                1,
                DataError(
                    "empty file; expected a header with 'question' and 'answer' columns", str(p), 1
                ),
                "",
            )
            return
        cols = [h.strip().casefold() for h in header]
        qi = next((cols.index(c) for c in _Q_COLS if c in cols), None)
        ai = next((cols.index(c) for c in _A_COLS if c in cols), None)
        if qi is None or ai is None:
            msg = f"expected a header with 'question' and 'answer' columns, got {header[:6]}"
            yield 1, DataError(msg, str(p), 1), ",".join(header)
            return
        fields = {c: cols.index(c) for c in _FIELD_COLS if c in cols}
        used = {qi, ai, *fields.values()}
        unused = [header[k].strip() or f"#{k + 1}" for k in range(len(header)) if k not in used]
        if unused and warnings is not None:
            warnings.append(
                f"{p}: column(s) {', '.join(repr(c) for c in unused)} not imported "
                "(records keep only id, task, question, reasoning, answer, source, difficulty)"
            )
        seen: dict[str, int] = {}
        start = reader.line_num + 1
        for row in reader:
            i, raw = start, ",".join(row)
            start = reader.line_num + 1
            if not any(c.strip() for c in row):
                continue
            if len(row) <= max(qi, ai):
                yield (
                    i,
                    DataError(f"expected {len(header)} columns, got {len(row)}", str(p), i),
                    raw,
                )
                continue
            cell = {c: (row[k].strip() if k < len(row) else "") for c, k in fields.items()}
            q, a = row[qi].strip(), row[ai].strip()
            try:
                if not q:
                    raise DataError("column 'question': expected non-empty text")
                answer = _answer(a, "column 'answer'")
                difficulty = _difficulty_cell(cell.get("difficulty", ""))
                rid = cell.get("id") or f"{p.stem}-{i}"
                if rid in seen:
                    raise DataError(
                        f"column 'id': duplicate id {rid!r} (first on line {seen[rid]}); "
                        "expected unique ids"
                    )
            except DataError as e:
                yield i, DataError(e.message, str(p), i), raw
                continue
            seen[rid] = i
            rec = Record(
                rid,
                cell.get("task") or "imported",
                q,
                cell.get("reasoning", ""),
                answer,
                cell.get("source") or p.stem,
                difficulty,
            )
            yield i, rec, raw
    except csv.Error as e:
        yield reader.line_num, DataError(f"malformed CSV ({e})", str(p), reader.line_num), ""


def _cell_text(row: dict, col: str | None, *, numeric: bool = False) -> str:
    """A table cell as text: strings as they are, null as "", numbers when ``numeric``."""
    if col is None:
        return ""
    v = row.get(col)
    if v is None:
        return ""
    if isinstance(v, str):
        return v.strip()
    if numeric and isinstance(v, int | float) and not isinstance(v, bool):
        try:
            return record_from_dict({"question": "q", "reasoning": "", "answer": v}).answer
        except DataError as e:
            raise DataError(f"column '{col}': {e.message.split(': ', 1)[-1]}") from None
    want = "text or a number" if numeric else "text"
    raise DataError(f"column '{col}': expected {want}, got {type(v).__name__}")


def _columns_row(cols: list[str], where: Path, source: str, warnings: list[str] | None):
    """The row maker for generic question/answer(/reasoning, ...) columns of a table, with
    the same column names and aliases as a CSV header. Column problems are found once, from
    the names, before any row is read."""
    folded = {c.strip().casefold(): c for c in reversed(cols)}
    qc = next((folded[c] for c in _Q_COLS if c in folded), None)
    ac = next((folded[c] for c in _A_COLS if c in folded), None)
    if qc is None or ac is None:
        raise TableError(
            f"expected a 'question' ({'/'.join(_Q_COLS[1:])}) and an 'answer' "
            f"({'/'.join(_A_COLS[1:])}) column, got {cols[:8]}",
            where,
        )
    fields = {c: folded[c] for c in _FIELD_COLS if c in folded}
    used = {qc, ac, *fields.values()}
    unused = [c for c in cols if c not in used]
    if unused and warnings is not None:
        warnings.append(
            f"{where}: column(s) {', '.join(repr(c) for c in unused)} not imported "
            "(records keep only id, task, question, reasoning, answer, source, difficulty)"
        )
    seen: dict[str, int] = {}
    rows = [0]  # rows seen so far, across the data set's files

    def make(row: dict, rid: str) -> Record:
        rows[0] += 1
        q = _cell_text(row, qc)
        if not q:
            raise DataError(f"column '{qc}': expected non-empty text")
        a = _cell_text(row, ac, numeric=True)
        if "####" in a and parse_number(a) is None:
            raise DataError(
                f"column '{ac}': a GSM8K-style solution ('... #### 72'); import it as kind gsm8k"
            )
        answer = _answer(a, f"column '{ac}'")
        d = _cell_text(row, fields.get("difficulty"), numeric=True)
        difficulty = _difficulty_cell(d)
        rid = _cell_text(row, fields.get("id"), numeric=True) or rid
        if rid in seen:
            raise DataError(
                f"column 'id': duplicate id {rid!r} (first in the data set's row {seen[rid]}); "
                "expected unique ids"
            )
        seen[rid] = rows[0]
        return Record(
            rid,
            _cell_text(row, fields.get("task")) or "imported",
            q,
            _cell_text(row, fields.get("reasoning")),
            answer,
            _cell_text(row, fields.get("source")) or source,
            difficulty,
        )

    return make


def _canonical_row(source: str) -> RowMaker:
    return lambda row, rid: record_from_dict(row, default_id=rid, default_source=source)


def iter_table(
    kind: str,
    path: str | Path,
    *,
    split: str | None = None,
    notes: Counter | None = None,
    warnings: list[str] | None = None,
) -> Iterator[Item]:
    """Records of ``kind`` from a Parquet / Arrow file or a ``datasets`` folder
    (:mod:`cotune.data.tables`). Yields ``(row in its file, Record | TableError, raw)``;
    a bad row's error names its file, row and column. Ids count rows across all files."""
    p = Path(path)
    name = p.stem if p.is_file() else p.name + (f"-{split}" if split else "")
    if kind in ("columns", "csv"):
        make = _columns_row(tables.columns(p, split), p, name, warnings)
    else:
        make = {
            "gsm8k": lambda: _gsm8k_row(notes, "column"),
            "prompt-completion": lambda: _prompt_completion_row(name, "column"),
            "messages": lambda: _messages_row(name, "column"),
            "jsonl": lambda: _canonical_row(name),
        }[kind]()
    prefix = "gsm8k-" if kind == "gsm8k" else ""
    for n, (file, row, obj) in enumerate(tables.iter_rows(p, split), 1):
        try:
            yield row, make(obj, f"{prefix}{name}-{n}"), tables.raw_text(obj)
        except DataError as e:
            msg = e.message.replace("field '", "column '")
            yield row, TableError(msg, file, row), tables.raw_text(obj)


IMPORTERS: dict[str, Callable[[str | Path], Iterator[Item]]] = {
    "gsm8k": iter_gsm8k,
    "prompt-completion": iter_prompt_completion,
    "messages": iter_messages,
    "columns": iter_csv,
    "csv": iter_csv,
    "jsonl": iter_jsonl,
}


def import_file(
    kind: str,
    path: str | Path,
    *,
    skip_invalid: bool = False,
    rejects: list[Reject] | None = None,
    warnings: list[str] | None = None,
    split: str | None = None,
    notes: Counter | None = None,
) -> list[Record]:
    """Read ``path`` as ``kind`` (one of :data:`IMPORTERS`). Strict by default: raises
    DataError (``file:line: ...``, ``file: row N: ...``) at the first bad line or row; with
    ``skip_invalid`` they go to ``rejects`` instead. Input that is read but not kept (extra
    columns) is described in ``warnings``; ``notes`` counts what an importer changed (GSM8K:
    each calculator note's conversion and each repair).

    ``path`` is JSON lines, a CSV file (``columns``/``csv``), or a table source: a
    ``.parquet`` / ``.arrow`` file or a folder (``datasets`` ``save_to_disk``, Parquet files),
    where ``split`` picks a split (:mod:`cotune.data.tables`).
    """
    kind = kind.replace("_", "-")
    if kind not in IMPORTERS:
        raise DataError(f"unknown import kind {kind!r}; expected one of {', '.join(IMPORTERS)}")
    p = Path(path)
    if tables.is_table_source(p):
        items = iter_table(kind, p, split=split, notes=notes, warnings=warnings)
    elif split is not None:
        raise DataError(f"--split {split!r} applies to a datasets folder, not to a file", str(p))
    elif kind in ("columns", "csv"):
        items = iter_csv(p, warnings)
    elif p.suffix.lower() == ".csv":
        raise DataError(
            f"kind {kind} reads JSON lines, Parquet or a datasets folder, not CSV "
            "(a CSV with question/answer columns is kind columns)",
            str(p),
        )
    elif kind == "gsm8k":
        items = iter_gsm8k(p, notes)
    else:
        items = IMPORTERS[kind](p)
    out: list[Record] = []
    for i, item, raw in items:
        if isinstance(item, Record):
            out.append(item)
        elif not skip_invalid:
            raise item
        elif rejects is not None:
            rejects.append(
                Reject(
                    "invalid_line",
                    item.message,
                    item.file or str(path),
                    item.line or i,
                    raw.rstrip("\n")[:2000],
                )
            )
    return out
