"""Importers: other people's data formats -> canonical records.

* ``gsm8k``: ``{"question", "answer"}`` with ``<<48/2=24>>`` calculator notes and ``#### 72``.
* ``prompt-completion``: ``{"prompt", "completion"}``; the completion is parsed leniently
  with :func:`cotune.format.parse_completion` (tags, plain, ``####``, "the answer is").
* ``messages``: ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``.
* ``csv``: a header with ``question`` and ``answer`` columns (plus optional ``id``, ``task``,
  ``reasoning``, ``source``, ``difficulty``); answer-only records (empty reasoning) for
  evaluation.
* ``jsonl``: canonical records.

Each importer yields ``(line, Record | DataError, raw)`` and never raises for bad content,
so :func:`import_file` can either stop at the first error (naming file and line) or
collect rejects for a sidecar.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cotune.data import gsm8k
from cotune.data.records import (
    DataError,
    Record,
    Reject,
    check_input_file,
    iter_json_lines,
    iter_jsonl,
)
from cotune.format import parse_completion, parse_number

Item = tuple[int, Record | DataError, str]


def _lines(path: Path) -> Iterator[tuple[int, Any, str]]:
    """JSON objects per line (or a DataError for that line)."""
    return iter_json_lines(path)


def _field(obj: Any, key: str, what: str) -> str:
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object with {what}, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"missing field '{key}' (expected {what})")
    v = obj[key]
    if not isinstance(v, str):
        raise DataError(f"field '{key}': expected a string, got {type(v).__name__}")
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


def _gsm8k_record(obj: Any, rid: str, notes: Counter | None) -> Record:
    """One GSM8K row (``question``, ``answer`` with ``####``) -> a record."""
    q = _field(obj, "question", "'question' and 'answer' strings").strip()
    if not q:
        raise DataError("field 'question': expected non-empty text")
    reasoning, answer = parse_gsm8k_answer(
        _field(obj, "answer", "'question' and 'answer' strings"), notes
    )
    return Record(rid, "gsm8k", q, reasoning, answer, "gsm8k", None)


def iter_gsm8k(path: str | Path, notes: Counter | None = None) -> Iterator[Item]:
    p = Path(path)
    yield from _wrap(p, lambda obj, i: _gsm8k_record(obj, f"gsm8k-{p.stem}-{i}", notes))


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


def iter_prompt_completion(path: str | Path) -> Iterator[Item]:
    p = Path(path)

    def make(obj: Any, i: int) -> Record:
        what = "'prompt' and 'completion' strings"
        q = _question(_field(obj, "prompt", what))
        reasoning, answer = _completion(_field(obj, "completion", what))
        return Record(f"{p.stem}-{i}", "imported", q, reasoning, answer, p.stem, None)

    yield from _wrap(p, make)


def iter_messages(path: str | Path) -> Iterator[Item]:
    p = Path(path)

    def make(obj: Any, i: int) -> Record:
        what = "a 'messages' list of {role, content}"
        if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
            raise DataError(f"expected a JSON object with {what}")
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
        return Record(f"{p.stem}-{i}", "imported", _question(user), reasoning, answer, p.stem, None)

    yield from _wrap(p, make)


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


IMPORTERS: dict[str, Callable[[str | Path], Iterator[Item]]] = {
    "gsm8k": iter_gsm8k,
    "prompt-completion": iter_prompt_completion,
    "messages": iter_messages,
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
) -> list[Record]:
    """Read ``path`` as ``kind`` (one of :data:`IMPORTERS`). Strict by default: raises
    DataError (``file:line: ...``) at the first bad line; with ``skip_invalid`` bad lines
    go to ``rejects`` instead. Input that is read but not kept (a CSV's extra columns) is
    described in ``warnings``."""
    kind = kind.replace("_", "-")
    if kind not in IMPORTERS:
        raise DataError(f"unknown import kind {kind!r}; expected one of {', '.join(IMPORTERS)}")
    items = iter_csv(path, warnings) if kind == "csv" else IMPORTERS[kind](path)
    out: list[Record] = []
    for i, item, raw in items:
        if isinstance(item, Record):
            out.append(item)
        elif not skip_invalid:
            raise item
        elif rejects is not None:
            rejects.append(
                Reject("invalid_line", item.message, str(path), i, raw.rstrip("\n")[:2000])
            )
    return out
