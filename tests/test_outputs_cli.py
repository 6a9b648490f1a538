"""Outputs never destroy anything; bad input is never a traceback (issue 19).

Every command that writes a file or folder is swept with ``--out`` set to a folder where a
file is expected (or a file where a folder is), an existing output (refused without
``--force``, replaced with it), an unwritable place and the command's own input (refused
even with ``--force``). Refusals must exit 2 before any work, with no traceback, and leave
every pre-existing byte as it was. Runs in-process with typer's ``CliRunner`` on tiny data;
the long-running stages of ``rl`` and ``quickstart`` are replaced by stubs where only the
output handling around them is under test.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from cotune import data as D
from cotune import outputs
from cotune.cli import app

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"
RL_TINY = ROOT / "configs" / "rl-tiny.yaml"


def cli(*args) -> object:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r


def said(r) -> str:
    """Output with whitespace squashed (rich wraps long paths anywhere)."""
    return re.sub(r"\s+", " ", r.output)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``root`` with its bytes (None for folders)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
        if "cache" not in p.relative_to(root).parts
    }


# the GGUF loader caches converted weights: in the session's temp folder, not ~/.cache
pytestmark = pytest.mark.usefixtures("model_cache")


@pytest.fixture
def ws(tmp_path: Path, monkeypatch) -> SimpleNamespace:
    """Inputs every command can use: 20 records, predictions, a report, configs."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    recs = D.generate("arithmetic", 20, seed=0)
    data_file = inputs / "data.jsonl"
    D.write_jsonl(data_file, recs)
    preds = inputs / "preds.jsonl"
    preds.write_text(
        "".join(
            json.dumps({"id": r.id, "completion": f"<reasoning>x</reasoning><answer>{r.answer}"})
            + "\n"
            for r in recs
        )
    )
    report = inputs / "report"
    r = cli("eval", "--predictions", preds, "--data", data_file, "--out", report, "--quiet")
    assert r.exit_code == 0, r.output
    rl_cfg = yaml.safe_load(RL_TINY.read_text())
    rl_cfg["data"]["train"] = [{"path": str(data_file)}]
    rl_cfg_file = inputs / "rl.yaml"
    rl_cfg_file.write_text(yaml.safe_dump(rl_cfg))
    qs_cfg_file = inputs / "qs.yaml"
    qs_cfg_file.write_text(TINY.read_text())

    # rl and quickstart: only the output handling is under test, not the long computation
    from cotune import quickstart as qs
    from cotune.rl import run as rl_run

    def fake_grpo(model, cfg, train, held, out, **kw):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "rl.json").write_text('{"new": true}\n')
        return SimpleNamespace(history=SimpleNamespace(steps=[], evals=[]))

    def fake_pipeline(work, out, cfg, con, *a, **kw):
        (work / "summary.json").write_text('{"new": true}\n')
        return qs.QuickstartResult(out, {}, {})

    monkeypatch.setattr(rl_run, "train_grpo", fake_grpo)
    monkeypatch.setattr(qs, "_pipeline", fake_pipeline)
    return SimpleNamespace(
        root=tmp_path, data=data_file, preds=preds, report=report, rl=rl_cfg_file, qs=qs_cfg_file
    )


@dataclass
class Cmd:
    """A writing command: its arguments for an output path, and what it writes."""

    name: str
    args: Callable[[SimpleNamespace, Path], list]
    kind: str  # "file" or "dir"
    own_input: Callable[[SimpleNamespace], Path] | None  # an input to aim --out at
    flag: str = "--out"

    def run(self, ws, out: Path, *extra):
        return cli(*self.args(ws, out), *extra)


