"""Running an evaluation: prompts -> completions (generated here or given) -> report.

Base models and fine-tuned models are evaluated with the same instruction from
:mod:`cotune.format`; a base model may also get a few worked examples in the same schema
(few-shot). Few-shot examples come from training data or from the built-in worked
examples below, and never from the evaluated set (an example whose id or question is
being evaluated is skipped), so few-shot accuracy is not inflated by leaked answers. The
report records exactly which prompt was used, and whether the calculator filled in the
values of the model's claims (``calculator: on``): a result with it is another
measurement than the model alone, never to be mixed with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cotune.eval.inputs import EvalRecord, record_from_mapping
from cotune.eval.metrics import ExampleRow, LengthFn, score_example, words
from cotune.eval.report import Report, build_report
from cotune.format import (
    SCHEMAS,
    TEMPLATES,
    Schema,
    Template,
    normalize_answer,
    prompt_segments,
    prompt_text,
    stop_strings,
)
from cotune.progress import progress_bar

DEFAULT_MAX_NEW_TOKENS = 128

# Worked examples for few-shot prompting when no training data is given. Every claim in
# them is true (tests check this with cotune.verify), so they model valid steps.
BUILTIN_SHOTS: list[EvalRecord] = [
    EvalRecord(
        id="builtin-shot-1",
        task="arithmetic",
        question="What is 12 * 4?",
        reasoning="12 * 4 = (10 + 2) * 4. 10 * 4 = 40 and 2 * 4 = 8. 40 + 8 = 48.",
        answer="48",
        source="builtin",
    ),
    EvalRecord(
        id="builtin-shot-2",
        task="word_problem",
        question="Sam has 23 marbles and gives away 9. He then buys 5 more. How many does he have?",
        reasoning="After giving away: 23 - 9 = 14. After buying: 14 + 5 = 19.",
        answer="19",
        source="builtin",
    ),
    EvalRecord(
        id="builtin-shot-3",
        task="arithmetic",
        question="What is 156 / 12?",
        reasoning="12 * 10 = 120, and 156 - 120 = 36. 36 / 12 = 3. So 10 + 3 = 13.",
        answer="13",
        source="builtin",
    ),
    EvalRecord(
        id="builtin-shot-4",
        task="word_problem",
        question="A box holds 6 rows of 7 eggs. 5 eggs break. How many eggs are left?",
        reasoning="The box holds 6 * 7 = 42 eggs. 42 - 5 = 37 are left.",
        answer="37",
        source="builtin",
    ),
]


_FIELDS = ("id", "task", "question", "reasoning", "answer", "source", "difficulty")


def as_records(records: Sequence[Any]) -> list[EvalRecord]:
    """Accept EvalRecords, plain dicts (canonical or answer-only) or any object with the
    canonical attributes (e.g. ``cotune.data.records.Record``), validated the same way.
    """
    out = []
    for i, r in enumerate(records):
        if isinstance(r, EvalRecord):
            out.append(r)
            continue
        if not isinstance(r, Mapping) and hasattr(r, "question") and hasattr(r, "answer"):
            r = {k: getattr(r, k) for k in _FIELDS if hasattr(r, k)}
        out.append(record_from_mapping(r, f"record {i}", f"rec-{i}"))
    return out


def choose_few_shot(
    n: int,
    evaluated: Sequence[EvalRecord],
    pool: Sequence[EvalRecord | Mapping[str, Any]] | None = None,
) -> list[EvalRecord]:
    """The first ``n`` pool examples with reasoning that are not in the evaluated set.

    Raises ValueError when the pool cannot supply ``n`` such examples.
    """
    if n <= 0:
        return []
    cands = BUILTIN_SHOTS if pool is None else as_records(pool)
    ids = {r.id for r in evaluated}
    questions = {normalize_answer(r.question) for r in evaluated}
    chosen = [
        r
        for r in cands
        if r.reasoning.strip() and r.id not in ids and normalize_answer(r.question) not in questions
    ][:n]
    if len(chosen) < n:
        where = "built-in examples" if pool is None else "few-shot data"
        raise ValueError(
            f"asked for {n} few-shot examples but the {where} hold only {len(chosen)} with "
            "reasoning outside the evaluated set; give more (--few-shot-data) or fewer"
        )
    return chosen


def data_fingerprint(records: Sequence[EvalRecord]) -> str:
    """A short hash of (id, question, answer) so a comparison can tell if data differed."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.id, r.question, r.answer]).encode())
    return h.hexdigest()[:16]


