"""GSM8K calculator notes -> claims cotune.verify checks, on real GSM8K lines.

Every ``RAW`` line is copied verbatim from ``data/gsm8k/`` (MIT, LICENSE beside it); the file
and line are named so a reader can find it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from cotune import data
from cotune.data import gsm8k
from cotune.data.importers import parse_gsm8k_answer
from cotune.verify import find_claims

DATA = Path(__file__).resolve().parents[1] / "data" / "gsm8k"

RAW = {
    # train.jsonl:1, every note carried by the text
    "natalia": '{"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?", "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\\n#### 72"}',
    # train.jsonl:2, "$" between "=" and the note, "x" for times, a decimal
    "weng": '{"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?", "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\\n#### 10"}',
    # train.jsonl:1955, units between the numbers: the note is restated
    "burrs": '{"question": "Andrew\'s dog has 12 burrs and six times as many ticks as burrs. How many foreign objects total are caught in the dog\'s fur?", "answer": "First find how many burrs are caught in the dog\'s fur: 12 burrs * 6 ticks/burr = <<12*6=72>>72 ticks\\nThen add the number of burrs to find the total number objects: 72 objects + 12 objects = <<72+12=84>>84 objects\\n#### 84"}',
    # train.jsonl:3162, the text shows only the value: the claim is inserted
    "eggs": '{"question": "It was Trevor\'s job to collect fresh eggs from the family\'s 4 chickens every morning.   He got 4 eggs from Gertrude and 3 eggs from Blanche.  Nancy laid 2 eggs as did Martha.  On the way, he dropped 2 eggs.  How many eggs did Trevor have left?", "answer": "He collected 4+3+2+2 eggs for a total of <<4+3+2+2=11>>11 eggs.\\nHe dropped 2 eggs so 11-2 = <<11-2=9>>9 eggs left\\n#### 9"}',
    # train.jsonl:4107, restating before the value would chain into "22 = 22 - 11"
    "levi": '{"question": "Solomon collected three times as many cans as Juwan. Levi collected half of what Juwan collected. Solomon collected 66 cans. How many cans did the boys collect in all?", "answer": "Solomon is 3*Juwan so Juwan is 1/3 of Solomon = 66/3 = 22\\nLevi collected half of 22 = <<22-11=11>>11\\nCombined the boys collected 66 + 22 + 11 = <<66+22+11=99>>99 cans in all.\\n#### 99"}',
    # test.jsonl:411, a run-on chain "$3/2 = $1.50+$3.00=$4.50" (repaired)
    "taffy": '{"question": "Sally went to the seashore for vacation.  Her parents gave her $10 to buy whatever she wanted.  At the trinket shop, taffy was on sale for \\"Buy 1 pound at $3, get 1 pound 1/2 off.\\"  She scooped up 2 pounds.  She also bought a mixed bag of seashells for $1.50 and 4 magnets that were $0.25 each.  How much money does Sally have left?", "answer": "Taffy is buying 1 pound for $3 and gets 1 pound half off. So 1/2 off of 1 pound is $3/2 = $1.50+$3.00=$4.50\\n4 magnets at $0.25 each is 4*.25=$<<4*0.25=1.00>>1.00\\nWhen you add all her purchases, $4.50+$1.50+$1.00 = $<<4.5+1.5+1=7.00>>7.00\\nShe had $10 and spent $7 so she had $10-$7 = $<<10-7=3.00>>3.00 left over\\n#### 3"}',
    # train.jsonl:6158, a false claim in GSM8K itself: 70 + 40 = 100 (dropped)
    "magician": '{"question": "A performing magician has a disappearing act where he makes a random member of his audience disappear and reappear. Unfortunately, one-tenth of the time, the audience member never reappears. However, one-fifth of the time, two people reappear instead of only one. If the magician has put on 100 performances of the act this year, how many people have reappeared?", "answer": "One-tenth of the time, no one reappears, so there have been 100 / 10 = <<100/10=10>>10 times no one has reappeared.\\nOne-fifth of the time, two people reappear, so there have been 100 / 5 = <<100/5=20>>20 times 2 people have reappeared.\\nIn those 20 times, 2 * 20 = <<2*20=40>>40 people have reappeared in all.\\nThus, there have been 100 - 10 - 20 = <<100-10-20=70>>70 times one person has reappeared.\\nTherefore, over 100 acts, 70 + 40 = 100 people have reappeared in all.\\n#### 110"}',
    # train.jsonl:7179, a false claim in GSM8K itself: 1152/1536 is 0.75, not .5 (dropped)
    "tv": '{"question": "When Mark bought his first tv it was was 24 inches wide and 16 inches tall. It cost $672. His new tv is 48 inches wide and 32 inches tall and costs $1152. How much more expensive as measure by cost per square inch, was his first TV compared to his newest TV?", "answer": "His first TV was 384 square inches because 24 x 16 = <<24*16=384>>384\\nHis first TV cost $1.75 per square inch because 672 / 384 = <<672/384=1.75>>1.75\\nHis new TV is 1,536 square inches.\\nIt costs $.5 per square inch because 1152/ 1,536 = .5\\nHis old TV cost $1 more per square inch because 1.75 - .75 = <<1.75-.75=1>>1\\n#### 1"}',
}


def _convert(name: str) -> tuple[str, str, Counter]:
    notes: Counter = Counter()
    reasoning, answer = parse_gsm8k_answer(json.loads(RAW[name])["answer"], notes)
    return reasoning, answer, notes


def test_raw_lines_are_real() -> None:
    """The fixtures above are the shipped data, byte for byte."""
    lines = {
        f"{split}.jsonl": (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        for split in ("train", "test")
    }
    where = {
        "natalia": ("train.jsonl", 1),
        "weng": ("train.jsonl", 2),
        "burrs": ("train.jsonl", 1955),
        "eggs": ("train.jsonl", 3162),
        "levi": ("train.jsonl", 4107),
        "taffy": ("test.jsonl", 411),
        "magician": ("train.jsonl", 6158),
        "tv": ("train.jsonl", 7179),
    }
    for name, (file, line) in where.items():
        assert json.loads(lines[file][line - 1]) == json.loads(RAW[name]), name


@pytest.mark.parametrize(
    "name,reasoning,notes",
    [
        (
            "natalia",
            "Natalia sold 48/2 = 24 clips in May.\n"
            "Natalia sold 48+24 = 72 clips altogether in April and May.",
            {"note_carried": 2},
        ),
        (
            "weng",
            "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.",
            {"note_carried": 2},
        ),
        (
            "burrs",
            "First find how many burrs are caught in the dog's fur: 12 burrs * 6 ticks/burr = "
            "12 * 6 = 72 ticks\nThen add the number of burrs to find the total number objects: "
            "72 objects + 12 objects = 72 + 12 = 84 objects",
            {"note_restated": 2},
        ),
        (
            "eggs",
            "He collected 4+3+2+2 eggs for a total of 4 + 3 + 2 + 2 = 11 eggs.\n"
            "He dropped 2 eggs so 11-2 = 9 eggs left",
            {"note_inserted": 1, "note_carried": 1},
        ),
        (
            "levi",
            "Solomon is 3*Juwan so Juwan is 1/3 of Solomon = 66/3 = 22\n"
            "Levi collected half of 22 = 11 (22 - 11 = 11)\n"
            "Combined the boys collected 66 + 22 + 11 = 99 cans in all.",
            {"note_restated": 1, "note_carried": 1},
        ),
        (
            "taffy",
            "Taffy is buying 1 pound for $3 and gets 1 pound half off. So 1/2 off of 1 pound is "
            "$3/2 = $1.50, $1.50+$3.00=$4.50\n4 magnets at $0.25 each is 4*.25=$1.00\n"
            "When you add all her purchases, $4.50+$1.50+$1.00 = $7.00\n"
            "She had $10 and spent $7 so she had $10-$7 = $3.00 left over",
            {"note_carried": 3, "repaired_run_on_chain": 1},
        ),
    ],
)
def test_notes_become_true_claims(name: str, reasoning: str, notes: dict[str, int]) -> None:
    got, answer, counted = _convert(name)
    assert got == reasoning
    assert dict(counted) == notes
    assert answer == json.loads(RAW[name])["answer"].rpartition("####")[2].strip()
    claims = find_claims(got)
    assert claims and all(c.correct for c in claims), [c.text for c in claims]
    # every note's operation is now a claim in the text
    n_notes = json.loads(RAW[name])["answer"].count("<<")
    assert len(claims) >= n_notes


def test_false_gsm8k_claims_are_dropped_by_cleaning(tmp_path: Path) -> None:
    reasoning, _, notes = _convert("tv")
    assert "because 1152/ 1,536 = .5" in reasoning and notes == Counter(note_carried=3)
    p = tmp_path / "g.jsonl"
    p.write_text("\n".join(RAW[k] for k in ("natalia", "tv", "weng", "magician")) + "\n")
    recs = data.import_file("gsm8k", p)
    kept, report = data.clean(recs, check_claims=True)
    assert [r.answer for r in kept] == ["72", "10"]
    # the magician's "70 + 40 = 100" also disagrees with its answer (110): that is found first
    assert dict(report.reasons) == {"false_claim": 1, "answer_inconsistent": 1}
    assert [x.detail for x in report.rejects if x.reason == "false_claim"] == ["1152/ 1,536 = .5"]


def test_unreadable_claim_has_its_own_reason() -> None:
    r = data.Record("x", "gsm8k", "Q?", "So 1(192 = $192.00 in cookies", "192", "gsm8k")
    _, report = data.clean([r], check_claims=True)
    assert dict(report.reasons) == {"unreadable_claim": 1}


def test_note_expression() -> None:
    assert gsm8k.note_expression("48/2") == "48 / 2"
    assert gsm8k.note_expression("+3+3") == "3 + 3"
    assert gsm8k.note_expression("2*20*.01") == "2 * 20 * 0.01"
    assert gsm8k.note_expression("560//10") == "560 / 10"
    assert gsm8k.note_expression("(1/2)/(1/4)") == "(1 / 2) / (1 / 4)"
    assert gsm8k.note_expression("-5+3") == "-5 + 3"


def test_full_gsm8k_conversion_counts() -> None:
    """The whole train split: how each note was converted and why records are dropped. The
    exact counts are in docs/data.md; these bounds fail if conversion or checking regresses."""
    notes: Counter = Counter()
    recs = [r for _, r, _ in data.importers.iter_gsm8k(DATA / "train.jsonl", notes)]
    test = data.import_file("gsm8k", DATA / "test.jsonl")
    kept, report = data.clean(recs, check_claims=True, exclude=test, max_reasoning_tokens=None)
    assert len(recs) == 7473
    assert notes["note_carried"] + notes["note_restated"] + notes["note_inserted"] >= 23_000
    assert notes["note_unplaced"] <= 15
    assert report.reasons["false_claim"] + report.reasons["unreadable_claim"] <= 60
    assert len(kept) >= 7_380, str(report)
    # every kept record's claims all hold
    assert all(c.correct for r in kept for c in find_claims(r.reasoning))