CMDS = [
    Cmd("data generate", lambda w, o: ["data", "generate", "--n", 20, "--out", o], "file", None),
    Cmd(
        "data import",
        lambda w, o: ["data", "import", "jsonl", w.data, "--skip-invalid", "--out", o],
        "file",
        lambda w: w.data,
    ),
    Cmd(
        "data mix",
        lambda w, o: ["data", "mix", "--in", w.data, "--n", 20, "--out", o],
        "file",
        lambda w: w.data,
    ),
    Cmd(
        "eval",
        lambda w, o: ["eval", "--predictions", w.preds, "--data", w.data, "--out", o, "--quiet"],
        "dir",
        lambda w: w.data,
    ),
    Cmd(
        "eval --compare",
        lambda w, o: ["eval", "--compare", w.report, w.report, "--out", o],
        "dir",
        lambda w: w.report,
    ),
    Cmd("export", lambda w, o: ["export", "--model", "tiny", "--out", o], "dir", None),
    Cmd(
        "rl",
        lambda w, o: ["rl", "--config", w.rl, "--init", "tiny", "--out", o],
        "dir",
        lambda w: w.rl,
    ),
    Cmd(
        "quickstart",
        lambda w, o: ["quickstart", "--config", w.qs, "--out", o, "--n-test", 2],
        "dir",
        lambda w: w.qs,
    ),
]
IDS = [c.name for c in CMDS]


def unwritable(root: Path) -> Path:
    """A place where nothing can be created: a read-only folder, or (root ignores folder
    permissions) a path under a regular file."""
    ro = root / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    if not os.access(ro, os.W_OK):
        return ro / "out"
    ro.chmod(0o755)
    blocker = root / "a-file"
    blocker.write_text("not a folder\n")
    return blocker / "out"


@pytest.mark.parametrize("cmd", CMDS, ids=IDS)
def test_wrong_kind_is_refused(cmd: Cmd, ws) -> None:
    if cmd.kind == "file":
        out = ws.root / "a-folder"
        out.mkdir()
        (out / "keep.txt").write_text("mine\n")
        expected = "is a directory, expected a file"
    else:
        out = ws.root / "a-file"
        out.write_text("mine\n")
        expected = "is a file, expected a folder"
    before = snapshot(ws.root)
    for extra in ([], ["--force"]):
        r = cmd.run(ws, out, *extra)
        assert r.exit_code == 2 and expected in said(r), r.output
        assert snapshot(ws.root) == before


@pytest.mark.parametrize("cmd", CMDS, ids=IDS)
def test_existing_output_refused_then_replaced_with_force(cmd: Cmd, ws) -> None:
    out = ws.root / ("existing.jsonl" if cmd.kind == "file" else "existing")
    if cmd.kind == "file":
        out.write_text("old\n")
    else:
        out.mkdir()
        (out / "old.txt").write_text("old\n")
    before = snapshot(ws.root)
    inputs_before = snapshot(ws.root / "inputs")
    r = cmd.run(ws, out)
    assert r.exit_code == 2 and "already exists" in said(r) and "--force" in said(r), r.output
    assert snapshot(ws.root) == before

    r = cmd.run(ws, out, "--force")
    assert r.exit_code == 0, r.output
    if cmd.kind == "file":
        assert len(D.read_jsonl(out)) > 0
    else:
        assert not (out / "old.txt").exists() and any(out.iterdir())
    leftovers = [p.name for p in ws.root.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary or set-aside copies left behind
    assert snapshot(ws.root / "inputs") == inputs_before


@pytest.mark.parametrize("cmd", CMDS, ids=IDS)
def test_unwritable_place_is_refused_before_any_work(cmd: Cmd, ws) -> None:
    out = unwritable(ws.root)
    before = snapshot(ws.root)
    r = cmd.run(ws, out, "--force")
    assert r.exit_code == 2, r.output
    assert "cannot be created" in said(r) or "cannot be written" in said(r), r.output
    assert snapshot(ws.root) == before
    (ws.root / "readonly").chmod(0o755)


@pytest.mark.parametrize("cmd", [c for c in CMDS if c.own_input], ids=lambda c: c.name)
def test_own_input_is_never_overwritten(cmd: Cmd, ws) -> None:
    before = snapshot(ws.root)
    own = cmd.own_input(ws)
    targets = [own]
    if cmd.kind == "dir":  # replacing the folder that holds an input would delete it
        targets.append(own.parent)
    for out in targets:
        for extra in ([], ["--force"]):
            r = cmd.run(ws, out, *extra)
            assert r.exit_code == 2, r.output
            assert "input" in said(r) and "--force never overwrites an input" in said(r)
            assert snapshot(ws.root) == before


def test_export_model_folder_is_an_input(ws) -> None:
    model_dir = ws.root / "exported"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}\n")
    before = snapshot(ws.root)
    r = cli("export", "--model", model_dir, "--out", model_dir, "--force")
    assert r.exit_code == 2 and "is also an input" in said(r), r.output
    assert snapshot(ws.root) == before


