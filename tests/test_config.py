"""Config loading: defaults, overrides, and errors that name the key."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cotune.config import ConfigError, RunConfig, config_changes, load_config, parse_overrides


def test_defaults_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("lora:\n  rank: 8\noptim:\n  lr: 1.0e-3\n")
    cfg = load_config(p, ["lora.rank=4", "train.steps=7", "format.schema=plain"])
    assert isinstance(cfg, RunConfig)
    assert (cfg.lora.rank, cfg.optim.lr, cfg.train.steps) == (4, 1e-3, 7)
    assert cfg.format.schema_ == "plain"


@pytest.mark.parametrize(
    "text,key",
    [
        ("lora:\n  rnak: 8\n", "lora.rnak: unknown key"),
        ("lora:\n  rank: 0\n", "lora.rank"),
        ("optim:\n  lr: -1\n", "optim.lr"),
        ("train:\n  batch_size: lots\n", "train.batch_size"),
        ("bogus: 1\n", "bogus: unknown key"),
        ("- 1\n- 2\n", "mapping"),
        ("lora: [\n", "not valid YAML"),
        ("", "empty config"),
        ("# comments only\n", "empty config"),
        ("optim:\n  lr: .inf\n", "optim.lr: Input should be a finite number"),
        ("optim:\n  lr: .nan\n", "optim.lr: Input should be a finite number"),
        ("rl:\n  reward_weights: {format: .inf}\n", "rl.reward_weights.format"),
        ("train:\n  steps: true\n", "train.steps: expected a number, got true"),
        ("lora:\n  alpha: false\n", "lora.alpha: expected a number"),
        ("data:\n  difficulty: [1, true]\n", "data.difficulty.1: expected a number"),
        ("format:\n  pack: 1\n", "format.pack"),
        ("data:\n  seed: -1\n", "data.seed"),
        ("data:\n  train: []\n", "data.train"),
        ("data:\n  difficulty: [7]\n", "data.difficulty"),
        ("data:\n  train: [{generator: arithmatic}]\n", "data.train.0.generator"),
        ("train:\n  epochs: 0\n", "train.epochs"),
        ("model:\n  name: ''\n", "model.name"),
        ("lora:\n  targets: '('\n", "lora.targets: not a valid regular expression"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert key in str(e.value) and str(p) in str(e.value)


def test_override_errors() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lora.rank"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["lora.nope=1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")


def test_config_changes_names_dotted_keys() -> None:
    a = load_config(None, ["optim.lr=1e-3"])
    b = load_config(None, ["optim.lr=2e-3", "train.steps=9", "rl.reward_weights={format: 1}"])
    assert config_changes(a, a) == []
    got = {k: (x, y) for k, x, y in config_changes(a, b)}
    assert got["optim.lr"] == (1e-3, 2e-3) and got["train.steps"] == (None, 9)
    assert got["rl.reward_weights"][1] == {"format": 1.0}  # a value mapping stays whole


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_config_text(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    p = tmp_path_factory.mktemp("fz") / "c.yaml"
    p.write_text(text, encoding="utf-8")
    try:
        load_config(p)
    except ConfigError as e:
        assert str(p) in str(e)
