"""Tokenization, loss mask and packing: what the loss sees is exactly the completion + end."""

from __future__ import annotations

import numpy as np
import pytest

from cotune.format import render_completion
from cotune.model.tokenizer import tiny_tokenizer
from cotune.train.batches import (
    attention_mask,
    build_batch,
    make_plan,
    pack_first_fit,
    tokenize_record,
    tokenize_records,
)

REC = {
    "id": "a1",
    "task": "arith",
    "question": "What is 12 * 4?",
    "reasoning": "12 * 4 = 48.",
    "answer": "48",
    "source": "test",
    "difficulty": 1,
}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("template,schema", [("chat", "tags"), ("plain", "plain")])
def test_mask_is_completion_plus_end(tok, template: str, schema: str) -> None:
    ex = tokenize_record(REC, tok, schema=schema, template=template, max_seq_len=256)
    assert ex is not None
    completion = tok.encode(render_completion(REC["reasoning"], REC["answer"], schema))
    end = tok.end_of_turn_id if template == "chat" else tok.eos_id
    trained = ex.tokens[ex.loss_mask].tolist()
    assert trained == completion + [end]
    # Everything before is the prompt (one BOS, never trained), nothing after the end token.
    assert ex.tokens[0] == tok.bos_id and (ex.tokens == tok.bos_id).sum() == 1
    assert not ex.loss_mask[: ex.prompt_len].any() and ex.loss_mask[ex.prompt_len :].all()
    assert ex.tokens[-1] == end
    assert tok.decode(trained) == render_completion(REC["reasoning"], REC["answer"], schema)


def test_overlong_dropped_or_reasoning_truncated(tok) -> None:
    long = dict(REC, reasoning=" ".join(f"{i} + 1 = {i + 1}." for i in range(60)))
    exs, stats = tokenize_records([REC, long], tok, max_seq_len=96)
    assert stats.n_dropped_overlong == 1 and len(exs) == 1 and stats.dropped_ids == ["a1"]
    ex = tokenize_record(long, tok, max_seq_len=96, overlong="truncate_reasoning")
    assert ex is not None and ex.truncated and len(ex) <= 96
    text = tok.decode(ex.tokens[ex.loss_mask].tolist())
    assert text.endswith("<answer>48</answer>")  # the answer is never cut


def test_first_fit_packing() -> None:
    rows = pack_first_fit([60, 50, 40, 30, 20], 100)
    assert rows == [[0, 2], [1, 3, 4]]
    with pytest.raises(ValueError):
        pack_first_fit([101], 100)


def test_batch_gather_points_at_predecessors(tok) -> None:
    recs = [dict(REC, question=f"What is {i} * 4?", answer=str(4 * i)) for i in range(6)]
    exs, _ = tokenize_records(recs, tok, max_seq_len=128)
    plan = make_plan(exs, row_len=128, rows_per_micro=2, micro_batches=2, seed=1)
    b = plan.batch(exs, 0, tok.pad_id)
    flat = b.tokens.reshape(2, -1)
    for a in range(2):
        w = b.weights[a] > 0
        # The label is the token right after the gathered position, in the same segment.
        assert (flat[a][b.gather[a][w] + 1] == b.labels[a][w]).all()
        seg = b.segments.reshape(2, -1)[a]
        assert (seg[b.gather[a][w]] == seg[b.gather[a][w] + 1]).all()
    assert b.n_trained == int(b.weights.sum())
    # Positions restart at 0 for each packed example.
    assert (b.positions[b.segments > 0] >= 0).all()
    starts = (b.positions == 0) & (b.segments > 0)
    assert starts.sum() == b.n_examples


def test_attention_mask_block_diagonal() -> None:
    seg = np.array([[1, 1, 2, 2, 2, 0]])
    m = attention_mask(seg)[0]
    assert m[1, 0] and not m[0, 1]  # causal
    assert not m[2, 1] and m[4, 2]  # no attention across examples
    assert not m[5].any() and not m[:, 5].any()  # padding isolated


def test_plan_is_deterministic_and_fixed_shape(tok) -> None:
    recs = [dict(REC, question=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(30)]
    exs, _ = tokenize_records(recs, tok, max_seq_len=128)
    p1 = make_plan(exs, row_len=128, rows_per_micro=2, steps=7, seed=3)
    p2 = make_plan(exs, row_len=128, rows_per_micro=2, steps=7, seed=3)
    assert p1.steps == p2.steps and len(p1) == 7
    shapes = {
        build_batch(
            exs, st, micro_batches=1, rows_per_micro=2, row_len=128, bucket=p1.bucket
        ).gather.shape
        for st in p1.steps
    }
    assert shapes == {(1, p1.bucket)}


def test_mask_values_leaves_each_claim_value_untrained(tok) -> None:
    """With ``mask_values`` the tokens of every claim's value (what the calculator writes)
    are in the sequence and not trained; everything else of the completion still is."""
    rec = dict(REC, reasoning="Cost: 12 * 4 = 48. Left: 50 - 48 = 2.", answer="2")
    plain = tokenize_record(rec, tok, max_seq_len=256)
    masked = tokenize_record(rec, tok, max_seq_len=256, mask_values=True)
    assert plain is not None and masked is not None
    # the same text either way, fewer targets
    assert tok.decode(masked.tokens.tolist()) == tok.decode(plain.tokens.tolist())
    assert masked.n_trained < plain.n_trained
    skipped = [
        t
        for t, m, i in zip(masked.tokens, masked.loss_mask, range(len(masked)), strict=True)
        if not m and i >= masked.prompt_len
    ]
    # the untrained completion tokens are exactly the two values, each with its space
    assert tok.decode([int(t) for t in skipped]).split() == ["48", "2"]
    completion = masked.tokens[masked.prompt_len :].tolist()
    values = [tok.encode(" 48"), tok.encode(" 2")]
    assert all(
        any(completion[i : i + len(v)] == v for i in range(len(completion))) for v in values
    )  # each value tokenized on its own, as the calculator's forced text is
    # the answer and the end token stay trained
    assert tok.decode(masked.tokens[masked.loss_mask].tolist()).endswith("<answer>2</answer>")
    assert masked.loss_mask[-1]
