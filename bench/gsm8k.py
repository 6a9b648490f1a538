"""`make gsm8k`: GSM8K end to end on the embedded Gemma 3 270M, in resumable stages.

    .venv/bin/python -m bench.gsm8k [--stages base_0shot,base_8shot,sft,grpo] [--limit N]
        [--config configs/gsm8k.yaml] [--set KEY=VALUE ...] [--out runs/gsm8k]
        [--results bench/results/gsm8k.json] [--doc docs/gsm8k.md | --no-doc]

Stages (docs/gsm8k.md), each evaluated on the full GSM8K test set (1,319 questions) by
``cotune eval`` with the same instruction, template and token budget:

* ``base_0shot``: the pretrained model, zero-shot;
* ``base_8shot``: the pretrained model with the standard 8-shot chain-of-thought prompt (the
  8 exemplars of Wei et al. 2022, Table 20), written in cotune's schema;
* ``sft``: ``cotune train`` (LoRA SFT) on GSM8K train, evaluated from its best checkpoint
  (chosen on a validation split carved out of GSM8K train, never on test);
* ``grpo``: ``cotune rl`` from the SFT run on GSM8K train questions, held-out accuracy (the
  same validation split) tracked during the run.

Each stage has a ``model_alone`` entry and a ``calculator`` entry (the same evaluation with
``cotune eval --calculator``: generation with ``cotune.calculator`` filling in the values of
the claims the model starts). They are separate measurements, recorded and shown as
separate rows, never mixed.

Everything runs through the ``cotune`` command line, each command in its own process (so a
multi-hour run never accumulates memory, and every number comes with the exact command that
produced it). A stage whose result is already in the results file, made by the same
commands from the same config, is skipped; training and RL resume from their checkpoints
(``--resume``) after a crash; the results file and the evaluation reports are written
atomically after each step, so a crash loses at most the step it interrupted.

``--limit N`` is a smoke run: only the first N test questions. Its results go to
``<out>/gsm8k.json`` (never to bench/results) unless ``--results`` says otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GSM8K_DIR = ROOT / "data" / "gsm8k"
DEFAULT_CONFIG = ROOT / "configs" / "gsm8k.yaml"
DEFAULT_RESULTS = ROOT / "bench" / "results" / "gsm8k.json"
DEFAULT_DOC = ROOT / "docs" / "gsm8k.md"
STAGES = ("base_0shot", "base_8shot", "sft", "grpo")
DOC_START, DOC_END = "<!-- GSM8K:START -->", "<!-- GSM8K:END -->"
# The README carries the same numbers without the commands (docs/gsm8k.md has those).
README = ROOT / "README.md"
SUMMARY_START, SUMMARY_END = "<!-- GSM8K-SUMMARY:START -->", "<!-- GSM8K-SUMMARY:END -->"
# Share of GSM8K train held out for validation (SFT's best checkpoint, RL's held-out
# accuracy): about 220 questions, by hashed question, so never a test question.
VAL_FRACTION = 0.03
SPLIT_SEED = 0

# The 8 exemplars of Wei et al. 2022 ("Chain-of-thought prompting elicits reasoning in large
# language models"), Table 20, verbatim; their closing "The answer is N." is the <answer>.
WEI_8_SHOT: list[tuple[str, str, str]] = [
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
        "After they are done, there will be 21 trees. How many trees did the grove workers "
        "plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were "
        "planted. So there must have been 21 - 15 = 6.",
        "6",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in "
        "the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.",
        "5",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do "
        "they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 "
        "= 74. After eating 35, they had 74 - 35 = 39.",
        "39",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. "
        "How many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he "
        "gave Denny 20 - 12 = 8.",
        "8",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How "
        "many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is "
        "4 more toys. 5 + 4 = 9.",
        "9",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed "
        "each day, from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. "
        "So 5 * 4 = 20 computers were added. 9 + 20 is 29.",
        "29",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost "
        "2 more. How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = "
        "35. After losing 2 more, he had 35 - 2 = 33 golf balls.",
        "33",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So "
        "she has 23 - 15 dollars left. 23 - 15 is 8.",
        "8",
    ),
]

Runner = Callable[[list[str]], int]


class DriverError(RuntimeError):
    """A stage could not run; the message says which command failed and what to do."""


def _children_cpu() -> float:
    """User + system seconds of the finished child processes (what ``cotune_process`` ran)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cotune_process(args: list[str]) -> int:
    """Run ``cotune ARGS`` in a fresh process (output straight to this terminal)."""
    return subprocess.call([sys.executable, "-m", "cotune.cli", *args])


