"""Typed run configuration: YAML files map 1:1 onto these pydantic models.

Unknown keys, wrong types and impossible values fail before any compute, with the dotted
key in the message (``lora.rank: must be >= 1``). ``--set a.b=value`` overrides are parsed
as YAML scalars, so ``--set optim.lr=3e-4`` and ``--set lora.targets=[q,v]`` both work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (file and key included)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelCfg(_Strict):
    name: str = Field("gemma3-270m", description="preset name or local path to weights")
    dtype: Literal["float32", "bfloat16"] = "float32"


class DataSource(_Strict):
    """One ingredient of the training mixture: a JSONL file or a generator."""

    path: str | None = None
    generator: str | None = None  # e.g. "arithmetic", "word_problems", "expressions", "equations"
    n: int | None = Field(None, ge=1)
    weight: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _one_of(self) -> DataSource:
        if (self.path is None) == (self.generator is None):
            raise ValueError("give exactly one of 'path' or 'generator'")
        return self


class DataCfg(_Strict):
    train: list[DataSource] = Field(
        default_factory=lambda: [DataSource(generator="arithmetic", n=2000)]
    )
    val: str | None = None  # JSONL of canonical records; None = split off `val_fraction`
    val_fraction: float = Field(0.05, ge=0, lt=1)
    val_size_for_accuracy: int = Field(32, ge=0)
    seed: int = 0
    difficulty: list[int] | None = None
    # Levels of the quickstart's generated test sets; None = the training `difficulty`.
    test_difficulty: list[int] | None = None


class FormatCfg(_Strict):
    schema_: Literal["tags", "plain"] = Field("tags", alias="schema")
    template: Literal["chat", "plain"] = "chat"
    max_seq_len: int = Field(256, ge=16)
    max_reasoning_tokens: int | None = Field(None, ge=1)
    overlong: Literal["drop", "truncate_reasoning"] = "drop"
    pack: bool = True

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LoraCfg(_Strict):
    enabled: bool = True  # False = full fine-tune
    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    targets: str = Field(
        ".*q_einsum|.*kv_einsum|.*qkv_einsum|.*attn_vec_einsum|.*gate_proj|.*up_proj|.*down_proj",
        description="regex over module paths (Qwix)",
    )


class OptimCfg(_Strict):
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    grad_accum: int = Field(1, ge=1)


class MeshCfg(_Strict):
    fsdp: int | None = Field(None, ge=1, description="None = all devices")
    tp: int = Field(1, ge=1)


class TrainCfg(_Strict):
    batch_size: int = Field(8, ge=1, description="sequences (packed rows) per step")
    steps: int | None = Field(None, ge=1, description="None = epochs over the data")
    epochs: float = Field(1.0, gt=0)
    seed: int = 0
    log_every: int = Field(1, ge=1)
    eval_every: int | None = Field(None, ge=1)
    checkpoint_every: int | None = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    bf16_matmul: bool = Field(False, description="bf16 operands, f32 accumulation")
    bucket_multiple: int = Field(
        64, ge=1, description="trained-position gather bucket is rounded up to this"
    )


class EvalCfg(_Strict):
    max_new_tokens: int = Field(128, ge=1)
    batch_size: int = Field(16, ge=1)
    limit: int | None = Field(None, ge=1)
    few_shot: int = Field(0, ge=0)
    samples: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0)


class RLCfg(_Strict):
    steps: int = Field(20, ge=1)
    num_generations: int = Field(4, ge=2)
    beta: float = Field(0.04, ge=0)
    epsilon: float = Field(0.2, gt=0)
    temperature: float = Field(0.9, gt=0)
    max_new_tokens: int = Field(96, ge=1)
    reward_weights: dict[str, float] = Field(
        default_factory=lambda: {"format": 0.5, "correct": 2.0, "steps": 0.5, "length": 0.2}
    )
    prompts_per_step: int = Field(2, ge=1, description="questions per step (x num_generations)")
    num_iterations: int = Field(1, ge=1, description="policy updates per rollout batch (mu)")
    lr: float = Field(2e-5, gt=0)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    kl_mode: Literal["kl", "mse_kl", "low_var_kl"] = "low_var_kl"
    tasks: list[str] | None = Field(None, description="generator names; None = data.train's")
    train_size: int = Field(512, ge=1, description="training questions drawn from the tasks")
    eval_size: int = Field(32, ge=0, description="held-out questions for answer accuracy")
    eval_every: int = Field(10, ge=1)
    eval_max_new_tokens: int | None = Field(None, ge=1, description="None = max_new_tokens")
    length_budget_chars: int | None = Field(600, ge=1)
    length_budget_tokens: int | None = Field(None, ge=1)
    log_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _known_rewards(self) -> RLCfg:
        known = ("format", "correct", "steps", "length")
        bad = sorted(set(self.reward_weights) - set(known))
        if bad:
            raise ValueError(f"reward_weights: unknown reward(s) {bad}; expected some of {known}")
        return self


class RunConfig(_Strict):
    model: ModelCfg = Field(default_factory=ModelCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    format: FormatCfg = Field(default_factory=FormatCfg)
    lora: LoraCfg = Field(default_factory=LoraCfg)
    optim: OptimCfg = Field(default_factory=OptimCfg)
    mesh: MeshCfg = Field(default_factory=MeshCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    rl: RLCfg = Field(default_factory=RLCfg)


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section")
        cur = nxt
    cur[keys[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict, values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=1e-4")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(out, key, value)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {key}: {msg}")
    return ConfigError("\n".join(lines))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults), apply ``--set`` overrides, validate."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not UTF-8 text") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        raw = loaded
    raw = _merge(raw, parse_overrides(overrides))
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise _explain(e, source) from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(by_alias=True, mode="json"), sort_keys=False)
