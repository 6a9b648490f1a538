"""evaluate() with a model: the generation path, and its agreement with --predictions.

The first tests stand in a fake for ``cotune.generate.generate`` (so the eval side is
tested on its own); the last one uses the real tiny model and generator.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cotune.cli import app
from cotune.eval import EvalRecord, evaluate, write_report
from cotune.model.tokenizer import tiny_tokenizer

RECORDS = [
    EvalRecord("a", "What is 2 + 2?", "4", task="arith", difficulty=1),
    EvalRecord("b", "What is 3 * 3?", "9", task="arith", difficulty=2),
    EvalRecord("c", "What is 10 - 7?", "3", task="sub", difficulty=1),
]


class FakeModel:
    name = "fake"

    def __init__(self) -> None:
        self.tokenizer = tiny_tokenizer()
        self.meta: dict = {}


@pytest.fixture()
def fake_generate(monkeypatch):
    """Stands in for cotune.generate.generate with exactly its keywords (no **kwargs), so an
    option generate does not take fails here as it would on a real model."""
    calls: list[dict] = []

    def generate(model, prompts, *, max_new_tokens, temperature, top_k, top_p, seed,
                 stop_strings, calculator, batch_size=None, on_finish=None):  # fmt: skip
        texts = [model.tokenizer.decode(ids) for ids in prompts]  # the prompt the model sees
        calls.append({"prompts": texts, "seed": seed, "stop_strings": stop_strings,
                      "temperature": temperature, "calculator": calculator})  # fmt: skip
        outs = []
        for text in texts:
            q = text.rsplit("Question: ", 1)[1].strip()  # the evaluated question, after shots
            if "10 - 7" in q:  # a rambling completion that runs into the token limit
                outs.append("<reasoning>" + "10 - 7 = 3 and " * 40)
            elif "3 * 3" in q and seed % 2:  # odd seeds get it wrong
                outs.append("<reasoning>3 * 3 = 6</reasoning>\n<answer>6</answer>")
            else:
                a = "4" if "2 + 2" in q else "9"
                outs.append(f"<reasoning>{q[8:-1]} = {a}</reasoning>\n<answer>{a}</answer>")
        for i in range(len(outs)) if on_finish is not None else ():
            on_finish(i, None)
        return outs

    monkeypatch.setattr("cotune.generate.generate", generate)
    return calls


def test_generation_path(fake_generate, tmp_path):
    rep = evaluate(FakeModel(), RECORDS, samples=2, temperature=0.7, max_new_tokens=32,
                   few_shot=2, batch_size=2, progress=False, seed=10)  # fmt: skip
    # 2 samples x 2 batches; seeds differ per sample and batch
    assert [c["seed"] for c in fake_generate] == [10, 11, 1_000_013, 1_000_014]
    first = fake_generate[0]["prompts"]
    assert [t.rsplit("Question: ", 1)[1] for t in first] == ["What is 2 + 2?\nmodel\n",
                                                             "What is 3 * 3?\nmodel\n"]  # fmt: skip
    # the two few-shot examples, worked in the tags schema, come before the question
    assert first[0].index("Question: What is 12 * 4?\n<reasoning>") < first[0].index("2 + 2")
    assert "Question: Sam has 23 marbles" in first[0]
    assert fake_generate[0]["stop_strings"] == ["</answer>"]
    m = rep.metrics
    assert (m["n_examples"], m["n_completions"], m["samples_per_example"]) == (3, 6, 2)
    # a: right twice; b: seed 10 right, seed 1_000_013 wrong; c: truncated, last number 3
    assert m["accuracy_strict"] == pytest.approx(3 / 6)
    assert m["accuracy_lenient"] == pytest.approx(5 / 6)
    assert m["majority_accuracy"] == pytest.approx(3 / 3)  # b ties 9/6: first seen (9) wins
    assert m["truncated"] == 2  # c hit the 32-token budget without </answer>
    assert m["reasoning_length"]["unit"] == "tokens"
    assert rep.meta["model"] == "fake" and rep.meta["few_shot"] == 2
    assert rep.meta["samples"] == 2 and rep.meta["temperature"] == 0.7
    assert rep.meta["calculator"] == "off" and not any(c["calculator"] for c in fake_generate)

    with pytest.raises(ValueError, match="temperature > 0"):
        evaluate(FakeModel(), RECORDS, samples=3, temperature=0.0, progress=False)

    # scoring eval's own predictions file gives the same metrics
    write_report(rep, tmp_path / "gen")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in RECORDS))
    res = CliRunner().invoke(app, ["eval", "--predictions", str(tmp_path / "gen" / "predictions.jsonl"),
                                   "--data", str(data), "--out", str(tmp_path / "p"),
                                   "--tokenizer", "tiny", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "p" / "report.json").read_text())
    assert again["metrics"] == json.loads(json.dumps(rep.metrics))
    assert again["by_task"] == json.loads(json.dumps(rep.by_task))


def test_tiny_model_end_to_end(tmp_path):
    from cotune.model import load

    model = load("tiny")
    records = RECORDS + [EvalRecord("d", "What is 1 + 1?", "2", task="arith")]
    rep = evaluate(model, records, max_new_tokens=12, batch_size=2, progress=False)
    m = rep.metrics
    assert (m["n_examples"], m["n_completions"], m["samples_per_example"]) == (4, 4, 1)
    for k in ("format_strict", "format_lenient", "accuracy_strict", "accuracy_lenient"):
        assert 0.0 <= m[k] <= 1.0
    # a well-formed completion has an answer, and a strict answer is also the lenient one
    assert m["format_strict"] <= m["format_lenient"]
    assert m["accuracy_strict"] <= m["accuracy_lenient"] <= m["format_lenient"]
    assert rep.meta["model"] == "tiny" and m["reasoning_length"]["unit"] == "tokens"
    assert all(isinstance(s.completion, str) for r in rep.rows for s in r.samples)
    paths = write_report(rep, tmp_path / "tiny")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    res = CliRunner().invoke(app, ["eval", "--predictions", str(paths["predictions"]),
                                   "--data", str(data), "--out", str(tmp_path / "p"),
                                   "--tokenizer", "tiny", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "p" / "report.json").read_text())
    assert again["metrics"] == json.loads(json.dumps(rep.metrics))


def test_cli_model_mode(fake_generate, tmp_path, monkeypatch):
    monkeypatch.setattr("cotune.runs.resolve", lambda spec, which, dtype: FakeModel())
    data = tmp_path / "data.csv"
    data.write_text("id,question,answer,task\na,What is 2 + 2?,4,arith\nc,What is 10 - 7?,3,sub\n")
    shots = tmp_path / "train.jsonl"
    shots.write_text(json.dumps({"id": "t", "question": "What is 5 + 5?",
                                 "reasoning": "5 + 5 = 10", "answer": "10"}) + "\n")  # fmt: skip
    res = CliRunner().invoke(app, ["eval", "--model", "tiny", "--data", str(data), "--out",
                                   str(tmp_path / "o"), "--few-shot", "1", "--few-shot-data",
                                   str(shots), "--max-new-tokens", "32", "--template", "plain",
                                   "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["meta"]["model"] == "tiny" and rep["meta"]["template"] == "plain"
    assert rep["meta"]["few_shot_source"] == "few_shot_data"
    assert rep["meta"]["few_shot_examples"] == [{"id": "t", "question": "What is 5 + 5?",
                                                 "answer": "10"}]  # fmt: skip
    assert "Question: What is 5 + 5?" in rep["meta"]["prompt_example"]
    shown = fake_generate[0]["prompts"][0]
    assert shown.startswith("Think step by step")  # the plain template: no chat turns
    assert (
        "Question: What is 5 + 5?\n<reasoning>5 + 5 = 10</reasoning>\n<answer>10</answer>" in shown
    )
    assert rep["metrics"]["accuracy_strict"] == 0.5 and rep["metrics"]["truncated"] == 1
    assert (tmp_path / "o" / "accuracy_by_task.png").is_file()
    assert rep["meta"]["calculator"] == "off" and fake_generate[0]["calculator"] is False
    assert "| calculator | off |" in (tmp_path / "o" / "report.md").read_text()

    # --calculator reaches the generator and the report's header
    fake_generate.clear()
    res = CliRunner().invoke(app, ["eval", "--model", "tiny", "--data", str(data), "--out",
                                   str(tmp_path / "c"), "--calculator", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert fake_generate and all(c["calculator"] is True for c in fake_generate)
    assert json.loads((tmp_path / "c" / "report.json").read_text())["meta"]["calculator"] == "on"
    assert "| calculator | on |" in (tmp_path / "c" / "report.md").read_text()


def test_few_shot_on_a_real_tiny_model(tmp_path):
    """Few-shot prompts reach the real generator as the ids the report describes."""
    from cotune.eval.run import BUILTIN_SHOTS, prompt_ids
    from cotune.generate import generate
    from cotune.model import load_tiny

    model = load_tiny()
    rep = evaluate(model, RECORDS[:2], few_shot=2, max_new_tokens=8, progress=False)
    assert rep.meta["few_shot"] == 2 and rep.meta["few_shot_source"] == "builtin"
    assert "Question: What is 12 * 4?\n<reasoning>" in rep.meta["prompt_example"]
    shots = [(s.question, s.reasoning, s.answer) for s in BUILTIN_SHOTS[:2]]
    ids = [prompt_ids(model.tokenizer, r.question, template="chat", schema="tags", shots=shots)
           for r in RECORDS[:2]]  # fmt: skip
    zero = prompt_ids(model.tokenizer, RECORDS[0].question, template="chat", schema="tags",
                      shots=[])  # fmt: skip
    assert len(ids[0]) > len(zero) + 40  # the worked examples are in the prompt
    want = generate(model, ids, max_new_tokens=8, stop_strings=["</answer>"])
    assert [row.samples[0].completion for row in rep.rows] == want

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in RECORDS[:2]))
    res = CliRunner().invoke(app, ["eval", "--model", "tiny", "--data", str(data), "--out",
                                   str(tmp_path / "o"), "--few-shot", "2", "--max-new-tokens",
                                   "8", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "o" / "report.json").read_text())
    assert got["meta"]["few_shot"] == 2
    assert [e["id"] for e in got["meta"]["few_shot_examples"]] == ["builtin-shot-1",
                                                                   "builtin-shot-2"]  # fmt: skip


def test_calculator_on_a_real_tiny_model(tmp_path, monkeypatch):
    """``cotune eval --calculator`` end to end through the real generator and decoder. The
    random tiny model writes no claim of its own, so one is forced after its first token
    (in the calculator's place, which then decides as usual): the value reaches the
    completions, the report's header says calculator on, and the filled step is a true
    claim for cotune.verify."""
    from cotune.generate import api, host
    from cotune.verify import find_claims

    prefix = "<reasoning>48 / 2 ="
    monkeypatch.setattr(
        api,
        "calculator_text",
        lambda text: prefix if "<reasoning>" not in text else host.calculator_text(text),
    )
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in RECORDS[:2]))
    out = tmp_path / "calc"
    res = CliRunner().invoke(app, ["eval", "--model", "tiny", "--data", str(data), "--out",
                                   str(out), "--max-new-tokens", "24", "--calculator",
                                   "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["meta"]["calculator"] == "on"
    assert "| calculator | on |" in (out / "report.md").read_text()
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2
    for p in preds:
        text = p["completion"]
        assert prefix + " 24" in text, text
        claim = find_claims(text[text.index("<reasoning>") :])[0]
        assert (claim.text, claim.correct) == ("48 / 2 = 24", True)
