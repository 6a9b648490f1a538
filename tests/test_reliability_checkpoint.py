"""Checkpoint faults on the tiny model: damaged latest checkpoint, full disk, NaN/inf loss.

Each test injects one fault into a real run and checks what was kept: resuming falls back
to the previous good checkpoint (with a warning naming the damaged file) and ends with the
same LoRA weights as a run that never failed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from cotune.config import load_config
from cotune.train.checkpoint_integrity import (
    MANIFEST,
    CheckpointError,
    CheckpointWarning,
    summarize_error,
    verify_step,
)
from cotune.train.errors import TrainingDiverged
from cotune.train.load import load_run
from cotune.train.sft import train

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
OVER = ["train.steps=8", "train.checkpoint_every=2", "train.keep_checkpoints=3"]


@pytest.fixture(scope="module")
def sft(cfg, records):
    """``sft(out, **train_kwargs)``: this file's 8-step run of the tiny model into ``out``."""

    def run(out: Path, **kw):
        return train(cfg(*OVER), out, train_records=records(), progress=False, **kw)

    return run


@pytest.fixture(scope="module")
def assert_same_weights(lora):
    def check(a, b) -> None:
        la, lb = lora(a), lora(b)
        assert len(la) == len(lb) > 0
        for x, y in zip(la, lb, strict=True):
            assert np.allclose(x, y, rtol=1e-5, atol=1e-7)

    return check


def steps_on_disk(run: Path, sub: str = "checkpoints") -> list[int]:
    return sorted(int(p.name) for p in (run / sub).iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sft):
    """An uninterrupted 8-step run: the weights every recovered run must end with."""
    return sft(tmp_path_factory.mktemp("ref") / "run")


def _largest_data_file(step_dir: Path) -> Path:
    files = [f for f in (step_dir / "params").rglob("*") if f.is_file() and "d" in f.parts]
    return max(files, key=lambda f: f.stat().st_size)


