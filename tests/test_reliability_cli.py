"""Bad input at every command and in the config never becomes a traceback (issue 7).

Each case runs a real ``cotune`` command in-process with typer's ``CliRunner`` and checks:
a non-zero exit, a message naming the file / line / key, and no escaped exception. Config
validation (unknown keys, wrong types, impossible values, a mesh that does not fit the
machine) fails before any compute, naming the key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotune.cli import app
from cotune.config import ConfigError, MeshCfg, load_config
from cotune.train.mesh import check_mesh, make_mesh

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"
RL_TINY = ROOT / "configs" / "rl-tiny.yaml"


def squash(s: str) -> str:
    """Output without whitespace: rich wraps long paths anywhere."""
    return re.sub(r"\s", "", s)


def run_cli(args: list[str]):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_failure(r, *names: str) -> None:
    out = r.output
    assert r.exit_code != 0, out
    # an escaped exception would be in r.exception (CliRunner swallows the traceback)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in out
    for n in names:
        assert squash(str(n)) in squash(out), f"{n!r} not named in:\n{out}"


# --------------------------------------------------------------------------- bad files


@pytest.fixture
def bad(tmp_path: Path) -> dict[str, Path]:
    files = {
        "yaml": ("bad.yaml", "lora: [\n  rank: 4\n"),
        "not_utf8": ("latin.yaml", None),
        "jsonl": ("data.jsonl", '{"question": "q", "reasoning": "r", "answer": "1"}\n{oops\n'),
        "q_int": ("qint.jsonl", '{"question": 7, "answer": "1"}\n'),
        "csv": ("gold.csv", "q,a\n1,2\n"),
        "preds": ("preds.jsonl", '{"id": "a", "completion": 5}\n'),
        "empty": ("empty.jsonl", ""),
    }
    out = {}
    for k, (name, text) in files.items():
        p = tmp_path / name
        if text is None:
            p.write_bytes(b"lora:\n  rank: \xe9\n")
        else:
            p.write_text(text, encoding="utf-8")
        out[k] = p
    return out


def data_config(tmp_path: Path, data_file: Path, base: Path = TINY, **extra) -> Path:
    import yaml

    cfg = yaml.safe_load(base.read_text())
    cfg["data"]["train"] = [{"path": str(data_file), **extra}]
    p = tmp_path / f"cfg-{data_file.stem}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_train_bad_inputs(tmp_path: Path, bad) -> None:
    out = tmp_path / "run"
    missing = tmp_path / "nope.yaml"
    assert_clean_failure(run_cli(["train", "-c", missing, "-o", out]), missing, "not found")
    assert_clean_failure(run_cli(["train", "-c", bad["yaml"], "-o", out]), bad["yaml"], "YAML")
    assert_clean_failure(run_cli(["train", "-c", bad["not_utf8"], "-o", out]), bad["not_utf8"])
    r = run_cli(["train", "-c", TINY, "-o", out, "--set", "lora.rnak=3"])
    assert_clean_failure(r, "lora.rnak", "unknown key")
    r = run_cli(["train", "-c", TINY, "-o", out, "--set", "optim.lr"])
    assert_clean_failure(r, "optim.lr", "key=value")
    r = run_cli(["train", "-c", data_config(tmp_path, bad["jsonl"]), "-o", out, "--dry-run"])
    assert_clean_failure(r, f"{bad['jsonl']}:2", "JSON")
    r = run_cli(["train", "-c", data_config(tmp_path, bad["q_int"]), "-o", out])
    assert_clean_failure(r, f"{bad['q_int']}:1", "question")
    r = run_cli(["train", "-c", data_config(tmp_path, tmp_path / "gone.jsonl"), "-o", out])
    assert_clean_failure(r, tmp_path / "gone.jsonl", "not found")
    r = run_cli(["train", "-c", TINY, "-o", out, "--set", "mesh.fsdp=64"])
    assert_clean_failure(r, "mesh.fsdp", "device")
    assert not (out / "checkpoints").exists()  # failed before anything was written


def test_rl_bad_inputs(tmp_path: Path, bad) -> None:
    out = tmp_path / "rl"
    base = ["rl", "--init", "tiny", "--out", out]
    missing = tmp_path / "nope.yaml"
    assert_clean_failure(run_cli(base + ["--config", missing]), missing, "not found")
    assert_clean_failure(run_cli(base + ["--config", bad["yaml"]]), bad["yaml"], "YAML")
    r = run_cli(base + ["--config", RL_TINY, "--set", "rl.stesp=3"])
    assert_clean_failure(r, "rl.stesp", "unknown key")
    r = run_cli(base + ["--config", RL_TINY, "--set", "rl.num_generations=1"])
    assert_clean_failure(r, "rl.num_generations")
    r = run_cli(base + ["--config", data_config(tmp_path, bad["jsonl"], RL_TINY)])
    assert_clean_failure(r, f"{bad['jsonl']}:2", "JSON")
    r = run_cli(base + ["--config", data_config(tmp_path, bad["q_int"], RL_TINY)])
    assert_clean_failure(r, f"{bad['q_int']}:1", "question")
    r = run_cli(["rl", "--init", str(tmp_path / "no-such-run"), "--out", out, "--config", RL_TINY])
    assert_clean_failure(r, "no-such-run")


def test_quickstart_bad_inputs(tmp_path: Path, bad) -> None:
    out = tmp_path / "qs"
    missing = tmp_path / "nope.yaml"
    r = run_cli(["quickstart", "--out", out, "--config", missing])
    assert_clean_failure(r, missing, "not found")
    r = run_cli(["quickstart", "--out", out, "--config", TINY, "--set", "train.nope=1"])
    assert_clean_failure(r, "train.nope", "unknown key")
    r = run_cli(["quickstart", "--out", out, "--config", data_config(tmp_path, bad["jsonl"], n=5)])
    assert_clean_failure(r, bad["jsonl"])


def test_data_eval_generate_export_bad_inputs(tmp_path: Path, bad) -> None:
    o = tmp_path / "o.jsonl"
    r = run_cli(["data", "import", "jsonl", bad["jsonl"], "--out", o])
    assert_clean_failure(r, f"{bad['jsonl']}:2")
    r = run_cli(["data", "import", "csv", bad["csv"], "--out", o])
    assert_clean_failure(r, f"{bad['csv']}:1", "question")
    r = run_cli(["data", "import", "bogus-kind", bad["jsonl"], "--out", o])
    assert_clean_failure(r, "bogus-kind")
    assert_clean_failure(run_cli(["data", "validate", bad["jsonl"]]), f"{bad['jsonl']}:2")
    assert_clean_failure(run_cli(["data", "show", bad["q_int"]]), f"{bad['q_int']}:1")
    assert_clean_failure(run_cli(["data", "show", tmp_path / "gone.jsonl"]), "gone.jsonl")

    ev = ["eval", "--out", tmp_path / "rep"]
    r = run_cli(ev + ["--data", bad["csv"], "--predictions", bad["preds"]])
    assert_clean_failure(r, bad["csv"])
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"id": "a", "question": "1+1?", "answer": "2"}) + "\n")
    r = run_cli(ev + ["--data", gold, "--predictions", bad["preds"]])
    assert_clean_failure(r, f"{bad['preds']}:1", "completion")
    r = run_cli(ev + ["--data", gold, "--predictions", bad["empty"]])
    assert_clean_failure(r, bad["empty"])
    r = run_cli(ev + ["--data", tmp_path / "gone.jsonl", "--predictions", bad["preds"]])
    assert_clean_failure(r, "gone.jsonl")

    r = run_cli(["generate", "--model", str(tmp_path / "no-model"), "2+2?"])
    assert_clean_failure(r, "no-model")
    r = run_cli(["export", "--model", tmp_path / "no-run", "--out", tmp_path / "exp"])
    assert_clean_failure(r, "no-run")


# --------------------------------------------------------------------------- config values


@pytest.mark.parametrize(
    "override,key",
    [
        ("lora.rank=0", "lora.rank"),
        ("lora.rank=1.5", "lora.rank"),
        ("lora.alpha=-1", "lora.alpha"),
        ("optim.lr=-1e-4", "optim.lr"),
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=fast", "optim.lr"),
        ("optim.grad_accum=0", "optim.grad_accum"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.steps=-3", "train.steps"),
        ("train.bogus=1", "train.bogus"),
        ("format.max_seq_len=4", "format.max_seq_len"),
        ("format.schema=xml", "format.schema"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("data.train=[{path: a.jsonl, generator: arithmetic}]", "data.train.0"),
        ("mesh.tp=0", "mesh.tp"),
        ("mesh.fsdp=-1", "mesh.fsdp"),
        ("rl.reward_weights={speed: 1}", "reward_weights"),
        ("model.dtype=int8", "model.dtype"),
        ("lora=3", "lora"),
    ],
)
def test_impossible_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(TINY, [override])
    assert key in str(e.value) and str(TINY) in str(e.value)


def test_mesh_must_fit_the_machine() -> None:
    with pytest.raises(ConfigError, match=r"mesh.fsdp x mesh.tp: 4 x 2 = 8 devices.* 4 device"):
        check_mesh(MeshCfg(fsdp=4, tp=2), n_devices=4)
    with pytest.raises(ConfigError, match=r"mesh.tp: 2 devices requested.* 1 device"):
        check_mesh(MeshCfg(tp=2), n_devices=1)
    with pytest.raises(ConfigError, match=r"train.batch_size: 6 rows .* mesh.fsdp=4"):
        check_mesh(MeshCfg(fsdp=4), batch_size=6, n_devices=8)
    assert check_mesh(MeshCfg(), batch_size=8, n_devices=8) == (8, 1)
    assert check_mesh(MeshCfg(fsdp=2, tp=2), batch_size=4, n_devices=8) == (2, 2)
    import jax

    n = jax.device_count()
    with pytest.raises(ConfigError, match="mesh.fsdp"):
        make_mesh(MeshCfg(fsdp=n + 1))


def test_mesh_error_comes_before_any_compute(tmp_path: Path, monkeypatch) -> None:
    import cotune.model
    from cotune.train.sft import train

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the config was checked")

    monkeypatch.setattr(cotune.model, "load", no_load)
    with pytest.raises(ConfigError, match="mesh.fsdp"):
        train(load_config(TINY, ["mesh.fsdp=64"]), tmp_path / "r")
    assert not (tmp_path / "r").exists()
