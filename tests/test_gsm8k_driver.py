"""bench/gsm8k.py (`make gsm8k`): every stage end to end on the tiny model, resuming, the
results file and table, and the GSM8K test split kept out of training (on the real files)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cotune import data

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "fixtures" / "gsm8k"


def _driver():
    spec = importlib.util.spec_from_file_location("bench_gsm8k", ROOT / "bench" / "gsm8k.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_gsm8k"] = mod
    spec.loader.exec_module(mod)
    return mod


gsm8k = _driver()


@pytest.fixture(scope="module")
def real_data(tmp_path_factory) -> Path:
    """The driver's data files, made from the shipped GSM8K (data/gsm8k/)."""
    out = tmp_path_factory.mktemp("gsm8k") / "data"
    gsm8k.prepare_data(out)
    return out


def test_test_split_never_enters_training(real_data: Path) -> None:
    """What the recipe trains on (SFT and RL read the same data.train and data.val) shares no
    question with GSM8K test, compared as cotune.data.question_key (case, spacing,
    thousands separators, trailing punctuation ignored)."""
    info = json.loads((real_data / "data.json").read_text())
    test = data.read_jsonl(real_data / "test.jsonl")
    assert len(test) == info["test"] == 1319  # the whole test set is evaluated
    raw_test = [
        json.loads(x)["question"]
        for x in (ROOT / "data" / "gsm8k" / "test.jsonl").read_text().splitlines()
    ]
    test_keys = {data.question_key(q) for q in raw_test}
    assert {data.question_key(r.question) for r in test} == test_keys

    driver = gsm8k.Driver(
        config=ROOT / "configs" / "gsm8k.yaml",
        out=real_data.parent,
        results=real_data.parent / "r.json",
        doc=None,
        overrides=[],
        limit=None,
        runner=lambda args: pytest.fail(f"nothing should run: {args}"),
    )
    cfg = driver.cfg
    sources = [Path(s.path) for s in cfg.data.train]
    assert sources == [real_data / "train.jsonl"] and Path(cfg.data.val) == real_data / "val.jsonl"
    assert all(s.generator is None for s in cfg.data.train)
    train = [r for p in sources for r in data.read_jsonl(p)]
    val = data.read_jsonl(real_data / "val.jsonl")
    assert len(train) + len(val) == info["train_kept"] >= 7_300
    train_keys = {data.question_key(r.question) for r in train}
    val_keys = {data.question_key(r.question) for r in val}
    assert not train_keys & test_keys
    assert not val_keys & test_keys
    assert not train_keys & val_keys
    # the 8-shot exemplars are not test questions either
    shots = data.read_jsonl(real_data / "shots.jsonl")
    assert len(shots) == 8 and not {data.question_key(r.question) for r in shots} & test_keys


def _in_process(args: list[str]) -> int:
    from cotune.cli import app

    res = CliRunner().invoke(app, args)
    if res.exit_code != 0:
        print(res.output)
        if res.exception and not isinstance(res.exception, SystemExit):
            raise res.exception
    return res.exit_code


TINY = [
    "model.name=tiny",
    "lora.rank=2",
    "lora.alpha=4",
    "train.steps=2",
    "train.batch_size=2",
    "train.log_every=1",
    "train.checkpoint_every=1",
    "train.eval_every=2",
    "data.val_size_for_accuracy=2",
    "eval.max_new_tokens=6",
    "eval.batch_size=4",
    "rl.steps=2",
    "rl.num_generations=2",
    "rl.prompts_per_step=1",
    "rl.max_new_tokens=6",
    "rl.eval_size=2",
    "rl.eval_every=1",
    "rl.eval_max_new_tokens=6",
    "rl.checkpoint_every=1",
]


