"""Parquet files and Hugging Face ``datasets`` save_to_disk folders as import sources.

The fixtures are built here with pyarrow in the layouts ``datasets`` writes (``data-XXXXX-of-
XXXXX.arrow`` Arrow IPC streams + ``dataset_info.json`` + ``state.json``; ``dataset_dict.json``
and one folder per split; a hub repository's ``train-00000-of-00001.parquet``), so the tests
need neither ``datasets`` nor a download.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cotune import data
from cotune.commands.data import app
from cotune.data import DataError

FIX = Path(__file__).parent / "fixtures" / "gsm8k"


def gsm8k_rows(n: int | None = None) -> list[dict]:
    lines = (FIX / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines[:n]]


def write_arrow(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table, max_chunksize=7)  # several record batches per file


def save_to_disk(folder: Path, rows: list[dict], shards: int = 1, split: str = "train") -> Path:
    """A folder as ``Dataset.save_to_disk`` writes it."""
    folder.mkdir(parents=True)
    names = [f"data-{k:05d}-of-{shards:05d}.arrow" for k in range(shards)]
    per = -(-len(rows) // shards)
    for k, name in enumerate(names):
        write_arrow(folder / name, rows[k * per : (k + 1) * per])
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}, "splits": {}}))
    state = {"_data_files": [{"filename": n} for n in names], "_split": split}
    (folder / "state.json").write_text(json.dumps(state))
    return folder


def test_parquet_gsm8k_same_records_as_jsonl(tmp_path: Path) -> None:
    rows = gsm8k_rows()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet", row_group_size=9)
    notes_t, notes_j = Counter(), Counter()
    from_table = data.import_file("gsm8k", tmp_path / "train.parquet", notes=notes_t)
    from_jsonl = data.import_file("gsm8k", FIX / "train.jsonl", notes=notes_j)
    assert [(r.id, r.question, r.reasoning, r.answer) for r in from_table] == [
        (r.id, r.question, r.reasoning, r.answer) for r in from_jsonl
    ]
    assert notes_t == notes_j and notes_t["note_carried"] > 0


def test_save_to_disk_folder_columns_kind(tmp_path: Path) -> None:
    rows = [
        {
            "problem": f"What is {i} + {i}?",
            "reasoning": f"{i} + {i} = {2 * i}.",
            "answer": 2 * i,  # a number column
            "level": "easy",
        }
        for i in range(1, 21)
    ]
    folder = save_to_disk(tmp_path / "ds", rows, shards=3)
    warnings: list[str] = []
    recs = data.import_file("columns", folder, warnings=warnings)
    assert [(r.question, r.reasoning, r.answer) for r in recs] == [
        (x["problem"], x["reasoning"], str(x["answer"])) for x in rows
    ]
    assert len({r.id for r in recs}) == 20 and recs[-1].id == "ds-20"  # ids over all shards
    assert warnings and "'level'" in warnings[0]
    kept, report = data.clean(recs, check_claims=True)
    assert len(kept) == 20, str(report)


def test_dataset_dict_folder_and_splits(tmp_path: Path) -> None:
    root = tmp_path / "gsm8k_dd"
    rows = gsm8k_rows(12)
    save_to_disk(root / "train", rows[:8])
    save_to_disk(root / "test", rows[8:], split="test")
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(DataError, match=r"holds the splits train, test; choose one with --split"):
        data.import_file("gsm8k", root)
    assert len(data.import_file("gsm8k", root, split="train")) == 8
    test = data.import_file("gsm8k", root, split="test")
    assert [r.answer for r in test] == [data.normalize_text(x["answer"]).split("#### ")[1]
                                        for x in rows[8:]]  # fmt: skip
    assert len(data.import_file("gsm8k", root / "test")) == 4  # a split folder itself
    with pytest.raises(DataError, match=r"no split 'validation'; the splits are train, test"):
        data.import_file("gsm8k", root, split="validation")


def test_parquet_folder_hub_layout(tmp_path: Path) -> None:
    main = tmp_path / "main"
    main.mkdir()
    rows = gsm8k_rows(10)
    pq.write_table(pa.Table.from_pylist(rows[:6]), main / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[6:]), main / "test-00000-of-00001.parquet")
    assert len(data.import_file("gsm8k", main, split="train")) == 6
    assert len(data.import_file("gsm8k", main, split="test")) == 4
    assert len(data.import_file("gsm8k", main)) == 10  # every file, in name order
    with pytest.raises(DataError, match=r"no validation-\*.parquet files"):
        data.import_file("gsm8k", main, split="validation")


def test_messages_and_canonical_tables(tmp_path: Path) -> None:
    conv = [
        {"role": "user", "content": "What is 6 / 2?"},
        {"role": "assistant", "content": "<reasoning>6 / 2 = 3.</reasoning><answer>3</answer>"},
    ]
    pq.write_table(pa.Table.from_pylist([{"messages": conv}]), tmp_path / "m.parquet")
    (r,) = data.import_file("messages", tmp_path / "m.parquet")
    assert (r.question, r.reasoning, r.answer) == ("What is 6 / 2?", "6 / 2 = 3.", "3")
    canon = data.generate(["arithmetic"], n=5, seed=1)
    write_arrow(tmp_path / "c.arrow", [x.to_dict() for x in canon])
    assert data.import_file("jsonl", tmp_path / "c.arrow") == canon


def test_bad_rows_name_file_row_and_column(tmp_path: Path) -> None:
    rows = gsm8k_rows(3)
    bad = [rows[0], {"question": rows[1]["question"], "answer": None}, rows[2]]
    pq.write_table(pa.Table.from_pylist(bad), tmp_path / "g.parquet")
    with pytest.raises(
        DataError, match=r"g.parquet: row 2: column 'answer': expected a string, got null"
    ):
        data.import_file("gsm8k", tmp_path / "g.parquet")
    rejects: list[data.Reject] = []
    recs = data.import_file("gsm8k", tmp_path / "g.parquet", skip_invalid=True, rejects=rejects)
    assert len(recs) == 2
    assert [(Path(x.file).name, x.line, x.reason) for x in rejects] == [
        ("g.parquet", 2, "invalid_line")
    ]
    assert json.loads(rejects[0].raw)["answer"] is None

    # a shard of a saved data set: the error names that shard and the row in it
    folder = save_to_disk(tmp_path / "ds", [{"question": f"q{i}", "answer": "1"} for i in range(9)]
                          + [{"question": "", "answer": "2"}], shards=2)  # fmt: skip
    with pytest.raises(
        DataError, match=r"data-00001-of-00002.arrow: row 5: column 'question': expected non-empty"
    ):
        data.import_file("columns", folder)

    pq.write_table(pa.Table.from_pylist([{"text": "x", "label": 1}]), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t.parquet: expected a 'question' .* column, got \['text', 'label'\]"):  # fmt: skip
        data.import_file("columns", tmp_path / "t.parquet")
    gsm = _parquet(tmp_path / "gsm.parquet", gsm8k_rows(1))
    with pytest.raises(DataError, match=r"row 1: column 'answer': a GSM8K-style solution .* kind gsm8k"):  # fmt: skip
        data.import_file("columns", gsm)
    with pytest.raises(DataError, match=r"missing column 'answer'"):
        data.import_file("gsm8k", _parquet(tmp_path / "q.parquet", [{"question": "q"}]))


def _parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_bad_sources(tmp_path: Path) -> None:
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"junk.parquet: not a readable Parquet file"):
        data.import_file("gsm8k", tmp_path / "junk.parquet")
    (tmp_path / "junk.arrow").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=r"junk.arrow: not a readable Arrow IPC file"):
        data.import_file("gsm8k", tmp_path / "junk.arrow")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: is a directory, expected a file \(or a folder of .parquet files, or a folder written by datasets' save_to_disk"):  # fmt: skip
        data.import_file("gsm8k", empty)
    folder = save_to_disk(tmp_path / "ds", gsm8k_rows(2))
    (folder / "data-00000-of-00001.arrow").unlink()
    with pytest.raises(DataError, match=r"state.json: lists data-00000-of-00001.arrow, not in"):
        data.import_file("gsm8k", folder)
    with pytest.raises(DataError, match=r"applies to a datasets folder, not to a file"):
        data.import_file("gsm8k", FIX / "train.jsonl", split="train")
    with pytest.raises(DataError, match=r"kind gsm8k reads JSON lines, Parquet"):
        (tmp_path / "x.csv").write_text("question,answer\nq,1\n")
        data.import_file("gsm8k", tmp_path / "x.csv")


def test_cli_import_from_datasets_folder(tmp_path: Path) -> None:
    root = tmp_path / "dd"
    save_to_disk(root / "train", gsm8k_rows(30))
    save_to_disk(root / "test", gsm8k_rows()[30:], split="test")
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    out = tmp_path / "train.jsonl"
    res = CliRunner().invoke(
        app, ["import", "gsm8k", str(root), "--split", "train", "--out", str(out),
              "--exclude", str(root / "test")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "calculator notes:" in res.output and "carried" in res.output
    kept = data.read_jsonl(out)
    assert 25 <= len(kept) <= 30 and all(r.source == "gsm8k" for r in kept)
    res = CliRunner().invoke(app, ["import", "gsm8k", str(root), "--out", str(tmp_path / "y")])
    assert res.exit_code == 1 and "choose one with --split NAME" in res.output
    assert "Traceback" not in res.output
