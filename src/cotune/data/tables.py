"""Rows of columnar data sets: Parquet files and folders saved by Hugging Face ``datasets``.

Most public reasoning sets come as Parquet (a hub repository's ``main/train-00000-of-00001.parquet``)
or as a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``. Both are
read here with ``pyarrow`` alone (``datasets`` is not needed), one record batch at a time,
and handed to the importers as plain dict rows, so they go through the same record
building, cleaning and reject report as JSONL and CSV.

Sources, by what ``path`` is:

* a ``.parquet`` file;
* an ``.arrow`` file (Arrow IPC stream, as ``save_to_disk`` writes; the IPC file format too);
* a ``save_to_disk`` folder of one split: ``dataset_info.json``, ``state.json`` (its
  ``_data_files`` list gives the ``data-XXXXX-of-XXXXX.arrow`` files in order);
* a ``save_to_disk`` folder of several splits: ``dataset_dict.json`` (``{"splits": [...]}``)
  and one such folder per split; ``split`` picks one (needed when there are several);
* a folder of ``.parquet`` files (a hub repository's layout); ``split`` keeps the files whose
  name starts with it (``train-00000-of-00001.parquet``).

Every problem is a :class:`TableError` naming the file, and the row when there is one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cotune.data.records import DataError

TABLE_SUFFIXES = (".parquet", ".arrow")
_BATCH_ROWS = 4096


class TableError(DataError):
    """A problem in a table source: ``file: row N: what was expected`` (row when known)."""

    def __init__(self, message: str, file: str | Path, row: int | None = None) -> None:
        super().__init__(message, str(file), row)
        where = f"{file}: row {row}: " if row is not None else f"{file}: "
        ValueError.__init__(self, where + message)


def is_table_source(path: str | Path) -> bool:
    """Whether ``path`` is read as a table: a ``.parquet`` / ``.arrow`` file or a folder."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in TABLE_SUFFIXES


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TableError(f"unreadable JSON ({e})", path) from None


def _saved_split(folder: Path) -> list[Path]:
    """The ``.arrow`` files of one ``save_to_disk`` split folder, in order."""
    state = folder / "state.json"
    if state.is_file():
        info = _json(state)
        files = info.get("_data_files") if isinstance(info, dict) else None
        if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("filename"), str) for f in files
        ):
            raise TableError(
                "expected '_data_files': a list of {'filename': ...} (datasets' save_to_disk)",
                state,
            )
        paths = [folder / f["filename"] for f in files]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise TableError(f"lists {', '.join(missing)}, not in the folder", state)
        return paths
    return sorted(folder.glob("data-*.arrow"))


def resolve(path: str | Path, split: str | None = None) -> list[Path]:
    """The data files behind ``path`` (see the module docstring), in reading order."""
    p = Path(path)
    if not p.exists():
        raise TableError("file or folder not found", p)
    if p.is_file():
        if p.suffix.lower() not in TABLE_SUFFIXES:
            raise TableError(
                f"expected a .parquet or .arrow file, got {p.suffix or 'no suffix'}", p
            )
        if split is not None:
            raise TableError(f"--split {split!r} applies to a folder, not to one file", p)
        return [p]
    if (p / "dataset_dict.json").is_file():
        info = _json(p / "dataset_dict.json")
        splits = info.get("splits") if isinstance(info, dict) else None
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise TableError("expected {'splits': [names]}", p / "dataset_dict.json")
        if split is None:
            if len(splits) != 1:
                raise TableError(
                    f"holds the splits {', '.join(splits)}; choose one with --split NAME", p
                )
            split = splits[0]
        if split not in splits:
            raise TableError(f"no split {split!r}; the splits are {', '.join(splits)}", p)
        return resolve(p / split)
    files = _saved_split(p)
    if files:
        if split is not None:
            raise TableError(
                f"is one split of a saved data set; --split {split!r} applies to a folder "
                "with dataset_dict.json",
                p,
            )
        return files
    parquet = sorted(p.glob("*.parquet"))
    if split is not None:
        parquet = [f for f in parquet if f.name.startswith((f"{split}-", f"{split}."))]
    if parquet:
        return parquet
    saved = (
        "a folder written by datasets' save_to_disk (dataset_info.json, state.json, "
        "data-XXXXX-of-XXXXX.arrow, or dataset_dict.json with one folder per split)"
    )
    if split is not None:
        raise TableError(f"no {split}-*.parquet files; expected .parquet files or {saved}", p)
    # the wording every reader uses for a folder given where a file was meant
    raise TableError(
        f"is a directory, expected a file (or a folder of .parquet files, or {saved})", p
    )


def _batches(file: Path) -> Iterator[Any]:
    """Record batches of one Parquet or Arrow IPC (stream or file) file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if file.suffix.lower() == ".parquet":
            yield from pq.ParquetFile(file).iter_batches(batch_size=_BATCH_ROWS)
            return
        with pa.memory_map(str(file)) as src:
            try:
                reader = pa.ipc.open_stream(src)
            except pa.ArrowInvalid:
                src.seek(0)
                reader = pa.ipc.open_file(src)
                for k in range(reader.num_record_batches):
                    yield reader.get_batch(k)
                return
            yield from reader
    except (pa.ArrowException, OSError) as e:
        kind = "Parquet" if file.suffix.lower() == ".parquet" else "Arrow IPC"
        raise TableError(f"not a readable {kind} file ({e})", file) from None


def columns(path: str | Path, split: str | None = None) -> list[str]:
    """The column names of the first data file (all files of a data set share them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = resolve(path, split)[0]
    try:
        if first.suffix.lower() == ".parquet":
            return list(pq.ParquetFile(first).schema_arrow.names)
    except (pa.ArrowException, OSError) as e:
        raise TableError(f"not a readable Parquet file ({e})", first) from None
    for batch in _batches(first):
        return list(batch.schema.names)
    return []


def iter_rows(path: str | Path, split: str | None = None) -> Iterator[tuple[Path, int, dict]]:
    """``(file, row number in that file from 1, row as a dict)`` for every row."""
    for file in resolve(path, split):
        row = 0
        for batch in _batches(file):
            for values in batch.to_pylist():
                row += 1
                yield file, row, values


def raw_text(row: dict) -> str:
    """A row as one JSON line for a rejects sidecar (cut to 2,000 characters)."""
    return json.dumps(row, ensure_ascii=False, default=str)[:2000]
