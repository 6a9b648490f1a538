"""Evaluation metrics on hand-written completions, with exact expected numbers."""

from __future__ import annotations

import json

import pytest

from cotune.eval import (
    BUILTIN_SHOTS,
    EvalInputError,
    EvalRecord,
    choose_few_shot,
    evaluate,
    load_predictions,
    load_records,
    majority_vote,
    score_completion,
    write_report,
)
from cotune.eval.metrics import looks_truncated
from cotune.verify import check_steps

RECORDS = [
    EvalRecord("r1", "What is 12 * 4?", "48", task="arithmetic", difficulty=1),
    EvalRecord("r2", "What is 7 + 5?", "12", task="arithmetic", difficulty=2),
    EvalRecord("r3", "Sam has 23, gives 9, buys 5. How many?", "19", task="word", difficulty=1),
    EvalRecord("r4", "What is 6 * 5?", "30", task="word", difficulty=2),
    EvalRecord("r5", "What is 50 + 50?", "100", task="arithmetic", difficulty=1),
    EvalRecord("r6", "What is 3 + 5?", "8", task="word", difficulty=1),
]
COMPLETIONS = [
    # perfect: 3 true claims
    "<reasoning>10 * 4 = 40, 2 * 4 = 8, 40 + 8 = 48.</reasoning>\n<answer>48</answer>",
    # right answer through a wrong step
    "<reasoning>7 + 5 = 13, so minus one gives 12.</reasoning>\n<answer>12</answer>",
    # no tags at all: only the lenient reading finds "19"
    "23 - 9 = 14 and 14 + 5 = 19. The answer is 19.",
    # empty
    "",
    # duplicated answer tag: no strict answer, lenient takes the first
    "<reasoning>50 + 50 = 100</reasoning>\n<answer>100</answer><answer>100</answer>",
    # truncated mid-reasoning; the last number (14) is wrong
    "<reasoning>3 + 4 = 7, then 7 * 2 = 14 and 14 -",
]


@pytest.fixture(scope="module")
def report():
    return evaluate(None, RECORDS, completions=COMPLETIONS, progress=False)


def test_per_completion_scores():
    s = [score_completion(c, r.answer) for c, r in zip(COMPLETIONS, RECORDS, strict=True)]
    assert [x.well_formed for x in s] == [True, True, False, False, False, False]
    assert [x.strict_answer for x in s] == ["48", "12", None, None, None, None]
    assert [x.lenient_answer for x in s] == ["48", "12", "19", None, "100", "14"]
    assert [x.strict_correct for x in s] == [True, True, False, False, False, False]
    assert [x.lenient_correct for x in s] == [True, True, True, False, True, False]
    assert [(x.n_claims, x.n_true_claims) for x in s] == [
        (3, 3),
        (1, 0),
        (2, 2),
        (0, 0),
        (1, 1),
        (2, 2),
    ]
    assert [x.right_via_wrong_step for x in s] == [False, True, False, False, False, False]
    assert s[1].false_claims == ["7 + 5 = 13"]
    assert [x.truncated for x in s] == [False, False, False, False, False, True]
    assert [x.reasoning_length for x in s] == [15, 10, 15, None, 5, 14]
    assert "duplicated <answer>" in s[4].problems


def test_aggregate_exact(report):
    m = report.metrics
    assert (m["n_examples"], m["n_completions"], m["samples_per_example"]) == (6, 6, 1)
    assert m["format_strict"] == pytest.approx(2 / 6)  # the perfect one and the wrong-step one
    assert m["format_lenient"] == pytest.approx(5 / 6)
    assert m["accuracy_strict"] == pytest.approx(2 / 6)
    assert m["accuracy_lenient"] == pytest.approx(4 / 6)
    assert m["majority_accuracy"] is None and m["any_correct"] is None  # K = 1
    st = m["steps"]
    assert (st["claims"], st["true_claims"]) == (9, 8)
    assert st["step_validity"] == pytest.approx(8 / 9)
    assert (st["traces_with_claims"], st["traces_all_true"]) == (5, 4)
    assert st["trace_validity"] == pytest.approx(4 / 5)
    assert st["right_answer_wrong_step"] == 1
    assert st["right_answer_wrong_step_share_of_correct"] == pytest.approx(1 / 4)
    ops = st["by_operation"]
    assert list(ops) == ["+", "-", "*"]  # in cotune.verify.OPERATIONS order, only those seen
    assert [(ops[k]["claims"], ops[k]["true_claims"]) for k in ops] == [(5, 4), (1, 1), (3, 3)]
    assert ops["+"]["step_validity"] == pytest.approx(4 / 5)
    assert ops["+"]["step_validity_ci95"]["n"] == 5
    assert m["truncated"] == 1 and m["truncated_rate"] == pytest.approx(1 / 6)
    rl = m["reasoning_length"]
    assert rl == {"unit": "words", "n": 5, "mean": pytest.approx(59 / 5), "median": 14, "max": 15}
    assert m["problems"]["missing <answer>"] == 3  # no tags, empty, truncated
    assert m["answer_sources"] == {"tag": 3, "the answer is": 1, "none": 1, "last number": 1}


