"""8 simulated CPU devices (fsdp=4 x tp=2) train exactly like 1 device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from cotune.config import load_config

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
SCRIPT = """
import json, sys
import jax
from cotune.config import load_config
from cotune.train.sft import train
sys.path.insert(0, {tests!r})
from conftest import sum_records
cfg = load_config({config!r}, {over!r})
res = train(cfg, {out!r}, train_records=sum_records(24), progress=False)
a = res.model.module.layers[0].mlp.gate_proj.kernel_lora_a[...]
print("RESULT" + json.dumps({{"devices": jax.device_count(), "losses": res.losses,
                              "shard_rows": a.sharding.shard_shape(a.shape)[0], "rows": a.shape[0]}}))
"""


def _start(tmp: Path, name: str, over: list[str], devices: int) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    code = SCRIPT.format(
        tests=str(Path(__file__).parent), config=str(CONFIG), over=over, out=str(tmp / name)
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    line = [x for x in out.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def test_fsdp4_tp2_matches_one_device(tmp_path: Path) -> None:
    base = ["train.steps=2", "train.checkpoint_every=100", "train.batch_size=4"]
    load_config(CONFIG, base)  # the overrides are valid
    p1 = _start(tmp_path, "one", base, 1)
    p8 = _start(tmp_path, "eight", base + ["mesh.fsdp=4", "mesh.tp=2"], 8)
    one, eight = _result(p1), _result(p8)
    assert one["devices"] == 1 and eight["devices"] == 8
    assert eight["shard_rows"] * 4 == eight["rows"]  # LoRA A really is split along fsdp
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