def test_import_with_skip_invalid_keeps_its_input(ws) -> None:
    """The sweep's failure case: ``import jsonl F --skip-invalid --out F`` replaced F."""
    before = ws.data.read_bytes()
    r = cli("data", "import", "jsonl", ws.data, "--skip-invalid", "--out", ws.data, "--force")
    assert r.exit_code == 2 and ws.data.read_bytes() == before


def test_split_outputs(ws) -> None:
    parts = ws.root / "parts"
    r = cli("data", "split", ws.data, "--out-dir", parts)
    assert r.exit_code == 0, r.output
    before = snapshot(ws.root)
    r = cli("data", "split", ws.data, "--out-dir", parts)
    assert r.exit_code == 2 and "already exists" in said(r) and snapshot(ws.root) == before
    assert cli("data", "split", ws.data, "--out-dir", parts, "--force").exit_code == 0
    # a file as --out-dir, an unwritable place, and an input named like one of the parts
    r = cli("data", "split", ws.data, "--out-dir", ws.data, "--force")
    assert r.exit_code == 2 and "not a folder" in said(r)
    r = cli("data", "split", ws.data, "--out-dir", unwritable(ws.root), "--force")
    assert r.exit_code == 2
    train = parts / "train.jsonl"
    before = train.read_bytes()
    r = cli("data", "split", train, "--out-dir", parts, "--force")
    assert r.exit_code == 2 and "input" in said(r) and train.read_bytes() == before
    (ws.root / "readonly").chmod(0o755)


def test_rejects_sidecar_is_an_output_too(ws) -> None:
    out = ws.root / "o.jsonl"
    side = D.rejects_path(out)
    side.mkdir()
    r = cli("data", "import", "jsonl", ws.data, "--out", out, "--force")
    assert r.exit_code == 2 and "is a directory" in said(r) and not out.exists()