def test_breakdowns_by_task_and_difficulty(report):
    assert list(report.by_task) == ["arithmetic", "word"]
    a, w = report.by_task["arithmetic"], report.by_task["word"]
    assert a["n_examples"] == 3 and w["n_examples"] == 3
    assert a["format_strict"] == pytest.approx(2 / 3) and w["format_strict"] == 0
    assert a["accuracy_strict"] == pytest.approx(2 / 3) and w["accuracy_strict"] == 0
    assert a["accuracy_lenient"] == 1 and w["accuracy_lenient"] == pytest.approx(1 / 3)
    assert a["steps"]["right_answer_wrong_step"] == 1 and w["steps"]["right_answer_wrong_step"] == 0
    assert w["truncated"] == 1
    assert list(report.by_difficulty) == ["1", "2"]
    assert report.by_difficulty["1"]["n_examples"] == 4
    assert report.by_difficulty["2"]["accuracy_strict"] == pytest.approx(1 / 2)


def test_gallery_worst_first(report):
    g = report.gallery
    assert [x["id"] for x in g["wrong_answer"]] == ["r4", "r6"]
    assert [x["id"] for x in g["malformed"]] == ["r4", "r6", "r3", "r5"]
    assert [x["id"] for x in g["invalid_steps"]] == ["r2"]
    item = g["invalid_steps"][0]
    assert item["false_claims"] == ["7 + 5 = 13"] and item["gold"] == "12"
    assert item["question"] == "What is 7 + 5?" and item["completion"] == COMPLETIONS[1]
    small = evaluate(None, RECORDS, completions=COMPLETIONS, progress=False, gallery_size=1)
    assert [x["id"] for x in small.gallery["malformed"]] == ["r4"]


def test_truncation_uses_generator_flag_when_known():
    unclosed = "<reasoning>1 + 1 = 2</reasoning>\n<answer>2"
    closed = "<reasoning>1 + 1 = 2</reasoning>\n<answer>2</answer>"
    assert looks_truncated(unclosed) and not looks_truncated(closed)
    assert score_completion(unclosed, "2", hit_limit=True).truncated
    assert not score_completion(unclosed, "2", hit_limit=False).truncated  # stopped by EOS
    assert not score_completion(closed, "2", hit_limit=True).truncated  # ended exactly at the limit
    assert score_completion("Reasoning: 1 + 1 = 2", "2", schema="plain").truncated


def test_plain_schema():
    s = score_completion("Reasoning: 2 * 3 = 6\nAnswer: 6", "6", schema="plain")
    assert s.well_formed and s.strict_correct and (s.n_claims, s.n_true_claims) == (1, 1)
    assert not score_completion("<answer>6</answer>", "6", schema="plain").well_formed


def test_majority_vote_rules():
    assert majority_vote(["1/2", "0.5", "3"]) == ("1/2", 2)
    assert majority_vote(["5", None, "6"]) == ("5", 1)  # tie: first seen wins
    assert majority_vote([None, None]) == (None, 0)
    assert majority_vote(["$1,000", "1000", "999"]) == ("$1,000", 2)


