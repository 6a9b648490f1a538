"""95% Wilson score intervals: the formula on known values, and where reports carry them."""

from __future__ import annotations

import json

import pytest

from cotune.eval import EvalRecord, evaluate, wilson_interval, write_report
from cotune.eval.compare import compare
from cotune.eval.report import fmt_ci, fmt_metric, interval_at, render_markdown


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (0, 10, 0.0, 0.277540),
        (10, 10, 0.722460, 1.0),
        (5, 10, 0.236590, 0.763410),
        (81, 263, 0.255288, 0.366211),
        (1, 1, 0.206543, 1.0),
    ],
)
def test_wilson_known_values(k: int, n: int, lo: float, hi: float) -> None:
    """Reference values worked by hand from the Wilson formula with z = 1.96, z² = 3.8416:

        d = 1 + z²/n,  centre = (p + z²/2n) / d,  half = z·sqrt(p(1-p)/n + z²/4n²) / d

    * 0/10: d = 1.38416, centre = 0.19208 / d = 0.138770, half = 1.96 · 0.098 / d = 0.138770
      -> [0, 0.277540] (the lower bound is exactly 0).
    * 10/10: the mirror image -> [1 - 0.277540, 1] = [0.722460, 1].
    * 5/10: centre 0.5, half = 1.96 · sqrt(0.025 + 0.009604) / d = 0.263410
      -> [0.236590, 0.763410].
    * 81/263: p = 0.307985, d = 1.014607, centre = (0.307985 + 0.007303) / d = 0.310749,
      half = 1.96 · sqrt(0.00081038 + 0.00001388) / d = 0.055462 -> [0.255288, 0.366211].
    * 1/1: d = 4.8416, centre = (1 + 1.9208) / d = 0.603272, half = 1.96 · 0.98 / d = 0.396728
      -> [0.206543, 1].
    """
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=2e-6)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no data rules nothing out
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(3, 7, z=0) == pytest.approx((3 / 7, 3 / 7))
    for bad in ((-1, 5), (6, 5), (0, -1)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_wilson_contains_the_share_and_narrows_with_n() -> None:
    for n in range(1, 80):
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert 0 <= lo <= k / n <= hi <= 1
    widths = [hi - lo for lo, hi in (wilson_interval(n // 2, n) for n in (10, 40, 160, 640))]
    assert widths == sorted(widths, reverse=True)
    assert wilson_interval(128, 256)[1] - wilson_interval(128, 256)[0] < 0.125


RECORDS = [
    EvalRecord("a1", "What is 2 + 2?", "4", task="add", difficulty=1),
    EvalRecord("a2", "What is 3 + 4?", "7", task="add", difficulty=2),
    EvalRecord("m1", "What is 3 * 4?", "12", task="mul", difficulty=1),
    EvalRecord("m2", "What is 5 * 4?", "20", task="mul", difficulty=1),
]
COMPLETIONS = [
    "<reasoning>2 + 2 = 4.</reasoning>\n<answer>4</answer>",
    "<reasoning>3 + 4 = 8.</reasoning>\n<answer>8</answer>",
    "<reasoning>3 * 4 = 12.</reasoning>\n<answer>12</answer>",
    "the answer is 20",
]


@pytest.fixture(scope="module")
def report():
    return evaluate(None, RECORDS, completions=COMPLETIONS, progress=False)


def test_every_share_has_its_interval(report) -> None:
    m = report.metrics
    for key, k, n in (
        ("format_strict", 3, 4),
        ("format_lenient", 4, 4),
        ("accuracy_strict", 2, 4),
        ("accuracy_lenient", 3, 4),
        ("truncated_rate", 0, 4),
    ):
        ci = m[key + "_ci95"]
        assert (ci["successes"], ci["n"]) == (k, n), key
        assert (ci["lo"], ci["hi"]) == wilson_interval(k, n)
        assert m[key] == k / n
    st = m["steps"]
    assert st["step_validity_ci95"]["n"] == st["claims"] == 3
    assert st["step_validity_ci95"]["successes"] == st["true_claims"] == 2
    assert st["trace_validity_ci95"]["n"] == st["traces_with_claims"] == 3
    assert st["right_answer_wrong_step_share_of_correct_ci95"]["n"] == 3
    assert m["majority_accuracy"] is None and "majority_accuracy_ci95" not in m


def test_breakdowns_have_n_and_intervals(report) -> None:
    for groups, names in ((report.by_task, ["add", "mul"]), (report.by_difficulty, ["1", "2"])):
        assert list(groups) == names
        for g in groups.values():
            ci = g["accuracy_strict_ci95"]
            assert ci["n"] == g["n_completions"] == g["n_examples"]
            assert ci["lo"] <= g["accuracy_strict"] <= ci["hi"]
    assert report.by_task["mul"]["accuracy_strict_ci95"]["successes"] == 1
    assert report.by_difficulty["1"]["accuracy_strict_ci95"]["n"] == 3


def test_markdown_json_and_compare_show_intervals(tmp_path, report) -> None:
    paths = write_report(report, tmp_path / "r")
    d = json.loads(paths["json"].read_text())
    assert d["metrics"]["accuracy_strict_ci95"]["n"] == 4
    assert d["by_task"]["add"]["accuracy_strict_ci95"]["n"] == 2
    md = paths["markdown"].read_text()
    lo, hi = wilson_interval(2, 4)
    assert f"| accuracy (strict) | 50.0% [{100 * lo:.1f}, {100 * hi:.1f}] (n=4) |" in md
    assert "| add | 2 |" in md and "| 1 | 3 |" in md  # per task and per difficulty, with n
    lo, hi = wilson_interval(1, 2)
    assert f"50.0% [{100 * lo:.1f}, {100 * hi:.1f}]" in md
    c = compare(tmp_path / "r", tmp_path / "r", tmp_path / "cmp")
    assert c.rows[0][3] == 0
    assert "(n=4)" in (tmp_path / "cmp" / "compare.md").read_text()


def test_reports_without_intervals_still_render(report) -> None:
    d = json.loads(json.dumps(report.to_dict()))
    for groups in (d["by_task"], d["by_difficulty"], {"all": d["metrics"]}):
        for m in groups.values():
            for k in [k for k in m if k.endswith("_ci95")]:
                del m[k]
            for k in [k for k in m["steps"] if k.endswith("_ci95")]:
                del m["steps"][k]
    assert interval_at(d["metrics"], ("accuracy_strict",)) is None
    assert fmt_metric(d["metrics"], ("accuracy_strict",)) == "50.0%"
    assert "| accuracy (strict) | 50.0% |" in render_markdown(d)
    assert fmt_ci(None, None) == "–"
