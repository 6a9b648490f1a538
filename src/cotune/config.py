"""Typed run configuration: YAML files map 1:1 onto these pydantic models.

Unknown keys, wrong types and impossible values fail before any compute, with the dotted
key in the message (``lora.rank: must be >= 1``). ``--set a.b=value`` overrides are parsed
as YAML scalars, so ``--set optim.lr=3e-4`` and ``--set data.difficulty=[1,2]`` both work.

Numbers are checked more strictly than pydantic's defaults: ``inf``/``nan`` are refused in
every float (they only surface later as a diverged run), and ``true``/``false`` are refused
where a number is expected (pydantic would read ``steps: true`` as 1). Booleans must be
YAML booleans (``pack: 1`` is refused rather than guessed). An empty config file is an
error: it would otherwise mean "every default", i.e. the real 270M model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (file and key included)."""


def _not_bool(v: Any) -> Any:
    # bool is a subclass of int: without this, pydantic reads `steps: true` as 1.
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {str(v).lower()}")
    return v


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
Bool = StrictBool
Seed = Annotated[Int, Field(ge=0, le=2**32 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _known_tasks(names: list[str]) -> None:
    from cotune.data.generators import resolve_tasks

    for name in names:
        resolve_tasks([name])  # ValueError naming the known tasks and groups


class ModelCfg(_Strict):
    name: str = Field(
        "gemma3-270m", min_length=1, description="preset name or local path to weights"
    )
    dtype: Literal["float32", "bfloat16"] = "float32"


class DataSource(_Strict):
    """One ingredient of the training mixture: a JSONL file or a generator."""

    path: str | None = Field(None, min_length=1)
    generator: str | None = None  # e.g. "arithmetic", "word_problems", "expressions", "equations"
    n: Int | None = Field(None, ge=1)
    weight: Float = Field(1.0, gt=0)

    @field_validator("generator")
    @classmethod
    def _generator_known(cls, v: str | None) -> str | None:
        if v is not None:
            _known_tasks([v])
        return v

    @model_validator(mode="after")
    def _one_of(self) -> DataSource:
        if (self.path is None) == (self.generator is None):
            raise ValueError("give exactly one of 'path' or 'generator'")
        return self


class DataCfg(_Strict):
    train: list[DataSource] = Field(
        default_factory=lambda: [DataSource(generator="arithmetic", n=2000)], min_length=1
    )
    # JSONL of canonical records; None = split off `val_fraction`
    val: str | None = Field(None, min_length=1)
    val_fraction: Float = Field(0.05, ge=0, lt=1)
    val_size_for_accuracy: Int = Field(32, ge=0)
    seed: Seed = 0
    difficulty: list[Int] | None = Field(None, min_length=1)
    # Levels of the quickstart's generated test sets; None = the training `difficulty`.
    test_difficulty: list[Int] | None = Field(None, min_length=1)
    # Shape of the arithmetic in generated traces (cotune.data.steps; docs/recipe.md).
    style: Literal["small", "compact", "uniform", "tool"] = "small"

    @field_validator("difficulty", "test_difficulty")
    @classmethod
    def _difficulty_known(cls, v: list[int] | None) -> list[int] | None:
        from cotune.data.generators import DIFFICULTIES

        if v is not None and any(d not in DIFFICULTIES for d in v):
            raise ValueError(f"each level must be one of {list(DIFFICULTIES)}, got {v}")
        return v


class FormatCfg(_Strict):
    schema_: Literal["tags", "plain"] = Field("tags", alias="schema")
    template: Literal["chat", "plain"] = "chat"
    max_seq_len: Int = Field(256, ge=16)
    max_reasoning_tokens: Int | None = Field(None, ge=1)
    overlong: Literal["drop", "truncate_reasoning"] = "drop"
    pack: Bool = True

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class LoraCfg(_Strict):
    enabled: Bool = True  # False = full fine-tune
    rank: Int = Field(16, ge=1)
    alpha: Float = Field(32.0, gt=0)
    targets: str = Field(
        ".*q_einsum|.*kv_einsum|.*qkv_einsum|.*attn_vec_einsum|.*gate_proj|.*up_proj|.*down_proj",
        min_length=1,
        description="regex over module paths (Qwix)",
    )

    @field_validator("targets")
    @classmethod
    def _targets_regex(cls, v: str) -> str:
        import re

        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression ({e})") from None
        return v


class OptimCfg(_Strict):
    lr: Float = Field(2e-4, gt=0)
    weight_decay: Float = Field(0.0, ge=0)
    warmup_steps: Int = Field(10, ge=0)
    min_lr_ratio: Float = Field(0.1, ge=0, le=1)
    grad_clip: Float | None = Field(1.0, gt=0)
    grad_accum: Int = Field(1, ge=1)
    lora_plus_ratio: Float = Field(
        1.0,
        ge=1,
        description="LoRA+: the adapters' B matrices learn this many times faster than A",
    )


class MeshCfg(_Strict):
    fsdp: Int | None = Field(None, ge=1, description="None = all devices")
    tp: Int = Field(1, ge=1)


class TrainCfg(_Strict):
    batch_size: Int = Field(8, ge=1, description="sequences (packed rows) per step")
    # The whole data plan is built in memory: the upper bounds catch a typo (1e30), not a
    # real run.
    steps: Int | None = Field(None, ge=1, le=10_000_000, description="None = epochs over the data")
    epochs: Float = Field(1.0, gt=0, le=10_000)
    seed: Seed = 0
    log_every: Int = Field(1, ge=1)
    eval_every: Int | None = Field(None, ge=1)
    checkpoint_every: Int | None = Field(50, ge=1)
    keep_checkpoints: Int = Field(2, ge=1)
    bf16_matmul: Bool = Field(False, description="bf16 operands, f32 accumulation")
    # Full fine-tune only (lora.enabled: false). Gemma's tied embedding is most of a small
    # model (168M of the 270M's 268M parameters): training it triples the cost of the output
    # projection and the optimizer state, for a vocabulary a reasoning format barely uses.
    train_embedding: Bool = Field(False, description="full fine-tune: train the tied embedding")
    bucket_multiple: Int = Field(
        64, ge=1, description="trained-position gather bucket is rounded up to this"
    )
    # True for traces the model will write with the calculator (data.style: tool): the
    # values after each claim's "=" stay in the sequence but are not trained, since the
    # calculator writes them (cotune.train.batches).
    mask_values: Bool = Field(False, description="do not train the values of claims")
    # "data": the training loss's softmax runs over the tokens that occur as targets in the
    # run's training data plus `loss_negatives` tokens drawn uniformly from the rest of
    # Gemma's 262,144-token vocabulary each step, weighted to stand for all of the rest (a
    # sampled softmax). The output projection is then a few percent of its full cost (it is
    # a fifth of a LoRA step on the 270M). Without the drawn tokens nothing holds the
    # unused tokens' logits down and generation degenerates; with them it still does on
    # some questions (the quickstart at 220 steps: 25 of 256 test completions), so no
    # shipped recipe uses it (docs/recipe.md). Evaluation and validation loss stay over
    # the full vocabulary.
    loss_vocab: Literal["full", "data"] = Field(
        "full", description="softmax of the training loss over the whole vocabulary or the data's"
    )
    loss_negatives: Int = Field(
        16384, ge=1, description="loss_vocab: data: tokens drawn from the rest per micro-batch"
    )


class EvalCfg(_Strict):
    max_new_tokens: Int = Field(128, ge=1)
    batch_size: Int = Field(16, ge=1)
    limit: Int | None = Field(None, ge=1)
    few_shot: Int = Field(0, ge=0)
    samples: Int = Field(1, ge=1)
    temperature: Float = Field(0.0, ge=0)
    # Generate with the calculator filling in each claim's value (cotune.calculator): for a
    # model trained on `tool` traces, which writes the plan and leaves the arithmetic to it.
    # A run records it, so `cotune generate/chat/eval` on the run use it by default.
    calculator: Bool = Field(False, description="generate with the calculator")


class RLCfg(_Strict):
    steps: Int = Field(20, ge=1)
    num_generations: Int = Field(4, ge=2)
    beta: Float = Field(0.04, ge=0)
    epsilon: Float = Field(0.2, gt=0)
    temperature: Float = Field(0.9, gt=0)
    max_new_tokens: Int = Field(96, ge=1)
    reward_weights: dict[str, Float] = Field(
        default_factory=lambda: {"format": 0.5, "correct": 2.0, "steps": 0.5, "length": 0.2}
    )
    prompts_per_step: Int = Field(2, ge=1, description="questions per step (x num_generations)")
    num_iterations: Int = Field(1, ge=1, description="policy updates per rollout batch (mu)")
    micro_batch: Int | None = Field(
        4, ge=1, description="rollouts per forward/backward pass (memory); None = all at once"
    )
    lr: Float = Field(2e-5, gt=0)
    warmup_steps: Int = Field(0, ge=0)
    grad_clip: Float | None = Field(1.0, gt=0)
    kl_mode: Literal["kl", "mse_kl", "low_var_kl"] = "low_var_kl"
    tasks: list[str] | None = Field(
        None, min_length=1, description="generator names; None = data.train's"
    )
    train_size: Int = Field(512, ge=1, description="training questions drawn from the tasks")
    eval_size: Int = Field(32, ge=0, description="held-out questions for answer accuracy")
    eval_every: Int = Field(10, ge=1)
    eval_max_new_tokens: Int | None = Field(None, ge=1, description="None = max_new_tokens")
    length_budget_chars: Int | None = Field(600, ge=1)
    length_budget_tokens: Int | None = Field(None, ge=1)
    log_every: Int = Field(1, ge=1)
    checkpoint_every: Int = Field(10, ge=1)
    keep_checkpoints: Int = Field(2, ge=1)
    seed: Seed = 0

    @field_validator("tasks")
    @classmethod
    def _tasks_known(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            _known_tasks(v)
        return v

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
        msg = msg.removeprefix("Value error, ")
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
        if loaded is None or loaded == {}:
            # Not "all defaults": that would silently mean the real 270M with default data.
            raise ConfigError(
                f"{p}: empty config (no sections); start from configs/tiny.yaml or "
                "configs/quickstart.yaml"
            )
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


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and prefix.count(".") < 1:  # sections, not value dicts
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_changes(old: RunConfig, new: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every setting that differs, in file order.

    Values are compared as their YAML form (``data.train`` as one list, ``rl.reward_weights``
    as one mapping), so a reordered list counts as a change.
    """
    a = _flatten(old.model_dump(by_alias=True, mode="json"))
    b = _flatten(new.model_dump(by_alias=True, mode="json"))
    return [(k, a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