def test_self_consistency_k3():
    recs = [
        EvalRecord("a", "q a", "48", task="t"),
        EvalRecord("b", "q b", "10", task="t"),
        EvalRecord("c", "q c", "5", task="u"),
    ]

    def c(ans: str) -> str:
        return f"<reasoning>r</reasoning>\n<answer>{ans}</answer>"

    comps = {
        "a": [c("48"), c("47"), c("48.0")],  # majority 48 (2 votes): right
        "b": [c("7"), c("10"), c("7")],  # majority 7: wrong, though one sample is right
        "c": [c("5"), "", c("6")],  # tie 5/6, empty does not vote: first seen (5) wins
    }
    rep = evaluate(None, recs, completions=comps, progress=False)
    m = rep.metrics
    assert (m["n_examples"], m["n_completions"], m["samples_per_example"]) == (3, 9, 3)
    assert m["accuracy_lenient"] == pytest.approx(4 / 9)
    assert m["majority_accuracy"] == pytest.approx(2 / 3)
    assert m["any_correct"] == 1.0
    assert [(r.majority_answer, r.majority_votes, r.majority_correct) for r in rep.rows] == [
        ("48", 2, True),
        ("7", 2, False),
        ("5", 1, True),
    ]
    assert rep.by_task["t"]["majority_accuracy"] == pytest.approx(1 / 2)
    assert rep.by_task["u"]["majority_accuracy"] == 1.0
    assert rep.meta["samples"] == 3


def test_answer_only_csv(tmp_path):
    p = tmp_path / "bench.csv"
    p.write_text('id,question,answer\nq1,What is 999 + 235?,"1,234"\nq2,What is 2 * 3?,6\n')
    recs = load_records(p)
    assert [(r.id, r.answer, r.task, r.reasoning) for r in recs] == [
        ("q1", "1,234", "unknown", ""),
        ("q2", "6", "unknown", ""),
    ]
    rep = evaluate(
        None,
        recs,
        completions=["<reasoning>999 + 235 = 1234</reasoning>\n<answer>1234</answer>", "5"],
        progress=False,
    )
    assert rep.metrics["accuracy_strict"] == pytest.approx(1 / 2)
    assert rep.metrics["accuracy_lenient"] == pytest.approx(1 / 2)
    assert rep.metrics["format_lenient"] == 1.0  # "5" is found as the last number
    assert list(rep.by_task) == ["unknown"]


