"""The generation API: prompts in, completions out, in batches of similar lengths.

Validates the options, turns text prompts into ids through :mod:`cotune.format` (one BOS),
folds any LoRA into the weights (:func:`cotune.lora.without_lora`), picks the decode
precision, sorts prompts by length so similar lengths share a batch, and hands each batch
to the host loop (:func:`cotune.generate.host.generate_batch`), with the calculator when
asked (:func:`cotune.generate.host.calculator_text`).

**Rounds** (greedy decoding). A batch decodes until its longest row ends, and every row
costs a step until then: with reasoning completions of 30 to 250 tokens and the odd one
that loops to the budget, most of a batch's steps go to rows already finished. So greedy
generation runs in rounds of at most ``round_tokens`` new tokens: each round decodes every
unfinished row, and a row still going at the round's end comes back in the next round as
its prompt plus what it wrote so far, re-batched with the other such rows. Greedy decoding
from ``prompt + text`` is the decoding that would have gone on (the keys and values of the
text are computed by prefill instead of step by step, the same arithmetic in float32); a
stop string split across two rounds is found in the joined text. Sampling keeps one pass
per batch, since its per-row random stream is keyed by step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from cotune import format as fmt
from cotune.generate import gemma3
from cotune.generate.host import (
    Generation,
    calculator_text,
    find_stop,
    forced_within,
    generate_batch,
    tokens_covering,
)
from cotune.lora import without_lora

# New tokens per round of greedy decoding (module docstring): long enough that a round's
# prefill (prompt + text so far) is a small part of it, short enough that a round ends
# before most of its rows would idle.
ROUND_TOKENS = 128


def encode_prompts(model, prompts, *, template="chat", schema="tags", raw=False) -> list[list[int]]:
    """Token ids per prompt: text through :func:`cotune.format.prompt_segments` (one BOS),
    ``raw=True`` text as-is after one BOS, id lists untouched."""
    tok = model.tokenizer
    out = []
    for p in prompts:
        if isinstance(p, str):
            if raw:
                out.append([tok.bos_id, *tok.encode(p)])
            else:
                segs = fmt.prompt_segments(p, template=template, schema=schema)
                out.append(tok.encode_segments(segs, add_bos=True))
        else:
            ids = [int(i) for i in p]
            if not ids:
                raise ValueError("empty prompt: give at least one token id")
            out.append(ids)
    return out


def generate_detailed(
    model,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    template: fmt.Template = "chat",
    schema: fmt.Schema = "tags",
    stop_strings: Sequence[str] | None = None,
    batch_size: int | None = None,
    on_token: Callable[[int, str], None] | None = None,
    raw: bool = False,
    chunk: int | None = None,
    compute_dtype: Literal["float32", "bfloat16"] | None = None,
    calculator: bool = False,
    round_tokens: int | None = ROUND_TOKENS,
    on_finish: Callable[[int, Generation], None] | None = None,
) -> list[Generation]:
    """Like :func:`generate` but returns :class:`Generation` records (ids, finish reason).

    ``round_tokens``: greedy decoding runs in rounds of at most that many new tokens
    (module docstring); ``None`` decodes each batch in one pass. Rounds are skipped with
    sampling, streaming (``on_token``) and the calculator, which follow each row step by
    step. ``on_finish(i, generation)`` is called as prompt ``i``'s completion is final (for
    progress bars: with rounds, rows finish out of order).

    ``compute_dtype``: ``"float32"`` decodes exactly as the float32 model (token for token
    the full forward's greedy choice); ``"bfloat16"`` keeps weights, KV cache and output
    projection in bfloat16 (float32 accumulation), several times faster. ``None`` (the
    default) is ``"bfloat16"`` on Tunix Gemma 3 models and ``"float32"`` on others, whose
    Tunix layers it would only speed up in the output projection.

    ``calculator=True``: whenever a completion, inside its reasoning, ends with the left
    side of a claim and ``=`` (``48 / 2 =``), the exact value (`` 24``) is fed to the model
    in place of its own next tokens, and decoding goes on from there
    (:func:`cotune.calculator.value_to_insert`, :func:`cotune.generate.host.calculator_text`).
    Nothing outside such a claim changes. Decoding then runs one step per compiled call (the
    host must see every step; ``chunk`` is ignored). Off by default, and off means decoding
    exactly as without the option: same tokens, same chunks, no extra host work. Each
    completion's ``forced`` lists the indices of its tokens the calculator wrote.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if (
        temperature < 0
        or (top_k is not None and top_k < 1)
        or (top_p is not None and not 0 < top_p <= 1)
    ):
        raise ValueError("need temperature >= 0, top_k >= 1, 0 < top_p <= 1")
    if compute_dtype not in (None, "float32", "bfloat16"):
        raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {compute_dtype!r}")
    model = without_lora(model)
    if compute_dtype is None:
        compute_dtype = "bfloat16" if gemma3.facts(model.module) is not None else "float32"
    ids = encode_prompts(model, prompts, template=template, schema=schema, raw=raw)
    if stop_strings is None:
        stop_strings = (
            []
            if raw or not isinstance(prompts[0] if prompts else "", str)
            else fmt.stop_strings(schema)
        )
    stops = [s for s in stop_strings if s]
    if round_tokens is not None and round_tokens < 1:
        raise ValueError(f"round_tokens must be >= 1 or None, got {round_tokens}")
    greedy = temperature == 0.0 or top_k == 1
    rounds = greedy and not calculator and on_token is None and round_tokens is not None
    per_round = min(round_tokens, max_new_tokens) if rounds else max_new_tokens
    bs = batch_size or len(ids) or 1
    written: dict[int, list[int]] = {i: [] for i in range(len(ids))}  # ids so far, per row
    forced: dict[int, tuple[int, ...]] = {i: () for i in range(len(ids))}  # their forced ones
    results: dict[int, Generation] = {}
    todo = list(range(len(ids)))
    while todo:
        todo.sort(key=lambda i: len(ids[i]) + len(written[i]))  # similar lengths batch together
        budget = min(per_round, max_new_tokens - len(written[todo[0]]))  # the same for all
        again = []
        for start in range(0, len(todo), bs):
            rows = todo[start : start + bs]
            for i, g in zip(
                rows,
                generate_batch(
                    model,
                    [ids[i] + written[i] for i in rows],
                    rows,
                    budget,
                    temperature,
                    top_k,
                    top_p,
                    seed,
                    stops,
                    on_token,
                    greedy,
                    chunk,
                    compute_dtype,
                    calculator_text if calculator else None,
                ),
                strict=True,
            ):
                if written[i]:
                    g = _joined(model.tokenizer, written[i], forced[i], g, stops, len(ids[i]))
                if rounds and g.finish_reason == "length" and len(g.token_ids) < max_new_tokens:
                    written[i], forced[i] = g.token_ids, g.forced
                    again.append(i)
                else:
                    results[i] = g
                    if on_finish is not None:
                        on_finish(i, g)
        todo = again
    return [results[i] for i in range(len(ids))]