def test_driver_end_to_end_on_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """All four stages through the real commands (in this process, to share one JAX start),
    on the shipped GSM8K sample (40 train, 20 test lines) so the tiny model trains on few
    records: the plumbing, not the numbers."""
    out = tmp_path / "run"
    doc = tmp_path / "gsm8k.md"
    doc.write_text(f"intro\n{gsm8k.DOC_START}\nold\n{gsm8k.DOC_END}\nrest\n")
    ran: list[list[str]] = []

    def runner(args: list[str]) -> int:
        ran.append(args)
        return _in_process(args)

    argv = ["--limit", "3", "--out", str(out), "--doc", str(doc), "--gsm8k", str(SAMPLE)]
    argv += [x for s in TINY for x in ("--set", s)]
    assert gsm8k.main(argv, runner=runner) == 0
    res = json.loads((out / "gsm8k.json").read_text())  # a smoke run never writes bench/results
    assert res["limit"] == 3
    for stage in gsm8k.STAGES:
        entry = res["stages"][stage]
        alone = entry["model_alone"]
        assert alone["status"] == "done" and alone["n"] == 3
        assert 0 <= alone["strict_accuracy"] <= 1 and len(alone["ci95"]) == 2
        assert alone["command"].startswith("cotune eval ") and "--limit 3" in alone["command"]
        calc = entry["calculator"]  # the same evaluation with the calculator, its own entry
        assert calc["status"] == "done" and calc["n"] == 3
        assert (alone["calculator"], calc["calculator"]) == ("off", "on")
        same_but_calculator = (
            alone["command"]
            .replace(f"/eval/{stage} ", f"/eval/{stage}_calculator ")
            .replace(" --limit", " --calculator --limit")
        )
        assert calc["command"] == same_but_calculator
        assert entry["wall_seconds"] > 0 and entry["commands"]
    assert "--few-shot 8" in res["stages"]["base_8shot"]["model_alone"]["command"]
    assert res["stages"]["sft"]["train"]["command"].startswith("cotune train --config ")
    assert res["stages"]["grpo"]["train"]["command"].startswith("cotune rl --config ")
    assert res["stages"]["grpo"]["heldout_accuracy_during_rl"]
    assert not any("test.jsonl" in a for args in ran if args[0] in ("train", "rl") for a in args)
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert "after SFT + GRPO | model alone |" in text and "smoke run" in text

    # run again: every finished stage is skipped, nothing is recomputed
    ran.clear()
    assert gsm8k.main(argv, runner=runner) == 0
    assert ran == []

    # killed after an evaluation wrote its report but before the driver recorded it: the
    # report is reused, not recomputed
    res["stages"]["sft"].pop("model_alone")
    (out / "gsm8k.json").write_text(json.dumps(res))
    assert gsm8k.main(argv, runner=runner) == 0
    assert ran == []
    assert json.loads((out / "gsm8k.json").read_text())["stages"]["sft"]["model_alone"]["n"] == 3
    # killed while the evaluation ran (no fingerprint written): it runs again, replacing the
    # partial folder
    res = json.loads((out / "gsm8k.json").read_text())
    assert res["stages"]["sft"].pop("model_alone")["seconds"] > 0  # kept with the report
    (out / "gsm8k.json").write_text(json.dumps(res))
    (out / "eval" / "sft.fingerprint.json").unlink()
    assert gsm8k.main(argv, runner=runner) == 0
    assert [a[0] for a in ran] == ["eval"] and "--force" in ran[0]

    # a report of the other mode where the calculator's belongs is refused, never recorded
    report_path = out / "eval" / "sft_calculator" / "report.json"
    report = json.loads(report_path.read_text())
    assert report["meta"]["calculator"] == "on"
    report["meta"]["calculator"] = "off"
    report_path.write_text(json.dumps(report))
    res = json.loads((out / "gsm8k.json").read_text())
    res["stages"]["sft"].pop("calculator")
    (out / "gsm8k.json").write_text(json.dumps(res))
    capsys.readouterr()
    assert gsm8k.main(argv, runner=runner) == 1
    assert "says calculator off, but the calculator entry needs calculator on" in (
        capsys.readouterr().err
    )
    assert "calculator" not in json.loads((out / "gsm8k.json").read_text())["stages"]["sft"]


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gsm8k.main(["--stages", "sft,finetune"])
    assert "unknown ['finetune']" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: tiny}\nlora: {rank: 0}\n")
    code = gsm8k.main(["--config", str(cfg), "--out", str(tmp_path / "o"), "--limit", "1"])
    assert code == 2 and "lora.rank" in capsys.readouterr().err


def test_table_from_results() -> None:
    res = {
        "stages": {
            "sft": {
                "train": {"seconds": 600.0, "command": "cotune train ..."},
                "model_alone": {
                    "status": "done",
                    "strict_accuracy": 0.1,
                    "n": 1319,
                    "ci95": [0.085, 0.118],
                    "format_compliance": 0.99,
                    "format_compliance_ci95": [0.98, 0.995],
                    "step_validity": 0.8,
                    "step_validity_ci95": [0.79, 0.81],
                    "command": "cotune eval --model runs/gsm8k/sft",
                    "seconds": 120.0,
                },
                "calculator": {
                    "status": "not_run",
                    "reason": "not yet measured",
                    "strict_accuracy": None,
                },
            }
        }
    }
    t = gsm8k.table(res)
    assert (
        "| after LoRA SFT | model alone | 10.0% [8.5, 11.8] (n=1319) | 99.0% [98.0, 99.5] "
        "| 80.0% [79.0, 81.0] | 12.0 min | `cotune eval --model runs/gsm8k/sft` |" in t
    )
    assert "| base, 0-shot | model alone | not yet measured |" in t
    assert "| after LoRA SFT | with calculator | not yet measured |" in t
    sft = res["stages"]["sft"]
    sft["train"].update(cpu_seconds=1080.0, resumed=True)
    sft["model_alone"]["cpu_seconds"] = 240.0
    assert "| 12.0 min (CPU 22.0 min), training resumed: the part before the interruption " in (
        gsm8k.table(res)
    )
    # a training time put together by hand says how, in place of the resumed caveat
    sft["train"]["wall_note"] = "both parts counted"
    t = gsm8k.table(res)
    assert "| 12.0 min (CPU 22.0 min), both parts counted |" in t and "interruption" not in t