def test_canonical_jsonl_and_number_answers(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [
        {
            "id": "x",
            "task": "arith",
            "question": "1+1?",
            "reasoning": "1 + 1 = 2",
            "answer": 2,
            "source": "gen",
            "difficulty": 3,
        },
        {"question": "2+2?", "answer": "4"},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    recs = load_records(p)
    assert recs[0] == EvalRecord("x", "1+1?", "2", "arith", 3, "1 + 1 = 2", "gen")
    assert recs[1].id == "line-2" and recs[1].difficulty is None
    assert len(load_records(p, limit=1)) == 1


@pytest.mark.parametrize(
    "content,name,expected",
    [
        (
            '{"id": "a", "question": "q", "answer": "1"}\n{"id": "b", "question": ',
            "d.jsonl",
            "d.jsonl:2: malformed JSON",
        ),
        ('{"id": "a", "question": "q"}\n', "d.jsonl", "d.jsonl:1: key 'answer' is missing"),
        (
            '{"id": "a", "question": ["q"], "answer": "1"}\n',
            "d.jsonl",
            "d.jsonl:1: key 'question' is a list",
        ),
        ("[1, 2]\n", "d.jsonl", "d.jsonl:1: expected a JSON object"),
        (
            '{"id": "a", "question": "q", "answer": "1"}\n{"id": "a", "question": "r", "answer": "2"}\n',
            "d.jsonl",
            "d.jsonl:2: duplicate id 'a' (first on line 1)",
        ),
        ("id,question\n1,q\n", "d.csv", "d.csv:1: CSV header"),
        ("id,question,answer\n1,q,2\n2,r,3,extra\n", "d.csv", "d.csv:3: 4 cells; expected 3"),
        ("id,question,answer\n1,,2\n", "d.csv", "d.csv:2: key 'question' is missing"),
        ("x", "d.txt", "unknown extension '.txt'"),
    ],
)
def test_bad_data_names_file_and_line(tmp_path, content, name, expected):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(EvalInputError) as e:
        load_records(p)
    assert expected in str(e.value)


def test_predictions_file_forms(tmp_path):
    p = tmp_path / "p.jsonl"
    lines = [
        {"id": "a", "completion": "x"},
        {"id": "a", "completion": "y", "truncated": True},
        {"id": "b", "completions": ["1", "2"], "finish_reason": "length"},
    ]
    p.write_text("\n".join(json.dumps(x) for x in lines))
    preds = load_predictions(p)
    assert preds.completions == {"a": ["x", "y"], "b": ["1", "2"]}
    assert preds.truncated == {"a": [None, True], "b": [True, True]}
    p.write_text('{"id": "a", "completion": 3}\n')
    with pytest.raises(EvalInputError, match=r"p.jsonl:1: key 'completion' is a int"):
        load_predictions(p)
    p.write_text('{"id": "a", "text": "x"}\n')
    with pytest.raises(EvalInputError, match=r"p.jsonl:1: no 'completion'"):
        load_predictions(p)


def test_few_shot_never_from_evaluated_set():
    for shot in BUILTIN_SHOTS:
        rep = check_steps(shot.reasoning)
        assert rep.n_claims >= 1 and rep.all_correct, shot.id
    evaluated = [EvalRecord("e", BUILTIN_SHOTS[0].question, "48")]
    shots = choose_few_shot(2, evaluated)
    assert [s.id for s in shots] == ["builtin-shot-2", "builtin-shot-3"]
    pool = [
        {"id": "e", "question": "other", "reasoning": "1 + 1 = 2", "answer": "2"},
        {"id": "t1", "question": "no reasoning", "answer": "2"},
        {"id": "t2", "question": "What is 3 + 3?", "reasoning": "3 + 3 = 6", "answer": "6"},
    ]
    assert [s.id for s in choose_few_shot(1, evaluated, pool)] == ["t2"]
    with pytest.raises(ValueError, match="only 1"):
        choose_few_shot(2, evaluated, pool)
    rep = evaluate(None, evaluated, completions=["48"], few_shot=1, progress=False)
    assert rep.meta["few_shot"] == 1 and rep.meta["few_shot_source"] == "builtin"
    assert BUILTIN_SHOTS[1].question in rep.meta["prompt_example"]
    assert "{question}" in rep.meta["prompt_example"]


def test_evaluate_rejects_inconsistent_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        evaluate(None, RECORDS, progress=False)
    with pytest.raises(ValueError, match="6 records"):
        evaluate(None, RECORDS, completions=["x"], progress=False)
    with pytest.raises(ValueError, match="no entry"):
        evaluate(None, RECORDS, completions={"r1": ["x"]}, progress=False)


def test_write_report_files(tmp_path, report):
    paths = write_report(report, tmp_path / "out")
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    assert paths["chart_by_task"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = json.loads(paths["json"].read_text())
    assert d["metrics"]["accuracy_strict"] == pytest.approx(2 / 6)
    assert d["meta"]["template"] == "chat" and d["meta"]["schema"] == "tags"
    preds = [json.loads(x) for x in paths["predictions"].read_text().splitlines()]
    assert [p["id"] for p in preds] == ["r1", "r2", "r3", "r4", "r5", "r6"]
    assert preds[5]["truncated"] is True and preds[0]["completion"] == COMPLETIONS[0]
    md = paths["markdown"].read_text()
    assert "right answer via a wrong step" in md and "| arithmetic | 3 |" in md
    assert "7 + 5 = 13" in md  # the gallery shows the false claim


def test_accepts_cotune_data_records():
    records = pytest.importorskip("cotune.data.records")
    r = records.Record("x", "add", "What is 1 + 1?", "1 + 1 = 2", "2", "generated", 1)
    rep = evaluate(None, [r], completions=[f"<reasoning>{r.reasoning}</reasoning>\n<answer>2</answer>"],
                   progress=False)  # fmt: skip
    assert rep.metrics["accuracy_strict"] == 1.0 and list(rep.by_difficulty) == ["1"]
    assert rep.rows[0].task == "add"


def test_report_shows_step_validity_by_operation(tmp_path, report):
    md = write_report(report, tmp_path / "r")["markdown"].read_text()
    section = md.split("## Step validity by operation", 1)[1].split("##", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert [r.split(" | ")[:2] for r in rows] == [["| `+`", "5"], ["| `-`", "1"], ["| `*`", "3"]]
    assert rows[0].split(" | ")[2].startswith("80.0% [")
