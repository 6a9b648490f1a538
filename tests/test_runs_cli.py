"""The model a user just trained works in every command, whatever folder they point at.

Through the real CLI on the tiny model: one SFT run (``best/`` at step 2, ``checkpoints/``
at steps 2 and 4) and one quickstart folder, then ``generate``, ``chat``, ``eval``,
``export`` and ``rl --init`` on the run folder, its ``best`` and ``checkpoints`` folders, a
step folder and ``--which``, all resolved by :func:`cotune.runs.resolve`; and wrong paths
failing with one line on stderr, exit 2, no traceback.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from typer.testing import CliRunner

import cotune
from cotune.cli import app
from cotune.generate import generate
from cotune.runs import ResolveError, locate, resolve

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tiny.yaml"
RL_TINY = ROOT / "configs" / "rl-tiny.yaml"
# best/ keeps step 2: validation accuracy of a random tiny model stays 0, never rising after
SHORT = [
    "--set",
    "train.steps=4",
    "--set",
    "train.eval_every=2",
    "--set",
    "train.checkpoint_every=2",
]
RL_SHORT = ["--set", "rl.steps=1", "--set", "rl.eval_size=2", "--set", "rl.train_size=8"]


def cli(*args, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def ok(*args, input: str | None = None):
    r = cli(*args, input=input)
    assert r.exit_code == 0, r.output
    return r


def lora(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model.module, nnx.LoRAParam))]


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(lora(a), lora(b), strict=True))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def run(work) -> Path:
    out = work / "qs"
    ok("train", "--config", TINY, "--out", out, *SHORT)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "4"]
    assert [p.name for p in (out / "best").iterdir()] == ["2"]
    return out


@pytest.fixture(scope="module")
def quick(work) -> tuple[Path, str]:
    """A real quickstart folder on the tiny model, and what the command printed."""
    out = work / "quickstart"
    r = ok("quickstart", "--config", TINY, "--out", out, "--n-test", "4", *SHORT)
    for name in ("sft", "eval_base", "eval_tuned", "summary.json"):
        assert (out / name).exists(), name
    return out, r.stdout


@pytest.fixture(scope="module")
def data(work) -> Path:
    path = work / "test.jsonl"
    rows = [{"question": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3)} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_resolve_every_form_of_a_run(run, quick) -> None:
    best, last = resolve(run), resolve(run, "last")
    assert (best.meta["step"], last.meta["step"]) == (2, 4)
    assert not same(best, last)  # two different checkpoints, not one loaded twice
    forms = {
        2: [(run / "best",), (run / "checkpoints" / "2",), (run / "best" / "2",), (run, "2"),
            (run / "checkpoints", 2)],
        4: [(run / "checkpoints",), (run / "checkpoints" / "4",), (run, 4), (run, "last")],
    }  # fmt: skip
    for step, specs in forms.items():
        for spec in specs:
            m = resolve(*spec)
            assert m.meta["step"] == step, spec
            assert same(m, best if step == 2 else last), spec
    # the resolved spec names exactly that checkpoint, and resolves back to it
    assert best.meta["resolved"] == str((run / "best" / "2").resolve())
    assert resolve(best.meta["resolved"]).meta["step"] == 2
    assert cotune.load is resolve

    out, _ = quick
    m = resolve(out)
    assert m.meta["run"] == str(out / "sft") and m.meta["step"] == 2
    assert same(m, resolve(out / "sft" / "best")) and same(m, resolve(out / "sft"))
    assert locate(out, "last").path == out / "sft"


def test_generate_and_chat_on_every_form(run, quick) -> None:
    out, _ = quick
    forms = [
        ([run], 2),
        ([run / "best"], 2),
        ([run / "checkpoints" / "2"], 2),
        ([run, "--which", "2"], 2),
        ([run / "checkpoints"], 4),
        ([run, "--which", "last"], 4),
        ([out], "q"),
        ([out / "sft"], "q"),
        ([out / "sft" / "best"], "q"),
    ]
    texts: dict[object, set[str]] = {}
    for spec, group in forms:
        r = ok("generate", "--model", *spec, "-n", "8", "--dtype", "float32", "What is 2 + 3?")
        texts.setdefault(group, set()).add(r.stdout)
        r = ok("chat", "--model", *spec, "-n", "8", input="What is 2 + 3?\n\n")
        assert "reasoning" in r.stdout and "tokens, finished:" in r.stdout, spec
    # every spelling of one checkpoint generates the same text
    assert all(len(v) == 1 for v in texts.values()), texts


def test_eval_export_and_rl_on_a_run(run, quick, data, work) -> None:
    out, _ = quick
    for name, spec in (("e_last", [run, "--which", "last"]), ("e_quick", [out])):
        ok("eval", "--model", *spec, "--data", data, "--max-new-tokens", "8",
           "--out", work / name, "--quiet")  # fmt: skip
    rep = json.loads((work / "e_last" / "report.json").read_text())
    assert rep["meta"]["model_resolved"] == str((run / "checkpoints" / "4").resolve())
    rep = json.loads((work / "e_quick" / "report.json").read_text())
    assert rep["meta"]["model_resolved"] == str((out / "sft" / "best" / "2").resolve())

    r = ok("export", "--model", run / "checkpoints", "--format", "gguf", "--out", work / "gg",
           "--check", "2")  # fmt: skip
    assert "merging 12 LoRA adapters" in r.output and "agreement" in r.output
    ok("export", "--model", out, "--out", work / "hf")
    exported = cotune.load(str(work / "hf"))
    prompts = ["What is 4 + 4?", "What is 7 * 3?"]
    kw = {"max_new_tokens": 8, "compute_dtype": "float32"}
    assert generate(exported, prompts, **kw) == generate(resolve(out), prompts, **kw)

    rl = work / "rl"
    ok("rl", "--config", RL_TINY, "--init", run, "--which", "last", "--out", rl, *RL_SHORT)
    # rl.json names the exact checkpoint it started from, as an absolute path
    assert json.loads((rl / "rl.json").read_text())["init"] == str(
        (run / "checkpoints" / "4").resolve()
    )
    policy = resolve(rl)
    assert policy.meta["step"] == 1 and policy.meta["run"] == str(rl)
    assert not same(policy, resolve(run, "last"))  # GRPO moved the SFT adapters
    ok("generate", "--model", rl / "checkpoints" / "1", "-n", "4", "hi")
    ok("rl", "--config", RL_TINY, "--init", out, "--out", work / "rl_quick", *RL_SHORT)
    init = json.loads((work / "rl_quick" / "rl.json").read_text())["init"]
    assert init == str((out / "sft" / "best" / "2").resolve())


def test_quickstart_prints_next_commands_that_work(quick, work) -> None:
    out, printed = quick
    lines = [x.strip() for x in printed.splitlines() if x.strip().startswith("cotune ")]
    assert [x.split()[1] for x in lines] == ["chat", "eval", "export"], printed
    for line in lines:
        args = shlex.split(line)[1:]
        assert args[args.index("--model") + 1] == str(out)
        ok(*args, input="What is 1 + 1?\n\n" if args[0] == "chat" else None)
    assert (out / "eval_best" / "report.json").is_file()
    assert (Path(f"{out}-gguf") / "model.gguf").is_file()


COMMANDS = {
    "generate": lambda spec, o, d: ["generate", "--model", *spec, "hi"],
    "chat": lambda spec, o, d: ["chat", "--model", *spec],
    "eval": lambda spec, o, d: ["eval", "--model", *spec, "--data", d, "--out", o],
    "export": lambda spec, o, d: ["export", "--model", *spec, "--out", o],
    "rl": lambda spec, o, d: ["rl", "--config", RL_TINY, "--init", *spec, "--out", o],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_wrong_paths_fail_with_one_line(command, run, data, work, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = {
        "nowhere": ([work / "nowhere"], "no such file or folder"),
        "file": ([TINY], "a file (.yaml)"),
        "empty": ([empty], "it holds nothing (empty)"),
        "tb": ([run / "tb"], "not a model folder"),
        "parent": ([work], "a folder of runs"),
        "step": ([run, "--which", "3"], "no checkpoint at step 3 (checkpoints/: 2, 4; best/: 2)"),
        "which": ([run, "--which", "first"], "expected best, last or a checkpoint step number"),
        "conflict": ([run / "best", "--which", "last"], "names the best checkpoint"),
        "preset": (["tiny", "--which", "last"], "is a preset, not a run folder"),
    }
    for name, (spec, said) in bad.items():
        o = tmp_path / f"out-{name}"
        r = cli(*COMMANDS[command](spec, o, data), input="")
        assert r.exit_code == 2, (name, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"cotune {command}: "), (name, r.stderr)
        assert said in lines[0], (name, lines[0])
        assert "Traceback" not in r.output and not o.exists(), name


def test_resolve_errors_are_one_line(tmp_path) -> None:
    with pytest.raises(ResolveError, match="no such file or folder, and not a preset"):
        resolve(tmp_path / "x")
    (tmp_path / "w.bin").write_bytes(b"0")
    with pytest.raises(ResolveError) as e:
        resolve(tmp_path / "w.bin")
    assert "\n" not in str(e.value) and "expected a preset, a .gguf file" in str(e.value)
