"""The generation API: prompts in, completions out, in batches of similar lengths.

Validates the options, turns text prompts into ids through :mod:`cotune.format` (one BOS),
folds any LoRA into the weights (:func:`cotune.lora.without_lora`), picks the decode
precision, sorts prompts by length so similar lengths share a batch, and hands each batch
to the host loop (:func:`cotune.generate.host.generate_batch`), with the calculator when
asked (:func:`cotune.generate.host.calculator_text`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from cotune import format as fmt
from cotune.generate import gemma3
from cotune.generate.host import Generation, calculator_text, generate_batch
from cotune.lora import without_lora


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
) -> list[Generation]:
    """Like :func:`generate` but returns :class:`Generation` records (ids, finish reason).

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
    exactly as without the option: same tokens, same chunks, no extra host work.
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
    greedy = temperature == 0.0 or top_k == 1
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths batch together
    bs = batch_size or len(ids) or 1
    results: dict[int, Generation] = {}
    for start in range(0, len(order), bs):
        rows = order[start : start + bs]
        for i, g in zip(
            rows,
            generate_batch(
                model,
                [ids[i] for i in rows],
                rows,
                max_new_tokens,
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
            results[i] = g
    return [results[i] for i in range(len(ids))]


def generate(model, prompts, **kwargs) -> list[str]:
    """Completions (text) for ``prompts``: see :func:`generate_detailed` for the options.

    Text prompts are wrapped with the reasoning prompt (``template``/``schema``) and stop
    after ``</answer>`` (``cotune.format.stop_strings``) or an end token; ``raw=True``
    sends the text as-is (one BOS, no stop strings unless given); ``calculator=True`` fills
    in the values of the claims the model starts in its reasoning.
    """
    return [g.text for g in generate_detailed(model, prompts, **kwargs)]
