"""``cotune rl`` end to end on the tiny preset: run folder, checkpoints, exact --resume."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from cotune.commands import rl as rl_cmd
from cotune.rl.policy import has_lora


@pytest.fixture
def cfg_file(tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(12)
        )
    )
    cfg = {
        "data": {"train": [{"path": str(data)}]},
        "lora": {"rank": 2, "alpha": 4},
        "rl": {
            "steps": 4,
            "num_generations": 2,
            "prompts_per_step": 2,
            "max_new_tokens": 6,
            "temperature": 2.0,
            "lr": 1e-3,
            "eval_size": 3,
            "eval_every": 2,
            "checkpoint_every": 2,
            "length_budget_chars": 20,
        },
    }
    path = tmp_path / "rl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(*args: str):
    import typer

    app = typer.Typer()
    app.command()(rl_cmd.rl)
    return CliRunner().invoke(app, list(args))


def test_cli_run_resume_and_refusals(cfg_file, tmp_path) -> None:
    out = tmp_path / "run"
    r = _run("--config", str(cfg_file), "--init", "tiny", "--out", str(out), "--set", "rl.steps=2")
    assert r.exit_code == 0, r.output
    for name in ("config.yaml", "rl.json", "metrics.jsonl", "rl_plot.png", "tb", "checkpoints"):
        assert (out / name).exists(), name
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_accuracy" in x for x in lines) and any("reward_mean" in x for x in lines)

    # an existing run folder is never silently overwritten
    r = _run("--config", str(cfg_file), "--init", "tiny", "--out", str(out))
    assert r.exit_code == 2 and "--resume" in r.output

    # a resume that would change what the next steps compute is refused, the run untouched
    saved = {n: (out / n).read_bytes() for n in ("config.yaml", "metrics.jsonl", "rl.json")}
    base = ("--config", str(cfg_file), "--init", "tiny", "--out", str(out))
    r = _run(*base, "--resume", "--set", "rl.lr=5e-4", "--set", "rl.checkpoint_every=1")
    assert r.exit_code == 2, r.output
    msg = " ".join(r.output.split())
    assert "rl.lr: 0.001 -> 0.0005" in msg and "--force-config" in msg
    assert "checkpoint_every" not in msg  # logging and saving may change
    assert {n: (out / n).read_bytes() for n in saved} == saved
    r = _run(*base, "--force-config")
    assert r.exit_code == 2 and "only applies with --resume" in r.output

    r = _run("--config", str(cfg_file), "--init", "tiny", "--out", str(out), "--resume")
    assert r.exit_code == 0, r.output
    assert "resumed from step 2" in r.output
    meta = json.loads((out / "rl.json").read_text())
    assert meta["steps"] == 4 and len(meta["evals"]) == 3  # step 0, 2, 4

    # the trained policy loads back from the run folder
    from cotune.runs import resolve

    model = resolve(out)
    assert has_lora(model) and model.meta["step"] == 4


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(cfg_file, tmp_path) -> None:
    """Same questions, seeds and restored weights: resuming changes nothing (~60 s)."""
    out = tmp_path / "run"
    assert (
        _run(
            "--config", str(cfg_file), "--init", "tiny", "--out", str(out), "--set", "rl.steps=2"
        ).exit_code
        == 0
    )
    r = _run("--config", str(cfg_file), "--init", "tiny", "--out", str(out), "--resume")
    assert r.exit_code == 0, r.output
    full = tmp_path / "full"
    r = _run("--config", str(cfg_file), "--init", "tiny", "--out", str(full))
    assert r.exit_code == 0, r.output
    a = json.loads((out / "rl.json").read_text())
    b = json.loads((full / "rl.json").read_text())
    assert a["steps"] == b["steps"] == 4
    assert a["last_reward"] == pytest.approx(b["last_reward"], abs=1e-6)
    assert [e["eval_accuracy"] for e in a["evals"]] == [e["eval_accuracy"] for e in b["evals"]]


def test_what_a_grpo_resume_may_change() -> None:
    """GRPO's own settings count, the SFT-only ones do not, except the matmul precision."""
    from cotune.rl.run import rl_resume_free

    for key in ("rl.lr", "rl.beta", "rl.num_generations", "lora.rank", "format.template",
                "data.train", "data.seed", "model.name", "train.bf16_matmul"):  # fmt: skip
        assert not rl_resume_free(key), key
    for key in ("rl.eval_every", "rl.checkpoint_every", "data.val", "optim.lr",
                "train.batch_size", "eval.max_new_tokens", "mesh.tp"):  # fmt: skip
        assert rl_resume_free(key), key


def test_cli_bad_config_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl:\n  stpes: 3\n")
    r = _run("--config", str(bad), "--init", "tiny", "--out", str(tmp_path / "x"))
    assert r.exit_code == 2
    assert "rl.stpes" in r.output and "unknown key" in r.output