def test_rl_force_keeps_the_old_run_until_the_new_one_finished(ws, monkeypatch) -> None:
    from cotune.rl import run as rl_run

    out = ws.root / "run"
    out.mkdir()
    (out / "rl.json").write_text("old\n")

    def crash(model, cfg, train, held, out, **kw):
        Path(out).mkdir()
        (Path(out) / "metrics.jsonl").write_text("partial\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rl_run, "train_grpo", crash)
    r = cli("rl", "--config", ws.rl, "--init", "tiny", "--out", out, "--force")
    assert r.exit_code == 1 and "run folder that was there is kept" in said(r), r.output
    (kept,) = [p for p in ws.root.iterdir() if p.name.startswith(".run.old-")]
    assert (kept / "rl.json").read_text() == "old\n"


def test_train_out_checked_before_any_work(ws) -> None:
    """A file as the run folder, the config inside the folder it would replace, and an
    existing run without --resume/--force: all exit 2 with nothing touched."""
    f = ws.root / "a-file"
    f.write_text("keep\n")
    r = cli("train", "--config", TINY, "--out", f)
    assert r.exit_code == 2 and "expected a folder" in said(r), r.output
    run = ws.root / "run"
    run.mkdir()
    cfg = run / "config.yaml"
    cfg.write_text(TINY.read_text())
    before = snapshot(ws.root)
    r = cli("train", "--config", cfg, "--out", run, "--force")
    assert r.exit_code == 2 and "input" in said(r), r.output
    r = cli("train", "--config", TINY, "--out", run)
    assert r.exit_code == 2 and "--resume" in said(r), r.output
    assert snapshot(ws.root) == before


def test_train_force_keeps_the_old_run_until_the_new_one_finished(ws, monkeypatch) -> None:
    from cotune.train import sft

    out = ws.root / "run"
    out.mkdir()
    (out / "run.json").write_text("old\n")

    def crash(cfg, out, **kw):
        Path(out).mkdir()
        (Path(out) / "metrics.jsonl").write_text("partial\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sft, "train", crash)
    r = cli("train", "--config", TINY, "--out", out, "--force")
    assert r.exit_code == 1 and "run that was there is kept" in said(r), r.output
    (kept,) = [p for p in ws.root.iterdir() if p.name.startswith(".run.old-")]
    assert (kept / "run.json").read_text() == "old\n"


def test_quickstart_crash_leaves_the_old_results(ws, monkeypatch) -> None:
    from cotune import quickstart as qs

    out = ws.root / "qs"
    out.mkdir()
    (out / "summary.json").write_text("old\n")
    before = snapshot(ws.root)

    def crash(work, *a, **kw):
        (work / "summary.json").write_text("half\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(qs, "_pipeline", crash)
    r = cli("quickstart", "--config", ws.qs, "--out", out, "--force")
    assert r.exit_code == 1, r.output
    assert snapshot(ws.root) == before


# --------------------------------------------------------------------------- atomic writes


def test_atomic_file_write_survives_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    recs = D.generate("arithmetic", 5, seed=0)
    D.write_jsonl(out, recs)
    before = out.read_bytes()

    def crashing():
        yield from recs[:3]
        raise KeyboardInterrupt("simulated crash mid-write")

    with pytest.raises(KeyboardInterrupt):
        D.write_jsonl(out, crashing())
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]  # no temp file left

    with pytest.raises(RuntimeError):
        with outputs.atomic_open(tmp_path / "new.txt") as f:
            f.write("half")
            raise RuntimeError("crash")
    assert [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]
    outputs.atomic_write_text(out, "x\n")
    assert out.read_text() == "x\n" and oct(out.stat().st_mode & 0o777) != "0o600"


def test_atomic_dir_survives_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.json").write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with outputs.atomic_dir(out) as tmp:
            (tmp / "report.json").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]
    assert (out / "report.json").read_text() == "old\n"
    with outputs.atomic_dir(out) as tmp:
        (tmp / "report.json").write_text("new\n")
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    assert (out / "report.json").read_text() == "new\n"


def test_cli_crash_mid_write_keeps_the_old_file(ws, monkeypatch) -> None:
    out = ws.root / "g.jsonl"
    out.write_text("old\n")
    calls = []

    def failing_line(r):
        calls.append(r)
        if len(calls) > 3:
            raise OSError(28, "No space left on device")
        return json.dumps(r.to_dict()) + "\n"

    monkeypatch.setattr(D.records, "jsonl_line", failing_line)
    r = cli("data", "generate", "--n", 20, "--out", out, "--force")
    assert r.exit_code == 1 and "No space left" in said(r), r.output
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith(".")) == []


# --------------------------------------------------------------------------- input side


def test_bom_is_accepted_everywhere(tmp_path: Path) -> None:
    rec = {"id": "a", "question": "What is 2 + 2?", "reasoning": "2 + 2 = 4", "answer": "4"}
    jl = tmp_path / "bom.jsonl"
    jl.write_bytes(b"\xef\xbb\xbf" + json.dumps(rec).encode() + b"\n")
    csv_file = tmp_path / "bom.csv"
    csv_file.write_bytes(b"\xef\xbb\xbfid,question,answer\na,What is 2 + 2?,4\n")
    assert D.read_jsonl(jl)[0].question == rec["question"]
    assert cli("data", "validate", jl).exit_code == 0
    r = cli("data", "import", "jsonl", jl, "--out", tmp_path / "o.jsonl")
    assert r.exit_code == 0, r.output

    from cotune.eval.inputs import load_records
    from cotune.rl.questions import read_questions

    assert load_records(jl)[0].id == "a" and load_records(csv_file)[0].id == "a"
    assert read_questions(jl)[0]["answer"] == "4"


