"""``kill -9`` a training run at a random step; ``--resume`` must end exactly where an
uninterrupted run ends (same LoRA weights). SFT (fast) and GRPO (slow).

The killed run is a real subprocess. Its steps are slowed down (a sleep before each batch
is placed) only so that the kill lands mid-run instead of after the last step; the
computation itself is unchanged. The kill step is fixed under the default Hypothesis
profile (``ci``, ``make test``) and random under ``thorough`` (``make test-all``); it is
printed on failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cotune.config import load_config
from cotune.train.sft import train

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

SFT_OVER = [
    "train.steps=14",
    "train.checkpoint_every=2",
    "train.keep_checkpoints=2",
    "data.val_size_for_accuracy=0",
]
SFT_CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
import cotune.train.sft as sft
from cotune.config import load_config
from conftest import sum_records
_real = sft.put_batch
def _slow(*a, **k):  # slow each step down so the kill lands mid-run
    time.sleep({delay})
    return _real(*a, **k)
sft.put_batch = _slow
cfg = load_config({config!r}, {over!r})
sft.train(cfg, {out!r}, resume={resume}, train_records=sum_records(), progress=False)
print("FINISHED")
"""


def kill_steps() -> random.Random:
    """Where to kill: the same steps every run under ``ci``, so a verdict changes only with
    the code; anywhere under ``thorough``."""
    from hypothesis import settings

    return (
        random.SystemRandom()
        if settings.get_current_profile_name() == "thorough"
        else random.Random(0)
    )


def _steps(d: Path) -> list[int]:
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _metric_steps(path: Path, key: str = "loss") -> int:
    if not path.is_file():
        return 0
    n = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            n += key in json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            pass
    return n


def kill_at(cmd: list[str], run: Path, at: int, key: str, timeout: float = 300) -> str:
    """Start ``cmd``; once ``at`` steps are logged and a checkpoint exists, SIGKILL it.
    Returns how it ended ("killed at ..." or "finished": the kill came too late)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                assert proc.returncode == 0, out[-3000:]
                return "finished"
            done = _metric_steps(run / "metrics.jsonl", key)
            if done >= at and _steps(run / "checkpoints"):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                assert proc.returncode == -signal.SIGKILL
                return f"killed at step >= {done}"
            time.sleep(0.05)
        raise AssertionError(f"{cmd}: no progress in {timeout} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def _sft_child(run: Path, resume: bool, delay: float = 0.25) -> list[str]:
    code = SFT_CHILD.format(
        tests=str(TESTS),
        config=str(ROOT / "configs" / "tiny.yaml"),
        over=SFT_OVER,
        out=str(run),
        resume=resume,
        delay=delay,
    )
    return [sys.executable, "-c", code]


def test_sft_kill9_then_resume_equals_uninterrupted(tmp_path: Path, records, lora) -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", SFT_OVER)
    at = kill_steps().randint(3, 12)
    run = tmp_path / "killed"
    how = kill_at(_sft_child(run, resume=False), run, at, "loss")
    kept = _steps(run / "checkpoints")
    assert kept, how
    done = train(cfg, run, resume=True, train_records=records(), progress=False)
    ref = train(cfg, tmp_path / "ref", train_records=records(), progress=False)
    assert done.steps == ref.steps == 14, how
    n = len(done.losses)
    np.testing.assert_allclose(done.losses, ref.losses[14 - n :], rtol=1e-5, err_msg=how)
    for a, b in zip(lora(done.model), lora(ref.model), strict=True):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7), f"{how}; checkpoints {kept}"


@pytest.mark.slow
def test_sft_killed_twice_including_during_resume(tmp_path: Path, records, lora) -> None:
    cfg = load_config(ROOT / "configs" / "tiny.yaml", SFT_OVER)
    rng = kill_steps()
    run = tmp_path / "killed"
    first = kill_at(_sft_child(run, resume=False), run, rng.randint(3, 6), "loss")
    second = kill_at(_sft_child(run, resume=True), run, rng.randint(8, 12), "loss")
    done = train(cfg, run, resume=True, train_records=records(), progress=False)
    ref = train(cfg, tmp_path / "ref", train_records=records(), progress=False)
    for a, b in zip(lora(done.model), lora(ref.model), strict=True):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7), (first, second)


RL_CHILD = """
import sys, time
from cotune.rl.trainer import GRPOTrainer
_real = GRPOTrainer.train_step
def _slow(self):  # slow each step down so the kill lands mid-run
    time.sleep({delay})
    return _real(self)
GRPOTrainer.train_step = _slow
from cotune.cli import app
sys.argv = ["cotune"] + {args!r}
app()
"""


@pytest.mark.slow
def test_rl_kill9_then_resume_equals_uninterrupted(tmp_path: Path, lora) -> None:
    from typer.testing import CliRunner

    from cotune.cli import app
    from cotune.runs import resolve

    sets = ["rl.steps=6", "rl.checkpoint_every=1", "rl.eval_every=3", "rl.eval_size=4"]
    base = ["rl", "--config", str(ROOT / "configs" / "rl-tiny.yaml"), "--init", "tiny"]
    base += [x for s in sets for x in ("--set", s)]
    run, ref = tmp_path / "killed", tmp_path / "ref"
    at = kill_steps().randint(2, 4)
    code = RL_CHILD.format(delay=1.0, args=base + ["--out", str(run)])
    how = kill_at([sys.executable, "-c", code], run, at, "reward_mean", timeout=600)
    r = CliRunner().invoke(app, base + ["--out", str(run), "--resume"])
    assert r.exit_code == 0, r.output
    assert "resumed from step" in r.output or how == "finished"
    r = CliRunner().invoke(app, base + ["--out", str(ref)])
    assert r.exit_code == 0, r.output
    a, b = json.loads((run / "rl.json").read_text()), json.loads((ref / "rl.json").read_text())
    assert a["steps"] == b["steps"] == 6
    for x, y in zip(lora(resolve(run)), lora(resolve(ref)), strict=True):
        assert np.allclose(x, y, rtol=1e-5, atol=1e-6), how