def _truncate(d: Path) -> str:
    f = _largest_data_file(d)
    with f.open("r+b") as fh:
        fh.truncate(f.stat().st_size // 3)
    return str(f)


def _flip_byte(d: Path) -> str:
    f = _largest_data_file(d)
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x01  # one bit: OCDBT has no checksum, Orbax would restore it silently
    f.write_bytes(bytes(b))
    return str(f)


def _bad_meta(d: Path) -> str:
    (d / "meta" / "metadata").write_text('{"step": ')
    return "metadata"


def _no_manifest_truncate(d: Path) -> str:
    (d / MANIFEST).unlink()  # a checkpoint from before manifests: Orbax's restore must fail
    for f in (d / "params").rglob("*"):  # every data file: Orbax reads only some of them
        if f.is_file() and "d" in f.parts:
            with f.open("r+b") as fh:
                fh.truncate(f.stat().st_size // 3)
    return "Orbax could not restore it"


@pytest.mark.parametrize(
    "damage", [_truncate, _flip_byte, _bad_meta, _no_manifest_truncate], ids=lambda f: f.__name__
)
def test_damaged_latest_checkpoint_falls_back(
    tmp_path: Path, sft, reference, assert_same_weights, damage
) -> None:
    run = tmp_path / "run"
    part = sft(run, stop_after=6)
    assert part.steps == 6 and steps_on_disk(run) == [2, 4, 6]
    assert verify_step(run / "checkpoints" / "6") is None
    named = damage(run / "checkpoints" / "6")
    with pytest.warns(CheckpointWarning) as caught:
        done = sft(run, resume=True)
    msg = next(str(w.message) for w in caught if issubclass(w.category, CheckpointWarning))
    assert "step 6 is unusable" in msg and named in msg and "Falling back to step 4" in msg
    assert done.steps == 8 and len(done.losses) == 4  # steps 5..8 re-run from step 4
    np.testing.assert_allclose(done.losses, reference.losses[4:], rtol=1e-5)
    assert_same_weights(done.model, reference.model)
    # the damaged step was moved aside (kept for inspection), the new step 6 is good
    assert len(list((run / "corrupt_checkpoints").iterdir())) == 1
    assert verify_step(run / "checkpoints" / "6") is None


def test_checkpoint_warning_is_one_clean_line() -> None:
    """Shown as the user sees it: no "file.py:123:" prefix, no source line."""
    text = warnings.formatwarning(
        CheckpointWarning("checkpoint step 6 is unusable: x. Falling back to step 4."),
        CheckpointWarning,
        "/somewhere/checkpoint.py",
        316,
        "    found = restore_first_good(self.latest, one)",
    )
    assert text == "warning: checkpoint step 6 is unusable: x. Falling back to step 4.\n"
    other = warnings.formatwarning(UserWarning("u"), UserWarning, "f.py", 3, "src")
    assert "f.py:3" in other  # every other warning keeps Python's format


def test_tensorstore_error_is_summarized_to_its_cause() -> None:
    """The shape of Orbax's error for a truncated OCDBT file (taken from a real one): the
    outer message ends in a multi-line repr of the TensorStore spec; the cause says what
    went wrong."""
    cause = ValueError(
        'OUT_OF_RANGE: Error reading "layers.1.mlp.up_proj.kernel_lora_b/0.0" in OCDBT '
        'database at local file "/r/checkpoints/4/params/": Requested byte range [9563, 11435) '
        "is not valid for value of size 100"
    )
    outer = Exception(
        "Encountered error while reading array index: (slice(0, 4, 1), slice(0, 128, 1)). "
        "See full TensorStore details: <bound method pybind11_detail_function_record_v1_"
        "system.spec of TensorStore({\n  'base': {\n    'driver': 'zarr',\n  },\n})>."
    )
    outer.__cause__ = cause
    got = summarize_error(outer)
    assert got.startswith('OUT_OF_RANGE: Error reading "layers.1.mlp.up_proj.kernel_lora_b/0.0"')
    assert "\n" not in got and "TensorStore(" not in got and "size 100" in got
    assert summarize_error(RuntimeError("first\nsecond")) == "RuntimeError: first"
    assert len(summarize_error(RuntimeError("x" * 1000))) == 300


def test_every_checkpoint_damaged_is_a_clear_error(tmp_path: Path, sft) -> None:
    run = tmp_path / "run"
    sft(run, stop_after=4)
    for s in steps_on_disk(run):
        _truncate(run / "checkpoints" / str(s))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        with pytest.raises(CheckpointError, match="no usable checkpoint.*step 4.*step 2"):
            sft(run, resume=True)


def test_load_run_skips_a_damaged_checkpoint_read_only(tmp_path: Path, reference, lora) -> None:
    run = reference.run_dir
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    _flip_byte(copy / "checkpoints" / "8")
    with pytest.warns(CheckpointWarning, match="step 8 is unusable"):
        m = load_run(copy, which="last")
    assert (copy / "checkpoints" / "8").is_dir()  # loading never moves files
    assert not all(np.allclose(a, b) for a, b in zip(lora(m), lora(reference.model), strict=True))


# --------------------------------------------------------------------------- full disk


def _fail_writes_into(monkeypatch, marker: str) -> dict:
    """Make every Python-level file write under a path containing ``marker`` fail with
    ENOSPC, inside Orbax's real save (its JSON/metadata writes go through epath)."""
    from etils import epath

    cls = type(epath.Path("/"))
    real_text, real_bytes = cls.write_text, cls.write_bytes
    hits = {"n": 0}

    def guard(self):
        if marker in str(self):
            hits["n"] += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    def write_text(self, *a, **k):
        guard(self)
        return real_text(self, *a, **k)

    def write_bytes(self, *a, **k):
        guard(self)
        return real_bytes(self, *a, **k)

    monkeypatch.setattr(cls, "write_text", write_text)
    monkeypatch.setattr(cls, "write_bytes", write_bytes)
    return hits


def test_disk_full_at_second_save_keeps_the_first(
    tmp_path: Path, sft, reference, assert_same_weights, monkeypatch
) -> None:
    run = tmp_path / "run"
    hits = _fail_writes_into(monkeypatch, f"{os.sep}checkpoints{os.sep}4")
    with pytest.raises(CheckpointError) as e:
        sft(run)
    msg = str(e.value)
    assert hits["n"] >= 1
    assert "could not write checkpoint step 4" in msg and "disk full" in msg
    assert "previous checkpoint is intact (step 2)" in msg and "--resume" in msg
    assert steps_on_disk(run) == [2]  # nothing half-written left behind
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith("4")]
    assert verify_step(run / "checkpoints" / "2") is None
    monkeypatch.undo()  # space freed
    done = sft(run, resume=True)
    assert done.steps == 8
    assert_same_weights(done.model, reference.model)


def test_disk_full_in_cli_is_a_message(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from cotune.cli import app

    _fail_writes_into(monkeypatch, f"{os.sep}checkpoints{os.sep}2")
    r = CliRunner().invoke(
        app,
        ["train", "--config", str(CONFIG), "--out", str(tmp_path / "r")]
        + [x for o in ["train.steps=2", "train.checkpoint_every=2"] for x in ("--set", o)],
    )
    assert r.exit_code == 1, r.output
    assert "disk full" in r.output and "Traceback" not in r.output


# --------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_loss_stops_and_keeps_last_good(tmp_path: Path, sft, poison_loss, bad) -> None:
    poison_loss(5, bad)
    run = tmp_path / "r"
    with pytest.raises(TrainingDiverged, match=f"step 5: loss is {bad}") as e:
        sft(run)
    assert "step 4" in str(e.value) and "optim.lr" in str(e.value)
    assert steps_on_disk(run) == [2, 4]
    assert all(verify_step(run / "checkpoints" / str(s)) is None for s in (2, 4))
    logged = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) == 4  # the diverged step is not recorded as a normal step


# --------------------------------------------------------------------------- RL


def _rl_setup(steps: int = 4):
    from cotune.model import load
    from cotune.rl.questions import make_examples

    c = load_config(
        None,
        [
            "lora.rank=2",
            "lora.alpha=4",
            f"rl.steps={steps}",
            "rl.num_generations=2",
            "rl.prompts_per_step=2",
            "rl.max_new_tokens=4",
            "rl.temperature=2.0",
            "rl.lr=1e-3",
            "rl.eval_size=0",
            "rl.checkpoint_every=1",
            "rl.keep_checkpoints=4",
        ],
    )
    model = load("tiny")
    qs = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]
    return c, model, make_examples(qs, model, c)