def _joined(
    tok,
    before: list[int],
    before_forced: Sequence[int],
    g: Generation,
    stops,
    prompt_tokens: int,
) -> Generation:
    """A row's completion from the ids of its earlier rounds and its last round ``g``: the
    joined text cut at its first stop string (one may span two rounds) or end token.

    ``before_forced``: the forced indices among ``before``; ``g``'s own count from its first
    token, so they move by ``len(before)``, and those past a cut go with it."""
    ids = before + g.token_ids
    forced = [*before_forced, *(len(before) + i for i in g.forced)]
    own = ids[:-1] if g.finish_reason == "end" else ids
    text = tok.decode(own)
    hit = find_stop(text, stops) if stops else None
    if hit is not None:
        cut = hit[0]
        k = tokens_covering(tok, own, cut)
        return Generation(
            tok.decode(own[:k])[:cut], own[:k], "stop", prompt_tokens, forced_within(forced, k)
        )
    return Generation(text, ids, g.finish_reason, prompt_tokens, forced_within(forced, len(ids)))


def generate(model, prompts, **kwargs) -> list[str]:
    """Completions (text) for ``prompts``: see :func:`generate_detailed` for the options.

    Text prompts are wrapped with the reasoning prompt (``template``/``schema``) and stop
    after ``</answer>`` (``cotune.format.stop_strings``) or an end token; ``raw=True``
    sends the text as-is (one BOS, no stop strings unless given); ``calculator=True`` fills
    in the values of the claims the model starts in its reasoning.
    """
    return [g.text for g in generate_detailed(model, prompts, **kwargs)]