def show(args: Sequence[str]) -> str:
    """A command as a user types it."""
    return shlex.join(["cotune", *map(str, args)])


def _sha(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _write_json(path: Path, obj: Any) -> None:
    """Write atomically: an interrupted write leaves the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- data


def prepare_data(out: Path, gsm8k_dir: Path = GSM8K_DIR) -> dict[str, Any]:
    """GSM8K train/test -> ``out``'s train.jsonl, val.jsonl, test.jsonl and shots.jsonl.

    train + val: GSM8K train imported with every calculator note made a claim and every
    claim checked (:mod:`cotune.data.gsm8k`), any question also in GSM8K test dropped, then
    split by hashed question. test: every GSM8K test question (none dropped: the benchmark
    is all 1,319) with its ``####`` answer. shots: the 8 Wei et al. exemplars. Returns the
    import report (kept, dropped by reason, notes converted, repairs). Cheap (seconds) and
    deterministic; rewritten only when missing.
    """
    from cotune import data
    from cotune.data.importers import iter_gsm8k

    report_path = out / "data.json"
    names = ("train.jsonl", "val.jsonl", "test.jsonl", "shots.jsonl")
    if report_path.is_file() and all((out / n).is_file() for n in names):
        return json.loads(report_path.read_text(encoding="utf-8"))
    notes: Counter = Counter()
    test_records: list[data.Record] = []
    for _, item, _ in iter_gsm8k(gsm8k_dir / "test.jsonl"):
        if not isinstance(item, data.Record):
            raise DriverError(f"GSM8K test: {item}")
        test_records.append(item)
    train_all = data.import_file("gsm8k", gsm8k_dir / "train.jsonl", notes=notes)
    # no reasoning-length cut here: format.max_seq_len of the recipe decides what fits
    kept, report = data.clean(
        train_all, check_claims=True, exclude=test_records, max_reasoning_tokens=None
    )
    parts = data.split(kept, (1 - VAL_FRACTION, VAL_FRACTION, 0.0), seed=SPLIT_SEED)
    out.mkdir(parents=True, exist_ok=True)
    data.write_jsonl(out / "train.jsonl", parts["train"])
    data.write_jsonl(out / "val.jsonl", parts["val"])
    data.write_jsonl(out / "test.jsonl", test_records)
    shots = [
        data.Record(f"wei2022-{k}", "gsm8k_shot", q, r, a, "wei2022", None)
        for k, (q, r, a) in enumerate(WEI_8_SHOT, 1)
    ]
    data.write_jsonl(out / "shots.jsonl", shots)
    info = {
        "source": _rel(gsm8k_dir),
        "train_read": report.n_in,
        "train_kept": report.n_out,
        "train_dropped": dict(report.reasons.most_common()),
        "calculator_notes": {
            k.removeprefix("note_"): v for k, v in sorted(notes.items()) if k.startswith("note_")
        },
        "repaired": {
            k.removeprefix("repaired_"): v
            for k, v in sorted(notes.items())
            if k.startswith("repaired_")
        },
        "train": len(parts["train"]),
        "val": len(parts["val"]),
        "test": len(test_records),
    }
    _write_json(report_path, info)
    return info


# --------------------------------------------------------------------------- results


def _metrics(report_dir: Path) -> dict[str, Any]:
    """The numbers a results entry keeps, from a ``cotune eval`` report folder."""
    from cotune.eval import wilson_interval

    path = report_dir / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        m = report["metrics"]
        calculator = report["meta"].get("calculator") or "off"  # no key: made without it
        acc = m["accuracy_strict_ci95"]
        fmt = m["format_strict_ci95"]
        steps = m["steps"]["step_validity_ci95"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DriverError(f"{path}: not a cotune eval report ({e})") from None

    def share(ci: dict[str, Any]) -> tuple[float | None, list[float] | None]:
        n, k = int(ci["n"]), int(ci["successes"])
        return (k / n, list(wilson_interval(k, n))) if n else (None, None)

    accuracy, acc_ci = share(acc)
    format_rate, fmt_ci = share(fmt)
    validity, steps_ci = share(steps)
    return {
        "strict_accuracy": accuracy,
        "n": int(acc["n"]),
        "correct": int(acc["successes"]),
        "ci95": acc_ci,
        "format_compliance": format_rate,
        "format_compliance_ci95": fmt_ci,
        "step_validity": validity,
        "step_validity_ci95": steps_ci,
        "claims": int(steps["n"]),
        "calculator": calculator,
        "report": str(report_dir / "report.md"),
    }


def _heldout_curve(run: Path) -> list[dict[str, Any]]:
    """Held-out accuracy during RL, from the run's metrics.jsonl (one line per evaluation)."""
    curve = []
    path = run / "metrics.jsonl"
    if not path.is_file():
        return curve
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "eval_accuracy" in rec:
            curve.append({"step": rec.get("step"), "accuracy": rec["eval_accuracy"]})
    return curve


class Driver:
    """Runs the selected stages, writing results after every step."""

    def __init__(
        self,
        *,
        config: Path,
        out: Path,
        results: Path,
        doc: Path | None,
        overrides: list[str],
        limit: int | None,
        runner: Runner = cotune_process,
        gsm8k_dir: Path = GSM8K_DIR,
        log: Callable[[str], None] = print,
    ) -> None:
        from cotune.config import load_config

        # commands name paths as typed from the current folder (the repository root under
        # make), so the recorded commands run as shown
        config = _from_cwd(config)
        self.config, self.out, self.results_path, self.doc = config, out, results, doc
        self.limit, self.runner, self.log, self.gsm8k_dir = limit, runner, log, gsm8k_dir
        self.data_dir = out / "data"
        # the data files the recipe trains on, always given explicitly: the commands are
        # complete wherever --out points
        self.overrides = [
            f"data.train=[{{path: {self.data_dir / 'train.jsonl'}}}]",
            f"data.val={self.data_dir / 'val.jsonl'}",
            *overrides,
        ]
        self.cfg = load_config(config, self.overrides)
        self.config_sha = _sha(config.read_text(encoding="utf-8"), self.overrides)
        self.results = self._load()

    # ----------------------------------------------------------------- bookkeeping

    def _load(self) -> dict[str, Any]:
        if self.results_path.is_file():
            try:
                res = json.loads(self.results_path.read_text(encoding="utf-8"))
                if isinstance(res, dict) and isinstance(res.get("stages"), dict):
                    return res
            except ValueError:
                pass
            raise DriverError(
                f"{self.results_path}: not a GSM8K results file; move it away or pass --results"
            )
        return {"benchmark": "gsm8k", "stages": {}}

    def _save(self) -> None:
        self.results.update(
            {
                "benchmark": "gsm8k",
                "test_set": "data/gsm8k/test.jsonl",
                "limit": self.limit,
                "config": _rel(self.config),
                "overrides": self.overrides,
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "platform": platform.platform(),
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                },
            }
        )
        _write_json(self.results_path, self.results)
        if self.doc is not None:
            write_doc(self.doc, self.results)
            if self.doc == DEFAULT_DOC and README.is_file():
                write_summary(README, self.results)

    def _run(self, args: list[str], what: str) -> tuple[float, float]:
        """Run one cotune command; (wall seconds, CPU seconds of the processes it ran).

        CPU time is kept next to wall time because a stage of hours may share the machine:
        its user + system time is what it cost whatever else ran, and a quiet run spreads
        it over the cores."""
        self.log(f"$ {show(args)}")
        t = time.perf_counter()
        c = _children_cpu()
        code = self.runner([str(a) for a in args])
        seconds, cpu = time.perf_counter() - t, _children_cpu() - c
        if code != 0:
            raise DriverError(f"{what} failed (exit {code}): {show(args)}")
        return seconds, cpu

    # ----------------------------------------------------------------- stages

    def _eval_args(self, model: str, name: str, extra: list[str]) -> list[str]:
        e = self.cfg.eval
        args = ["eval", "--model", model, "--data", self.data_dir / "test.jsonl"]
        args += ["--out", self.out / "eval" / name, "--template", self.cfg.format.template]
        args += ["--schema", self.cfg.format.schema_, "--max-new-tokens", e.max_new_tokens]
        args += ["--batch-size", e.batch_size, *extra]
        if self.limit is not None:
            args += ["--limit", self.limit]
        return [str(a) for a in args]

    def _evaluate(self, stage: str, model: str, extra: list[str]) -> None:
        """The stage's model_alone and calculator entries (each skipped when done)."""
        entry = self.results["stages"].setdefault(stage, {})
        for kind, flags in (("model_alone", []), ("calculator", ["--calculator"])):
            name = stage if kind == "model_alone" else f"{stage}_calculator"
            args = self._eval_args(model, name, [*extra, *flags])
            key = _sha(args, self.config_sha)
            old = entry.get(kind) or {}
            if old.get("fingerprint") == key and old.get("status") == "done":
                continue
            report_dir = self.out / "eval" / name
            # written once the report is complete: which command made it, in how long
            marker = report_dir.with_name(f"{name}.fingerprint.json")
            done = json.loads(marker.read_text()) if marker.is_file() else {}
            if not ((report_dir / "report.json").is_file() and done.get("fingerprint") == key):
                force = ["--force"] if report_dir.exists() else []
                seconds, cpu = self._run([*args, *force], f"{stage} evaluation ({kind})")
                done = {"fingerprint": key, "seconds": seconds, "cpu_seconds": cpu}
                _write_json(marker, done)
            metrics = _metrics(report_dir)
            want = "on" if kind == "calculator" else "off"
            if metrics["calculator"] != want:  # never a number of one mode in the other's row
                raise DriverError(
                    f"{report_dir}: its report says calculator {metrics['calculator']}, but the "
                    f"{kind} entry needs calculator {want}; remove the folder and run again"
                )
            entry[kind] = {
                "status": "done",
                **metrics,
                "command": show(args),
                "seconds": done["seconds"],
                "cpu_seconds": done.get("cpu_seconds"),
                "fingerprint": key,
            }
            self._save()

    def _train(self, stage: str, args: list[str], run: Path) -> None:
        """Train (or resume) into ``run``; records the command and wall time."""
        entry = self.results["stages"].setdefault(stage, {})
        key = _sha(args, self.config_sha)
        train = entry.get("train") or {}
        if train.get("fingerprint") == key and train.get("status") == "done":
            return
        resume = ["--resume"] if run.exists() else []
        seconds, cpu = self._run([*args, *resume], f"{stage} training")
        entry["train"] = {
            "status": "done",
            "command": show(args),
            "resumed": bool(resume),
            "seconds": seconds + ((train.get("seconds") or 0) if resume else 0),
            "cpu_seconds": cpu + ((train.get("cpu_seconds") or 0) if resume else 0),
            "run": str(run),
            "fingerprint": key,
        }
        self._save()

    def _plan(self, name: str) -> tuple[list[str] | None, Path | None, str, list[str]]:
        """(training command or None, its run folder, model to evaluate, eval flags)."""
        sets = [a for o in self.overrides for a in ("--set", o)]
        sft, rl = self.out / "sft", self.out / "grpo"
        if name == "base_0shot":
            return None, None, self.cfg.model.name, []
        if name == "base_8shot":
            shots = ["--few-shot", "8", "--few-shot-data", str(self.data_dir / "shots.jsonl")]
            return None, None, self.cfg.model.name, shots
        if name == "sft":
            return (
                ["train", "--config", str(self.config), "--out", str(sft), *sets],
                sft,
                str(sft),
                [],
            )
        if name == "grpo":
            args = ["rl", "--config", str(self.config), "--init", str(sft), "--out", str(rl)]
            return [*args, *sets], rl, str(rl), []
        raise DriverError(f"unknown stage {name!r}; expected some of {', '.join(STAGES)}")

    def stage(self, name: str) -> None:
        started = time.perf_counter()
        entry = self.results["stages"].setdefault(name, {})
        train_args, run, model, extra = self._plan(name)
        sft_train = (self.results["stages"].get("sft") or {}).get("train") or {}
        if name == "grpo" and sft_train.get("status") != "done":
            raise DriverError(
                f"grpo starts from the finished SFT run {self.out / 'sft'}: run --stages sft "
                "first (or together: --stages sft,grpo)"
            )
        if train_args is not None and run is not None:
            self._train(name, train_args, run)
        if name == "grpo" and run is not None:
            entry["heldout_accuracy_during_rl"] = _heldout_curve(run)
        self._evaluate(name, model, extra)
        parts = [entry.get(k) or {} for k in ("train", "model_alone", "calculator")]
        entry["wall_seconds"] = sum(p.get("seconds") or 0 for p in parts)
        entry["commands"] = [p["command"] for p in parts if p.get("command")]
        self._save()
        self.log(f"{name}: done in {time.perf_counter() - started:.0f} s")

    def plan(self, stages: Sequence[str]) -> dict[str, Any]:
        """Record every stage not yet done as not run, with the commands it will run."""
        for name in stages:
            entry = self.results["stages"].setdefault(name, {})
            train_args, _, model, extra = self._plan(name)
            if train_args is not None and (entry.get("train") or {}).get("status") != "done":
                entry["train"] = {"status": "not_run", "command": show(train_args)}
            for kind, flags in (("model_alone", []), ("calculator", ["--calculator"])):
                if (entry.get(kind) or {}).get("status") == "done":
                    continue
                args = self._eval_args(model, name if kind == "model_alone" else f"{name}_calculator", [*extra, *flags])  # fmt: skip
                entry[kind] = {
                    "status": "not_run",
                    "reason": "not yet measured",
                    "strict_accuracy": None,
                    "n": None,
                    "ci95": None,
                    "command": show(args),
                }
            entry["commands"] = [
                (entry.get(k) or {})["command"]
                for k in ("train", "model_alone", "calculator")
                if (entry.get(k) or {}).get("command")
            ]
        self._save()
        return self.results

    def run(self, stages: Sequence[str]) -> dict[str, Any]:
        self.results["data"] = prepare_data(self.data_dir, self.gsm8k_dir)
        self._save()
        for name in stages:
            self.stage(name)
        return self.results