def test_folder_given_as_input_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    for args in (
        ["data", "import", "jsonl", folder, "--out", tmp_path / "o.jsonl"],
        ["data", "import", "csv", folder, "--out", tmp_path / "o.jsonl"],
        ["data", "validate", folder],
        ["data", "show", folder],
        ["eval", "--predictions", folder, "--data", folder, "--out", tmp_path / "r"],
    ):
        r = cli(*args)
        assert r.exit_code != 0 and "is a directory, expected a file" in said(r), r.output
        assert "not found" not in r.output
    from cotune.rl.questions import read_questions

    with pytest.raises(D.DataError, match="is a directory"):
        read_questions(folder)


def test_binary_input_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    blob = tmp_path / "blob.jsonl"
    ok = b'{"question": "What is 1 + 1?", "reasoning": "1 + 1 = 2", "answer": "2"}\n'
    blob.write_bytes(ok + b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage\n")
    r = cli("data", "import", "jsonl", blob, "--out", tmp_path / "o.jsonl")
    assert r.exit_code == 1 and f"{blob}:2: not UTF-8 text" in said(r), r.output
    r = cli("eval", "--predictions", blob, "--data", blob, "--out", tmp_path / "r")
    assert r.exit_code == 2 and f"{blob}:2: not UTF-8" in said(r), r.output
    bad_csv = tmp_path / "blob.csv"
    bad_csv.write_bytes(b"question,answer\nWhat is 1 + 1?,2\n\xff\xfe,3\n")
    r = cli("data", "import", "csv", bad_csv, "--out", tmp_path / "o.jsonl")
    assert r.exit_code == 1 and f"{bad_csv}:3: not UTF-8 text" in said(r), r.output
    from cotune.rl.questions import read_questions

    with pytest.raises(D.DataError, match=re.escape(f"{blob}:2: not UTF-8")):
        read_questions(blob)


def test_csv_keeps_ids_and_names_extra_columns(tmp_path: Path) -> None:
    p = tmp_path / "gold.csv"
    p.write_text(
        "id,question,answer,task,difficulty,notes,grader\n"
        "q-17,What is 2 + 3?,5,add,1,easy one,ann\n"
        "q-18,What is 9 - 4?,5,sub,,,bob\n"
        ",What is 6 * 7?,42,,,,\n"
    )
    warnings: list[str] = []
    recs = D.import_file("csv", p, warnings=warnings)
    assert [r.id for r in recs] == ["q-17", "q-18", "gold-4"]
    assert [r.task for r in recs] == ["add", "sub", "imported"]
    assert [r.difficulty for r in recs] == [1, None, None]
    assert len(warnings) == 1 and "'notes'" in warnings[0] and "'grader'" in warnings[0]

    r = cli("data", "import", "csv", p, "--out", tmp_path / "o.jsonl")
    assert r.exit_code == 0 and "'notes', 'grader'" in said(r) and "warning" in said(r)
    assert [x.id for x in D.read_jsonl(tmp_path / "o.jsonl")] == ["q-17", "q-18", "gold-4"]

    dup = tmp_path / "dup.csv"
    dup.write_text("id,question,answer\na,What is 1 + 1?,2\na,What is 2 + 2?,4\n")
    with pytest.raises(D.DataError, match=r"dup.csv:3: column 'id': duplicate id 'a'"):
        D.import_file("csv", dup)


def test_empty_training_data_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["data"]["train"] = [{"path": str(empty)}]
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    r = cli("train", "--config", cfg_file, "--out", tmp_path / "run", "--dry-run")
    assert r.exit_code != 0 and "no training data" in said(r), r.output
    assert "longer than" not in r.output and "exceed" not in r.output
