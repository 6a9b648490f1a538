"""Records -> token ids + loss mask -> packed rows -> fixed-shape training batches.

Why this shape of data:

* The loss covers the completion (reasoning + answer, in the configured schema) and the end
  token only; the prompt teaches nothing and costs the 262k-wide output projection, so its
  positions are never even sent through it: each batch carries a fixed-size *gather bucket*
  of the flat positions whose next token is trained, plus their labels and weights.
* Examples are packed first-fit into rows of ``max_seq_len`` with segment ids (block-diagonal
  causal attention, built from the ids inside the step) and positions that restart at 0 for
  every example, so packed training computes exactly what unpacked training would, without
  spending compute on padding.
* Every batch of a run has the same shapes (rows, row length, bucket size), so the jitted step
  compiles once. The whole plan is a pure function of (records, config, seed): resuming at
  step k reproduces the batches an uninterrupted run would have seen.
* An answer is never cut off: over-long examples are dropped and counted, or, when configured,
  only their reasoning is shortened.
* With ``mask_values`` the value of every arithmetic claim in the reasoning (`` 24`` in
  ``48 / 2 = 24``) is in the sequence but not a target: a model that generates with the
  calculator (:mod:`cotune.calculator`) never writes those tokens itself, so training it to
  would spend its updates on arithmetic it will not do. Each value is tokenized on its own,
  as the calculator's forced text is, so training sees the tokens generation will see.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cotune.format import prompt_segments, render_completion
from cotune.model.tokenizer import Tokenizer
from cotune.verify import find_claims


@dataclass(frozen=True)
class Example:
    """One tokenized record: ``tokens`` = BOS + prompt + completion + end token.

    ``loss_mask[i]`` is True when token ``i`` is a training *target* (a completion token or the
    end token); the model is trained to predict it from the tokens before it.
    """

    tokens: np.ndarray  # int32 [n]
    loss_mask: np.ndarray  # bool [n]
    prompt_len: int
    record_index: int
    truncated: bool = False

    @property
    def n_trained(self) -> int:
        return int(self.loss_mask.sum())

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass
class TokenizeStats:
    """What tokenization did to the data set (shown by ``--dry-run`` and logged)."""

    n_records: int = 0
    n_kept: int = 0
    n_dropped_overlong: int = 0
    n_truncated: int = 0
    lengths: list[int] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    dropped_ids: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        arr = np.asarray(self.lengths or [0])
        tr = np.asarray(self.trained or [0])
        return {
            "records": self.n_records,
            "kept": self.n_kept,
            "dropped_overlong": self.n_dropped_overlong,
            "truncated_reasoning": self.n_truncated,
            "tokens_total": int(arr.sum()),
            "trained_tokens_total": int(tr.sum()),
            "len_min": int(arr.min()),
            "len_mean": float(arr.mean()),
            "len_p50": float(np.percentile(arr, 50)),
            "len_p95": float(np.percentile(arr, 95)),
            "len_max": int(arr.max()),
        }


def end_token_id(tokenizer: Tokenizer, template: str) -> int:
    """The token that ends a completion: ``<end_of_turn>`` in chat, ``<eos>`` in plain."""
    return tokenizer.end_of_turn_id if template == "chat" else tokenizer.eos_id


def as_dict(rec: Any) -> dict[str, Any]:
    """Canonical records arrive as dicts or as ``cotune.data`` ``Record`` objects."""
    if isinstance(rec, dict):
        return rec
    if hasattr(rec, "to_dict"):
        return rec.to_dict()
    return dict(vars(rec))


def _field(rec: dict[str, Any], key: str, index: int) -> str:
    val = rec.get(key)
    if not isinstance(val, str):
        rid = rec.get("id", f"#{index}")
        raise ValueError(f"record {rid}: field '{key}' must be text, got {type(val).__name__}")
    return val


def value_spans(reasoning: str) -> list[tuple[int, int]]:
    """Where each claim's value is in ``reasoning``, with the space before it: the text the
    calculator writes after ``=`` (``48 / 2 =`` -> `` 24``)."""
    out = []
    for c in find_claims(reasoning):
        end = c.span[1]
        start = end - len(c.claimed)
        if start < 0 or reasoning[start:end] != c.claimed:
            continue  # the claim was trimmed (an unbalanced parenthesis): leave it trained
        if start > 0 and reasoning[start - 1] == " ":
            start -= 1
        out.append((start, end))
    return out


def encode_completion(
    tokenizer: Tokenizer, reasoning: str, answer: str, schema: str, mask_values: bool = False
) -> tuple[list[int], list[bool]]:
    """The completion's ids and, per id, whether it is trained (all of them unless
    ``mask_values``: then each claim value is encoded on its own and not trained)."""
    text = render_completion(reasoning, answer, schema)
    if not mask_values:
        ids = tokenizer.encode(text)
        return ids, [True] * len(ids)
    off = text.find(reasoning.strip())
    ids: list[int] = []
    mask: list[bool] = []
    at = 0
    pieces: list[tuple[str, bool]] = []
    for start, end in value_spans(reasoning.strip()):
        pieces += [(text[at : off + start], True), (text[off + start : off + end], False)]
        at = off + end
    pieces.append((text[at:], True))
    for piece, trained in pieces:
        if piece:
            got = tokenizer.encode(piece)
            ids += got
            mask += [trained] * len(got)
    return ids, mask


def tokenize_record(
    rec: dict[str, Any],
    tokenizer: Tokenizer,
    *,
    schema: str = "tags",
    template: str = "chat",
    max_seq_len: int = 256,
    max_reasoning_tokens: int | None = None,
    overlong: str = "drop",
    record_index: int = 0,
    mask_values: bool = False,
) -> Example | None:
    """Tokenize one canonical record; ``None`` when it cannot fit without cutting the answer."""
    rec = as_dict(rec)
    question = _field(rec, "question", record_index)
    reasoning = _field(rec, "reasoning", record_index).strip()
    answer = _field(rec, "answer", record_index)
    prompt = tokenizer.encode_segments(
        prompt_segments(question, template=template, schema=schema), add_bos=True
    )
    end = end_token_id(tokenizer, template)

    def build(reason: str) -> tuple[list[int], list[bool]]:
        return encode_completion(tokenizer, reason, answer, schema, mask_values)

    completion, trained = build(reasoning)
    truncated = False
    r_ids = tokenizer.encode(reasoning) if reasoning else []
    too_long_reasoning = max_reasoning_tokens is not None and len(r_ids) > max_reasoning_tokens
    too_long = len(prompt) + len(completion) + 1 > max_seq_len
    if too_long or too_long_reasoning:
        if overlong != "truncate_reasoning":
            return None
        # Shorten only the reasoning (never the answer): keep the longest token prefix that fits.
        budget = max_seq_len - len(prompt) - 1 - (len(completion) - len(r_ids))
        keep = min(len(r_ids), budget - 1)  # -1: re-encoding at a cut can merge differently
        if max_reasoning_tokens is not None:
            keep = min(keep, max_reasoning_tokens)
        while keep > 0:
            completion, trained = build(tokenizer.decode(r_ids[:keep]).rstrip() + " ...")
            if len(prompt) + len(completion) + 1 <= max_seq_len:
                break
            keep -= max(1, keep // 16)
        if keep <= 0:
            return None
        truncated = True
    tokens = np.asarray(prompt + completion + [end], dtype=np.int32)
    mask = np.zeros(tokens.shape[0], dtype=bool)
    mask[len(prompt) : len(prompt) + len(completion)] = trained
    mask[-1] = True  # the end token
    return Example(tokens, mask, len(prompt), record_index, truncated)


def tokenize_records(
    records: Sequence[dict[str, Any]],
    tokenizer: Tokenizer,
    *,
    schema: str = "tags",
    template: str = "chat",
    max_seq_len: int = 256,
    max_reasoning_tokens: int | None = None,
    overlong: str = "drop",
    mask_values: bool = False,
) -> tuple[list[Example], TokenizeStats]:
    """Tokenize a data set, counting (never silently losing) what does not fit."""
    stats = TokenizeStats(n_records=len(records))
    out: list[Example] = []
    for i, rec in enumerate(records):
        ex = tokenize_record(
            rec,
            tokenizer,
            schema=schema,
            template=template,
            max_seq_len=max_seq_len,
            max_reasoning_tokens=max_reasoning_tokens,
            overlong=overlong,
            record_index=i,
            mask_values=mask_values,
        )
        if ex is None:
            stats.n_dropped_overlong += 1
            stats.dropped_ids.append(str(rec.get("id", f"#{i}")))
            continue
        stats.n_kept += 1
        stats.n_truncated += int(ex.truncated)
        stats.lengths.append(len(ex))
        stats.trained.append(ex.n_trained)
        out.append(ex)
    return out, stats


# --------------------------------------------------------------------------- packing


def pack_first_fit(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """Greedy first-fit: each example goes into the first row with room, in the given order.

    Returns rows as lists of example indices. Order inside the data is kept as far as
    possible (so a shuffled epoch stays shuffled) while padding stays small.
    """
    rows: list[list[int]] = []
    free: list[int] = []
    for i, n in enumerate(lengths):
        if n > row_len:
            raise ValueError(f"example {i} has {n} tokens > row length {row_len}")
        for r, room in enumerate(free):
            if room >= n:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(row_len - n)
    return rows


@dataclass
class Batch:
    """Fixed-shape arrays for one optimizer step (``A`` micro-batches of ``B`` rows of ``L``).

    ``gather`` holds flat indices into each micro-batch's ``B*L`` positions whose *next* token
    is trained; ``labels`` those next tokens; ``weights`` 1 for real entries and 0 for bucket
    padding; ``example`` the index (into the step's examples) each entry belongs to, so
    per-example losses can be summed back.
    """

    tokens: np.ndarray  # int32 [A, B, L]
    positions: np.ndarray  # int32 [A, B, L]
    segments: np.ndarray  # int32 [A, B, L], 0 = padding, 1.. = example within row
    gather: np.ndarray  # int32 [A, K]
    labels: np.ndarray  # int32 [A, K]
    weights: np.ndarray  # float32 [A, K]
    example: np.ndarray  # int32 [A, K], -1 for padding
    n_tokens: int  # non-padding tokens in the step
    n_trained: int  # trained targets in the step
    n_examples: int

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "tokens": self.tokens,
            "positions": self.positions,
            "segments": self.segments,
            "gather": self.gather,
            "labels": self.labels,
            "weights": self.weights,
        }


def _rows_for(examples: Sequence[Example], order: Sequence[int], row_len: int, pack: bool):
    if pack:
        rows = pack_first_fit([len(examples[i]) for i in order], row_len)
        return [[order[j] for j in row] for row in rows]
    return [[i] for i in order]


def _trained_in_row(examples: Sequence[Example], row: Sequence[int]) -> int:
    return sum(examples[i].n_trained for i in row)


def build_batch(
    examples: Sequence[Example],
    rows: Sequence[Sequence[int]],
    *,
    micro_batches: int,
    rows_per_micro: int,
    row_len: int,
    bucket: int,
    pad_id: int = 0,
) -> Batch:
    """Lay out ``rows`` (lists of example indices) as one step's fixed-shape arrays."""
    a, b, n = micro_batches, rows_per_micro, row_len
    tokens = np.full((a, b, n), pad_id, np.int32)
    positions = np.zeros((a, b, n), np.int32)
    segments = np.zeros((a, b, n), np.int32)
    gather = np.zeros((a, bucket), np.int32)
    labels = np.zeros((a, bucket), np.int32)
    weights = np.zeros((a, bucket), np.float32)
    example = np.full((a, bucket), -1, np.int32)
    n_tok = n_tr = n_ex = 0
    fill = [0] * a
    for r, row in enumerate(rows):
        mi, bi = divmod(r, b)
        if mi >= a:
            raise ValueError("more rows than the batch holds")
        off = 0
        for s, ei in enumerate(row, start=1):
            ex = examples[ei]
            m = len(ex)
            tokens[mi, bi, off : off + m] = ex.tokens
            positions[mi, bi, off : off + m] = np.arange(m)
            segments[mi, bi, off : off + m] = s
            # target token t (t >= 1) is predicted at position t-1 of the same example.
            tgt = np.nonzero(ex.loss_mask)[0]
            k = tgt.shape[0]
            j = fill[mi]
            if j + k > bucket:
                raise ValueError(f"gather bucket {bucket} too small for micro-batch {mi}")
            gather[mi, j : j + k] = bi * n + off + tgt - 1
            labels[mi, j : j + k] = ex.tokens[tgt]
            weights[mi, j : j + k] = 1.0
            example[mi, j : j + k] = n_ex
            fill[mi] += k
            off += m
            n_tok += m
            n_tr += k
            n_ex += 1
    return Batch(tokens, positions, segments, gather, labels, weights, example, n_tok, n_tr, n_ex)


def round_up(x: int, multiple: int) -> int:
    return max(multiple, int(math.ceil(x / multiple)) * multiple)


@dataclass
class Plan:
    """The deterministic sequence of steps of a run: which rows go into which step."""

    steps: list[list[list[int]]]  # step -> rows -> example indices
    steps_per_epoch: int
    bucket: int
    row_len: int
    rows_per_micro: int
    micro_batches: int
    rows_per_epoch: int
    pad_fraction: float  # padding share of all row positions

    def __len__(self) -> int:
        return len(self.steps)

    def batch(self, examples: Sequence[Example], step: int, pad_id: int = 0) -> Batch:
        return build_batch(
            examples,
            self.steps[step],
            micro_batches=self.micro_batches,
            rows_per_micro=self.rows_per_micro,
            row_len=self.row_len,
            bucket=self.bucket,
            pad_id=pad_id,
        )


def make_plan(
    examples: Sequence[Example],
    *,
    row_len: int,
    rows_per_micro: int,
    micro_batches: int = 1,
    pack: bool = True,
    steps: int | None = None,
    epochs: float = 1.0,
    seed: int = 0,
    bucket_multiple: int = 64,
) -> Plan:
    """Shuffle each epoch (seeded), pack, and cut into steps of ``micro_batches x rows``.

    The gather bucket is the largest trained-token count of any micro-batch in the plan,
    rounded up, so every step has the same shapes. Rows are spread over micro-batches in
    order; the last step of an epoch is padded with empty rows (weight 0).
    """
    if not examples:
        raise ValueError("no training examples left after tokenization (all too long?)")
    rows_per_step = rows_per_micro * micro_batches
    rng = np.random.default_rng(seed)
    epoch_steps: list[list[list[int]]] = []
    all_steps: list[list[list[int]]] = []
    spe = 0
    rows_per_epoch = 0
    pad_positions = total_positions = 0
    want = steps if steps is not None else None
    n_epochs = 0
    while True:
        order = rng.permutation(len(examples)).tolist()
        rows = _rows_for(examples, order, row_len, pack)
        epoch_steps = [rows[i : i + rows_per_step] for i in range(0, len(rows), rows_per_step)]
        if n_epochs == 0:
            spe = len(epoch_steps)
            rows_per_epoch = len(rows)
        for st in epoch_steps:
            used = sum(len(examples[i]) for row in st for i in row)
            pad_positions += rows_per_step * row_len - used
            total_positions += rows_per_step * row_len
        all_steps.extend(epoch_steps)
        n_epochs += 1
        if want is not None:
            if len(all_steps) >= want:
                all_steps = all_steps[:want]
                break
        elif n_epochs >= math.ceil(epochs):
            total = max(1, int(round(epochs * spe)))
            all_steps = all_steps[:total]
            break
    worst = 0
    for st in all_steps:
        for m in range(micro_batches):
            micro = st[m * rows_per_micro : (m + 1) * rows_per_micro]
            worst = max(worst, sum(_trained_in_row(examples, row) for row in micro))
    return Plan(
        steps=all_steps,
        steps_per_epoch=spe,
        bucket=round_up(worst, bucket_multiple),
        row_len=row_len,
        rows_per_micro=rows_per_micro,
        micro_batches=micro_batches,
        rows_per_epoch=rows_per_epoch,
        pad_fraction=pad_positions / max(1, total_positions),
    )


def attention_mask(segments: Any, xp: Any = np) -> Any:
    """Block-diagonal causal mask ``[..., L, L]`` from segment ids (0 = padding, never attended).

    A padding query row attends to nothing; Tunix masks with a large finite negative, so that
    row's softmax is uniform and finite, and its output is never gathered.
    """
    q = segments[..., :, None]
    k = segments[..., None, :]
    n = segments.shape[-1]
    causal = xp.tril(xp.ones((n, n), dtype=bool))
    return (q == k) & (k > 0) & causal


def iter_rows_text(
    example: Example, tokenizer: Tokenizer
) -> Iterable[tuple[str, bool]]:  # pragma: no cover - display helper
    """(piece, trained) pairs for showing an example with its loss mask."""
    for t, m in zip(example.tokens.tolist(), example.loss_mask.tolist(), strict=True):
        yield tokenizer.id_to_piece(t), bool(m)