def _length_fn(tokenizer: Any) -> tuple[LengthFn, str]:
    if tokenizer is None:
        return words, "words"
    return (lambda s: len(tokenizer.encode(s))), "tokens"


def prompt_ids(
    tokenizer: Any,
    question: str,
    *,
    template: Template,
    schema: Schema,
    shots: list[tuple[str, str, str]],
) -> list[int]:
    """The evaluated prompt, few-shot examples included, as ids: built by
    :func:`cotune.format.prompt_segments` (the same builder the report's ``prompt_example``
    shows), with one BOS and Gemma's control tokens as ids."""
    segs = prompt_segments(question, template=template, schema=schema, few_shot=shots)
    return tokenizer.encode_segments(segs, add_bos=True)


def _generate_all(
    model: Any,
    records: Sequence[EvalRecord],
    *,
    samples: int,
    shots: list[tuple[str, str, str]],
    gen_kwargs: dict[str, Any],
    template: Template,
    schema: Schema,
    batch_size: int,
    progress: bool,
) -> tuple[list[list[str]], list[list[bool | None]]]:
    """Generate ``samples`` completions per record in batches, with a rich progress bar.

    Prompts go to the generator as token ids built here, so the prompt scored is exactly the
    one recorded in the report; as ids carry no schema, the schema's stop strings go with them.
    Greedy decoding hands every prompt to the generator at once, which batches them by
    length and decodes in rounds (:mod:`cotune.generate.api`); sampled decoding goes batch
    by batch, each batch seeded by its index, so a sample depends only on its batch.
    """
    # imported here: scoring given predictions (the CLI's --predictions) never needs JAX
    from cotune.generate import generate

    tok = model.tokenizer
    prompts = [
        prompt_ids(tok, r.question, template=template, schema=schema, shots=shots) for r in records
    ]
    kwargs = {**gen_kwargs, "stop_strings": stop_strings(schema)}
    max_new = gen_kwargs["max_new_tokens"]
    comps: list[list[str]] = [[] for _ in records]
    limits: list[list[bool | None]] = [[] for _ in records]
    total = len(records) * samples
    greedy = gen_kwargs.get("temperature", 0.0) == 0.0 or gen_kwargs.get("top_k") == 1
    with progress_bar("generating", enabled=progress) as bar:
        task = bar.add_task("", total=total)
        if greedy and samples == 1:
            outs = generate(
                model,
                prompts,
                **kwargs,
                batch_size=batch_size,
                on_finish=lambda i, g: bar.advance(task, 1),
            )
            for j, text in enumerate(outs):
                comps[j].append(text)
                limits[j].append(len(tok.encode(text)) >= max_new)
            return comps, limits
        for k in range(samples):
            for b, start in enumerate(range(0, len(records), batch_size)):
                batch = prompts[start : start + batch_size]
                seed = gen_kwargs["seed"] + 1_000_003 * k + b
                outs = generate(model, batch, **{**kwargs, "seed": seed})
                for j, text in enumerate(outs):
                    comps[start + j].append(text)
                    # generate() returns text only; a completion as long as the token
                    # budget is taken to have hit it.
                    limits[start + j].append(len(tok.encode(text)) >= max_new)
                bar.advance(task, len(batch))
    return comps, limits


def _align(name: str, records: Sequence[EvalRecord], given: Any) -> list[list[Any]]:
    """Per-record lists from a list aligned with ``records`` or a dict keyed by id."""
    if isinstance(given, Mapping):
        missing = [r.id for r in records if r.id not in given]
        if missing:
            raise ValueError(f"{name}: no entry for ids {missing[:5]}")
        seq = [given[r.id] for r in records]
    else:
        seq = list(given)
        if len(seq) != len(records):
            raise ValueError(f"{name}: {len(seq)} entries for {len(records)} records")
    return [[x] if isinstance(x, str | bool) or x is None else list(x) for x in seq]


