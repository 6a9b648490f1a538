"""``cotune export`` through the real CLI: presets, a trained run folder, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import cotune.model as cm
from cotune import export as ex
from cotune.cli import app
from cotune.generate import generate

# the GGUF loader caches converted weights: in the session's temp folder, not ~/.cache
pytestmark = pytest.mark.usefixtures("model_cache")


def run(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def test_cli_gguf_refuse_then_force(tmp_path) -> None:
    out = tmp_path / "gg"
    r = run("--model", "tiny", "--format", "gguf", "--quant", "q8_0", "--out", str(out))
    assert r.exit_code == 0, r.output
    gguf_path = out / ex.GGUF_NAME
    assert r.output.strip().splitlines()[-1] == str(gguf_path)
    assert gguf_path.is_file() and (out / "Modelfile").is_file()
    assert cm.load(str(gguf_path)).config.num_layers == 2
    mtime = gguf_path.stat().st_mtime_ns

    r = run("--model", "tiny", "--format", "gguf", "--out", str(out))
    said = " ".join(r.output.split())  # rich wraps long temp paths at the terminal width
    assert r.exit_code == 2 and "already exists" in said and "--force" in said
    assert gguf_path.stat().st_mtime_ns == mtime

    r = run(
        "--model", "tiny", "--format", "gguf", "--dtype", "f16", "--out", str(out), "--force",
        "--check", "2", "--check-raw",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "greedy agreement with the in-memory model: 2/2" in r.output
    assert "f16" in (out / "cotune_export.json").read_text()


@pytest.mark.parametrize(
    ("args", "quant", "dtype"),
    [
        ([], "q8_0", "f32"),
        (["--quant", "none"], None, "f32"),
        (["--dtype", "f16"], None, "f16"),
        (["--quant", "q8_0", "--dtype", "f16"], "q8_0", "f16"),
    ],
)
def test_cli_gguf_default_is_q8_0(tmp_path, args, quant, dtype) -> None:
    import gguf

    out = tmp_path / "g"
    r = run("--model", "tiny", "--format", "gguf", "--out", str(out), *args)
    assert r.exit_code == 0, r.output
    info = json.loads((out / "cotune_export.json").read_text())
    assert (info["quant"], info["dtype"]) == (quant, dtype)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out / ex.GGUF_NAME).tensors}
    want = "Q8_0" if quant else dtype.upper()
    assert types["blk.0.ffn_down.weight"] == want and types["output_norm.weight"] == "F32"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "safetensors", "--quant", "q8_0"], "--quant needs --format gguf"),
        (["--format", "onnx"], "--format must be one of"),
        (["--dtype", "f64"], "--dtype must be one of"),
    ],
)
def test_cli_bad_options(tmp_path, args, message) -> None:
    r = run("--model", "tiny", "--out", str(tmp_path / "o"), *args)
    assert r.exit_code == 2 and message in r.output
    assert not (tmp_path / "o").exists()


def test_cli_missing_model(tmp_path) -> None:
    r = run("--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and "nope" in r.output and "Traceback" not in r.output


def test_cli_exports_a_trained_run(tmp_path, cfg, records) -> None:
    """A real tiny SFT run: the export equals ``load_run(merged=True)`` (the trainer's own,
    independent merge) weight for weight, and generates the same text."""
    from cotune.train.load import load_run
    from cotune.train.sft import train

    c = cfg("train.steps=6", "train.checkpoint_every=6")
    train(c, tmp_path / "run", train_records=records(16), val_fn=lambda m, r: {}, progress=False)
    out = tmp_path / "hf"
    r = run("--model", str(tmp_path / "run"), "--which", "last", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "merging 12 LoRA adapters" in r.output
    theirs = load_run(tmp_path / "run", which="last", merged=True)
    back = cm.load(str(out))
    a, b = cm.convert.flat_state(back.module), cm.convert.flat_state(theirs.module)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=str(k))
    base = cm.convert.flat_state(cm.load("tiny").module)
    key = ("layers", 0, "mlp", "down_proj", "kernel")
    assert np.abs(a[key] - base[key]).max() > 1e-4  # training moved the merged weights
    prompts = [f"What is {i} + {i + 2}?" for i in range(6)]
    assert generate(back, prompts, max_new_tokens=12) == generate(
        theirs, prompts, max_new_tokens=12
    )