@pytest.mark.slow
def test_rl_damaged_checkpoint_falls_back_and_nan_stops(
    tmp_path: Path, assert_same_weights, monkeypatch
) -> None:
    from cotune.model import load
    from cotune.rl.run import train_grpo
    from cotune.rl.trainer import GRPOTrainer

    c, model, ex = _rl_setup()
    full = train_grpo(model, c, ex, [], tmp_path / "full", show_progress=False)
    c3 = c.model_copy(update={"rl": c.rl.model_copy(update={"steps": 3})})
    train_grpo(load("tiny"), c3, ex, [], tmp_path / "b", show_progress=False)
    _flip_byte_rl(tmp_path / "b" / "checkpoints" / "3")
    with pytest.warns(CheckpointWarning, match="step 3 is unusable.*Falling back to step 2"):
        done = train_grpo(load("tiny"), c, ex, [], tmp_path / "b", resume=True, show_progress=False)
    assert [s["step"] for s in done.history.steps] == [1, 2, 3, 4]
    assert_same_weights(done.model, full.model)

    # a NaN loss stops RL before it reaches a checkpoint
    real = GRPOTrainer.train_step

    def nan_at_3(self):
        rec = real(self)
        return {**rec, "loss": float("nan")} if self.step == 3 else rec

    monkeypatch.setattr(GRPOTrainer, "train_step", nan_at_3)
    with pytest.raises(TrainingDiverged, match="rl step 3: loss is nan.*step 2"):
        train_grpo(load("tiny"), c, ex, [], tmp_path / "n", show_progress=False)
    assert steps_on_disk(tmp_path / "n") == [1, 2]


def test_rl_checkpoint_with_one_state_item_loads_and_resumes(tmp_path: Path, lora) -> None:
    """RL steps may hold a single ``state`` item (LoRA, reference LoRA and optimizer as
    flat leaf lists) beside ``meta``: such a run loads and resumes like any other."""
    import jax
    import orbax.checkpoint as ocp

    from cotune.model import load
    from cotune.rl.load import load_rl_run
    from cotune.rl.run import train_grpo
    from cotune.rl.trainer import GRPOTrainer
    from cotune.train.checkpoint import RunCheckpoints
    from cotune.train.checkpoint_integrity import make_manager, save_step

    def leaves(tree) -> dict:
        return {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree))}

    c, model, ex = _rl_setup(steps=2)
    run = tmp_path / "run"
    done = train_grpo(model, c, ex, [], run, show_progress=False)
    like = GRPOTrainer(done.model, c, ex)  # the structures a checkpoint restores into
    ckpts = RunCheckpoints(run)
    got = ckpts.restore(like.lora, like.opt_state, extra={"ref": like.ref_lora})
    ckpts.close()
    shutil.rmtree(run / "checkpoints")
    mgr = make_manager(run / "checkpoints", 2)
    state = {
        "lora": leaves(got.params),
        "ref": leaves(got.extra["ref"]),
        "opt": leaves(got.opt_state),
    }
    save_step(
        mgr,
        2,
        ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(got.meta)),
    )
    mgr.close()

    again = load_rl_run(run, lambda init: load("tiny"))
    assert again.meta["step"] == 2
    assert all(np.array_equal(a, b) for a, b in zip(lora(again), lora(done.model), strict=True))
    c3 = c.model_copy(update={"rl": c.rl.model_copy(update={"steps": 3})})
    more = train_grpo(load("tiny"), c3, ex, [], run, resume=True, show_progress=False)
    assert [s["step"] for s in more.history.steps] == [1, 2, 3]


def _flip_byte_rl(d: Path) -> None:
    files = [f for f in (d / "params").rglob("*") if f.is_file() and "d" in f.parts]
    f = max(files, key=lambda f: f.stat().st_size)
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x01
    f.write_bytes(bytes(b))


@pytest.mark.slow
def test_real_full_disk_on_tmpfs(tmp_path: Path, sft, reference, assert_same_weights) -> None:
    """A real ENOSPC: ``checkpoints/`` is a 360 KiB tmpfs (one tiny checkpoint is ~240 KiB).
    Needs root (mount); skipped elsewhere."""
    import subprocess

    run = tmp_path / "run"
    mnt = run / "checkpoints"
    mnt.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=360k", "tmpfs", str(mnt)], check=False)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        with pytest.raises(CheckpointError, match="could not write checkpoint step 4") as e:
            sft(run, resume=True)
        assert "intact (step 2)" in str(e.value)
        assert steps_on_disk(run) == [2] and verify_step(mnt / "2") is None
        subprocess.run(["mount", "-o", "remount,size=4m", str(mnt)], check=True)  # space freed
        done = sft(run, resume=True)
        assert_same_weights(done.model, reference.model)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