def evaluate(
    model_or_none: Any,
    records: Sequence[Any],
    *,
    completions: Sequence[str | Sequence[str]] | Mapping[str, Sequence[str]] | None = None,
    truncated: Sequence[Any] | Mapping[str, Sequence[bool | None]] | None = None,
    samples: int = 1,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    few_shot: int = 0,
    few_shot_pool: Sequence[EvalRecord | Mapping[str, Any]] | None = None,
    calculator: bool = False,
    template: Template = "chat",
    schema: Schema = "tags",
    batch_size: int = 16,
    progress: bool = True,
    tokenizer: Any = None,
    gallery_size: int = 5,
    meta: Mapping[str, Any] | None = None,
) -> Report:
    """Evaluate a model (generating ``samples`` completions per record) or given completions.

    Either ``model_or_none`` is a :class:`cotune.model.Model` and completions are generated
    with :func:`cotune.generate.generate`, or it is None and ``completions`` holds, per
    record (aligned list or dict by id), one completion or a list of them. ``truncated``
    optionally says, per completion, whether the generator hit its token limit.
    Reasoning length is in tokens when a tokenizer is available (the model's, or
    ``tokenizer``), else in words. ``calculator=True`` generates with the calculator
    (:func:`cotune.generate.generate_detailed`); the report says ``calculator: on``.
    """
    recs = as_records(records)
    if not recs:
        raise ValueError("no records to evaluate")
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; expected one of {SCHEMAS}")
    if (model_or_none is None) == (completions is None):
        raise ValueError("give exactly one of a model or completions")
    if model_or_none is None and calculator:
        raise ValueError("calculator applies when generating; given completions are scored as is")
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if model_or_none is not None and samples > 1 and temperature <= 0:
        raise ValueError("samples > 1 needs temperature > 0 (greedy samples are identical)")
    shots = choose_few_shot(few_shot, recs, few_shot_pool)
    shot_tuples = [(s.question, s.reasoning, s.answer) for s in shots]
    tok = tokenizer if tokenizer is not None else getattr(model_or_none, "tokenizer", None)
    length_fn, unit = _length_fn(tok)

    if model_or_none is not None:
        gen_kwargs = {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "seed": seed,
            "calculator": calculator,
        }
        comps, flags = _generate_all(
            model_or_none,
            recs,
            samples=samples,
            shots=shot_tuples,
            gen_kwargs=gen_kwargs,
            template=template,
            schema=schema,
            batch_size=batch_size,
            progress=progress,
        )
        model_name = getattr(model_or_none, "name", type(model_or_none).__name__)
    else:
        comps = _align("completions", recs, completions)
        flags = (
            _align("truncated", recs, truncated)
            if truncated is not None
            else [[None] * len(c) for c in comps]
        )
        for r, c, f in zip(recs, comps, flags, strict=True):
            if len(c) != len(f):
                raise ValueError(f"{r.id}: {len(c)} completions but {len(f)} truncation flags")
        model_name = None

    rows: list[ExampleRow] = [
        score_example(r, c, schema=schema, hit_limit=f, length_fn=length_fn)
        for r, c, f in zip(recs, comps, flags, strict=True)
    ]
    info: dict[str, Any] = {
        "model": model_name,
        "mode": "generate" if model_or_none is not None else "predictions",
        "template": template,
        "schema": schema,
        "instruction": "default",
        "few_shot": len(shots),
        "few_shot_source": (
            None if not shots else ("builtin" if few_shot_pool is None else "few_shot_data")
        ),
        "few_shot_examples": [
            {"id": s.id, "question": s.question, "answer": s.answer} for s in shots
        ],
        "prompt_example": prompt_text(
            prompt_segments("{question}", template=template, schema=schema, few_shot=shot_tuples)
        ),
        "samples": samples if model_or_none is not None else max(len(c) for c in comps),
        "temperature": temperature if model_or_none is not None else None,
        "top_k": top_k,
        "top_p": top_p,
        "seed": seed,
        "max_new_tokens": max_new_tokens if model_or_none is not None else None,
        # completions given to score were made elsewhere: whether a calculator helped is unknown
        "calculator": ("on" if calculator else "off") if model_or_none is not None else None,
        "n_records": len(recs),
        "data_fingerprint": data_fingerprint(recs),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    info.update(meta or {})
    return build_report(rows, info, length_unit=unit, gallery_size=gallery_size)
