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
    assert "eval.calculator" not in r.output  # a preset was not trained for the calculator
    assert yaml.safe_load((out / "config.yaml").read_text())["eval"]["calculator"] is False
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
    """GRPO's own settings count, the SFT-only ones do not, except the matmul precision and
    whether rollouts use the calculator."""
    from cotune.rl.run import rl_resume_free

    for key in ("rl.lr", "rl.beta", "rl.num_generations", "lora.rank", "format.template",
                "data.train", "data.seed", "model.name", "train.bf16_matmul",
                "eval.calculator"):  # fmt: skip
        assert not rl_resume_free(key), key
    for key in ("rl.eval_every", "rl.checkpoint_every", "data.val", "optim.lr",
                "train.batch_size", "eval.max_new_tokens", "mesh.tp"):  # fmt: skip
        assert rl_resume_free(key), key


def test_an_init_trained_for_the_calculator_keeps_it(cfg_file, tmp_path, cfg, records) -> None:
    """An SFT run trained with ``eval.calculator: true`` turns it on for GRPO (recorded in
    the RL run's config.yaml, so its policy generates with it too), a resume cannot switch
    it, and an explicit ``--set eval.calculator=false`` wins."""
    from cotune.runs import resolve
    from cotune.train.sft import train

    sft = tmp_path / "sft"
    c = cfg("train.steps=1", "train.checkpoint_every=1", "eval.calculator=true")
    train(c, sft, train_records=records(8), val_fn=lambda m, r: {}, progress=False)

    out = tmp_path / "rl"
    base = ("--config", str(cfg_file), "--init", str(sft), "--which", "last", "--out", str(out))
    small = ("--set", "rl.steps=1", "--set", "rl.eval_size=1")
    r = _run(*base, *small)
    assert r.exit_code == 0, r.output
    assert "eval.calculator: on" in " ".join(r.output.split())
    assert yaml.safe_load((out / "config.yaml").read_text())["eval"]["calculator"] is True
    assert resolve(out).meta["calculator"] is True  # `cotune generate --model` defaults to it

    r = _run(*base, *small, "--resume", "--set", "eval.calculator=false")
    assert r.exit_code == 2, r.output
    assert "eval.calculator: true -> false" in " ".join(r.output.split())

    off = tmp_path / "rl-off"
    r = _run(*base[:-1], str(off), *small, "--set", "eval.calculator=false")
    assert r.exit_code == 0, r.output
    assert "eval.calculator: on" not in " ".join(r.output.split())
    assert yaml.safe_load((off / "config.yaml").read_text())["eval"]["calculator"] is False
    assert resolve(off).meta["calculator"] is False


def test_cli_bad_config_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl:\n  stpes: 3\n")
    r = _run("--config", str(bad), "--init", "tiny", "--out", str(tmp_path / "x"))
    assert r.exit_code == 2
    assert "rl.stpes" in r.output and "unknown key" in r.output