def test_readme_summary_between_its_markers(tmp_path: Path) -> None:
    res = {
        "updated": "2026-12-03T15:00:00+00:00",
        "stages": {
            "base_0shot": {
                "model_alone": {
                    "status": "done",
                    "strict_accuracy": 0.0,
                    "ci95": [0.0, 0.003],
                    "format_compliance": 0.0,
                    "format_compliance_ci95": [0.0, 0.003],
                    "step_validity": None,
                    "command": "cotune eval ...",
                }
            }
        },
    }
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{gsm8k.SUMMARY_START}\nold\n{gsm8k.SUMMARY_END}\n\nrest\n")
    gsm8k.write_summary(readme, res)
    text = readme.read_text()
    assert text.startswith("# x\n\n") and text.endswith("\n\nrest\n") and "old" not in text
    assert "| base, 0-shot | model alone | 0.0% [0.0, 0.3] | 0.0% [0.0, 0.3] | – |" in text
    assert "| after SFT + GRPO | with calculator | not yet measured | | |" in text
    assert "cotune eval" not in text  # the commands live in docs/gsm8k.md
    readme.write_text("no markers\n")
    with pytest.raises(gsm8k.DriverError, match="GSM8K-SUMMARY:START"):
        gsm8k.write_summary(readme, res)


def test_shipped_readme_table_matches_the_results_file() -> None:
    shipped = json.loads((ROOT / "bench" / "results" / "gsm8k.json").read_text())
    assert gsm8k.summary_table(shipped) in (ROOT / "README.md").read_text()


def test_stage_records_cpu_time_of_its_processes(tmp_path: Path) -> None:
    """The CPU seconds of what a stage ran are measured on the child processes, so a stage
    that shared the machine still reports what it cost."""
    driver = gsm8k.Driver(
        config=ROOT / "configs" / "gsm8k.yaml",
        out=tmp_path,
        results=tmp_path / "r.json",
        doc=None,
        overrides=[],
        limit=None,
        runner=lambda a: subprocess.call(
            [sys.executable, "-c", "sum(i * i for i in range(3_000_000))"]
        ),
        log=lambda m: None,
    )
    wall, cpu = driver._run(["eval"], "x")
    assert 0.05 < cpu <= wall + 0.5


def test_plan_records_commands_never_numbers(tmp_path: Path) -> None:
    results = tmp_path / "r.json"
    argv = ["--plan", "--out", str(tmp_path / "o"), "--results", str(results), "--no-doc"]
    assert gsm8k.main(argv, runner=lambda a: pytest.fail(f"--plan ran {a}")) == 0
    res = json.loads(results.read_text())
    assert set(res["stages"]) == set(gsm8k.STAGES)
    for entry in res["stages"].values():
        for kind in ("model_alone", "calculator"):
            e = entry[kind]
            assert e["status"] == "not_run" and e["strict_accuracy"] is None and e["n"] is None
            assert e["command"].startswith("cotune eval ")
    # the shipped results file is such a plan until the real runs happen, or real results
    shipped = json.loads((ROOT / "bench" / "results" / "gsm8k.json").read_text())
    for entry in shipped["stages"].values():
        for kind in ("model_alone", "calculator"):
            e = entry[kind]
            assert (e["status"] == "done") == (e["strict_accuracy"] is not None)
            assert e["status"] != "done" or e["n"] == 1319  # published numbers: full test set


def test_grpo_needs_a_finished_sft_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--stages",
        "grpo",
        "--limit",
        "2",
        "--out",
        str(tmp_path / "o"),
        "--gsm8k",
        str(SAMPLE),
    ]
    assert gsm8k.main(argv, runner=lambda a: pytest.fail(f"ran {a}")) == 1
    assert "run --stages sft first" in capsys.readouterr().err