def _from_cwd(p: Path) -> Path:
    """``p`` relative to the current folder when it is inside it."""
    rel = os.path.relpath(Path(p).resolve())
    return Path(rel) if not rel.startswith("..") else Path(p)


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------- table


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _cell(share: float | None, ci: list[float] | None, n: int | None = None) -> str:
    if share is None:
        return "–"
    s = _pct(share)
    if ci:
        s += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return s + (f" (n={n})" if n is not None else "")


LABELS = {
    "base_0shot": "base, 0-shot",
    "base_8shot": "base, 8-shot (Wei et al.)",
    "sft": "after LoRA SFT",
    "grpo": "after SFT + GRPO",
}


def table(results: dict[str, Any]) -> str:
    """The Markdown table of a results file: one row per stage and mode."""
    lines = [
        "| stage | mode | strict accuracy [95% CI] | format compliance | step validity | "
        "wall time | command |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    stages = results.get("stages", {})
    for name in STAGES:
        entry = stages.get(name, {})
        for kind, mode in (("model_alone", "model alone"), ("calculator", "with calculator")):
            e = entry.get(kind) or {}
            if e.get("status") != "done":
                cmd = f"`{e['command']}`" if e.get("command") else ""
                lines.append(f"| {LABELS[name]} | {mode} | not yet measured | | | | {cmd} |")
                continue
            train = entry.get("train") or {} if kind == "model_alone" else {}
            wall = (e.get("seconds") or 0) + (train.get("seconds") or 0)
            cpus = [x.get("cpu_seconds") for x in (e, train) if x]
            cpu = f" (CPU {sum(cpus) / 60:.1f} min)" if cpus and None not in cpus else ""
            if train.get("wall_note"):  # how a hand-timed training wall time was made
                cpu += f", {train['wall_note']}"
            elif train.get("resumed"):  # a killed attempt records nothing: only the last counts
                cpu += ", training resumed: the part before the interruption not counted"
            cmd = e["command"]
            lines.append(
                f"| {LABELS[name]} | {mode} | {_cell(e['strict_accuracy'], e['ci95'], e['n'])} "
                f"| {_cell(e.get('format_compliance'), e.get('format_compliance_ci95'))} "
                f"| {_cell(e.get('step_validity'), e.get('step_validity_ci95'))} "
                f"| {wall / 60:.1f} min{cpu} | `{cmd}` |"
            )
    return "\n".join(lines)


def summary_table(results: dict[str, Any]) -> str:
    """The README's table: every stage and mode, the numbers only (commands: docs/gsm8k.md)."""
    lines = [
        "| stage | mode | strict accuracy [95% CI], n=1,319 | format compliance | step validity |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name in STAGES:
        entry = results.get("stages", {}).get(name, {})
        for kind, mode in (("model_alone", "model alone"), ("calculator", "with calculator")):
            e = entry.get(kind) or {}
            if e.get("status") != "done":
                lines.append(f"| {LABELS[name]} | {mode} | not yet measured | | |")
                continue
            lines.append(
                f"| {LABELS[name]} | {mode} | {_cell(e['strict_accuracy'], e['ci95'])} "
                f"| {_cell(e.get('format_compliance'), e.get('format_compliance_ci95'))} "
                f"| {_cell(e.get('step_validity'), e.get('step_validity_ci95'))} |"
            )
    return "\n".join(lines)


def _replace_between(path: Path, start: str, end: str, body: str) -> None:
    text = path.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise DriverError(f"{path}: no {start} ... {end} markers for the table")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{head}{start}\n{body}\n{end}{tail}", encoding="utf-8")
    os.replace(tmp, path)


def write_summary(readme: Path, results: dict[str, Any]) -> None:
    """Replace the README's GSM8K table (between its markers) with the results file's."""
    when = results.get("updated", "")
    note = (
        f"From `{_rel(DEFAULT_RESULTS)}` (updated {when}) by `make gsm8k`; commands, wall and "
        "CPU times per stage: [docs/gsm8k.md](docs/gsm8k.md)."
    )
    _replace_between(readme, SUMMARY_START, SUMMARY_END, f"{note}\n\n{summary_table(results)}")


def write_doc(doc: Path, results: dict[str, Any]) -> None:
    """Replace the table between the GSM8K markers of ``doc`` (kept as is elsewhere)."""
    measured = any(
        (e.get("model_alone") or {}).get("status") == "done"
        for e in results.get("stages", {}).values()
    )
    when = results.get("updated", "")
    limit = results.get("limit")
    note = (
        f"Results file `{_rel(DEFAULT_RESULTS)}`, updated {when}"
        + (f"; smoke run on the first {limit} test questions only" if limit else "")
        + ". Brackets are 95% Wilson intervals; wall time includes training for SFT and GRPO."
        " CPU time (user + system of the stage's processes) is given where it was recorded:"
        " a stage that shared the 2-core machine took longer than its CPU time needs."
        if measured
        else "**Not yet measured**: no stage has run on the real model yet; the rows fill in "
        "from `bench/results/gsm8k.json` as `make gsm8k` finishes each stage."
    )
    _replace_between(doc, DOC_START, DOC_END, f"{note}\n\n{table(results)}")


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None, runner: Runner = cotune_process) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gsm8k", description=__doc__.split("\n")[0])
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated, in order")
    ap.add_argument("--limit", type=int, default=None, help="smoke run: first N test questions")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, default=Path("runs/gsm8k"))
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--doc", type=Path, default=None, help=f"default: {_rel(DEFAULT_DOC)}")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite the docs table")
    ap.add_argument("--gsm8k", type=Path, default=GSM8K_DIR, help="folder with GSM8K jsonl")
    ap.add_argument(
        "--plan",
        action="store_true",
        help="run nothing: record the stages not yet done as not run, with their commands",
    )
    a = ap.parse_args(argv)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        ap.error(f"--stages: unknown {unknown or 'none'}; expected some of {', '.join(STAGES)}")
    if a.limit is not None and a.limit < 1:
        ap.error("--limit must be at least 1")
    smoke = a.limit is not None
    results = a.results or (a.out / "gsm8k.json" if smoke else DEFAULT_RESULTS)
    doc = None if a.no_doc else (a.doc or (None if smoke else DEFAULT_DOC))
    try:
        driver = Driver(
            config=a.config,
            out=a.out,
            results=results,
            doc=doc,
            overrides=a.overrides,
            limit=a.limit,
            runner=runner,
            gsm8k_dir=a.gsm8k,
        )
        if a.plan:
            driver.plan(stages)
        else:
            driver.run(stages)
    except DriverError as e:
        print(f"bench.gsm8k: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:  # a config or file problem, named by its message
        print(f"bench.gsm8k: {e}", file=sys.stderr)
        return 2
    print(f"results: {results}" + (f"; table: {doc}" if doc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
