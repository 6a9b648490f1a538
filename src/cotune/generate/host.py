"""One batch of prompts through a decoder, driven from the host: shapes, stops, streaming,
and the calculator's forced tokens.

The host pads the batch to bucketed shapes (:func:`bucket`, :func:`bucket_len`) so repeated
calls reuse compiled code, runs prefill, then runs the compiled decode loop in chunks of
steps: between chunks it decodes each row's text to check stop strings and stream new text,
marks stopped rows done, and exits once every row ended. It finally cuts each row at its
stop string or end token into a :class:`Generation`.

**Forced text** (the calculator mode, :func:`calculator_text`). Each decode step feeds the
token of the previous step (``out[step - 1]``) through the model, writing its keys and
values to the cache, and picks the next one. A picked token is thus not in the cache yet
when the step returns, so the host may replace it: to force the tokens ``f1 f2`` after a
row's text, the host overwrites the row's next picked token with ``f1``, the one after with
``f2``, and the model reads them as if it had written them (same cache, same positions,
same decoder; the other rows decode undisturbed). Each forced token costs exactly the step
that feeds it, so nothing is recomputed. The host must see every step, since a claim can
end at any token and its value must be in place before the model writes its own, so
forcing decodes one step per call, as streaming does, and tells the decoder so (its
per-call work then covers one step: ``steps`` of :func:`cotune.generate.gemma3.decode`).
Chunks with a rollback to the claim would redo the work of every row in the batch after
each claim, and a batch of 32 GSM8K solutions has a claim ending somewhere almost every
few steps; one step per call only adds the host's round trip and its look at each row's
text, about 2 ms a step at batch 32 (measured on the tiny model, whose own steps cost
little), against about 65 ms for a step of the 270M. Without forcing none of this runs:
the loop, its chunk sizes, its compiled calls and its host checks are the plain ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from cotune.calculator import value_to_insert
from cotune.generate.caches import compiled

FinishReason = Literal["stop", "end", "length"]


@dataclass
class Generation:
    """One completion: its text, its token ids and why it ended.

    ``forced``: the indices into ``token_ids`` of the tokens the host wrote in place of the
    model's picks (the calculator's values, :func:`calculator_text`), in increasing order.
    They are part of the completion the model read, but not choices it made, so whatever
    scores or trains on its choices (GRPO's loss, :mod:`cotune.rl.loss`) needs to tell them
    apart. Empty without forcing.
    """

    text: str
    token_ids: list[int]
    finish_reason: FinishReason  # "stop" = stop string, "end" = <eos>/<end_of_turn>, "length"
    prompt_tokens: int
    forced: tuple[int, ...] = ()


def bucket(n: int, minimum: int = 16) -> int:
    """Round up to a power of two (at least ``minimum``) so shapes, hence compiles, repeat."""
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def bucket_len(n: int, minimum: int = 16) -> int:
    """Round a prompt length up to a multiple of an eighth of its power-of-two bucket (at
    least 16): 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, ...

    Prefill computes every padded position and decode attends over them, so plain powers
    of two would waste up to half of both (a 74-token batch runs at 80 slots, not 128).
    Compiling is cheap since decode runs on prepared weights, so the finer steps cost
    little.
    """
    step = max(minimum, bucket(n, minimum) // 8)
    return max(minimum, -(-n // step) * step)


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """Earliest stop string in ``text`` as ``(cut, stop)``; closing tags stay in the text."""
    best = None
    for s in stops:
        i = text.find(s)
        if i >= 0:
            cut = i + len(s) if s.startswith("</") else i
            if best is None or i < best[0]:
                best = (i, cut, s)
    return None if best is None else (best[1], best[2])


def calculator_text(text: str) -> str | None:
    """What the calculator mode forces after a completion's ``text`` (from its start):
    :func:`cotune.calculator.value_to_insert`'s value when ``text`` ends with a claim's
    left side and ``=`` inside reasoning, else None. The value is written as the model
    writes its own claims: after a space when the text ends right at ``=`` (``48 / 2 =`` ->
    `` 24``), as is after a space or a currency sign it already wrote (``48 / 2 = `` ->
    ``24``, ``= $`` -> ``24``)."""
    value = value_to_insert(text)
    if value is None:
        return None
    return f" {value}" if text.endswith("=") else value


def generate_batch(
    model,
    ids: list[list[int]],
    row_ids: Sequence[int],
    max_new: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int,
    stops: Sequence[str],
    on_token: Callable[[int, str], None] | None,
    greedy: bool,
    chunk: int | None,
    compute_dtype: str = "float32",
    force: Callable[[str], str | None] | None = None,
) -> list[Generation]:
    """Completions for the prompt ids ``ids`` (one batch; ``row_ids`` name the rows for
    per-row sampling keys and ``on_token``).

    ``force``: called with each running row's text (from the start of its completion)
    after every step; text it returns is fed to that row in place of the model's next
    tokens (see the module docstring), e.g. :func:`calculator_text`. Text is not forced
    when its tokens would not decode back to exactly it after the row's own, or would not
    fit in the row's remaining budget (a value cut short would be a wrong value). Where
    forced tokens landed is each completion's :attr:`Generation.forced`. None (the default)
    leaves decoding exactly as without it."""
    tok = model.tokenizer
    n_real = len(ids)
    # bf16: at least two rows. XLA's CPU dot takes a slow matrix-vector path for one bf16
    # row (the output projection above all), so a filler row is cheaper; float32's one-row
    # path is fast. ``bench/matmul_rates.py --decode --m 1`` / ``--m 2`` measure both.
    b = bucket(n_real, minimum=2 if compute_dtype == "bfloat16" else 1)
    p = bucket_len(max(len(x) for x in ids))
    n = bucket(max_new)
    tokens = np.full((b, p), tok.pad_id, np.int32)
    valid = np.zeros((b, p), bool)
    for r, x in enumerate(ids):
        tokens[r, p - len(x) :] = x
        valid[r, p - len(x) :] = True
    tokens[n_real:, -1], valid[n_real:, -1] = tok.bos_id, True  # filler rows: one BOS each
    params, prefill, decode, extra = compiled(model.module, compute_dtype)
    row_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(
        jnp.asarray(list(row_ids) + [-1] * (b - n_real), jnp.int32)
    )
    static = {
        "greedy": greedy,
        "top_k": None if greedy else top_k,
        "use_top_p": (not greedy) and top_p is not None and top_p < 1.0,
    }
    temp = jnp.float32(max(temperature, 1e-6))
    topp = jnp.float32(top_p if top_p is not None else 1.0)
    end_ids = jnp.asarray(tok.end_ids, jnp.int32)
    carry = prefill(
        params,
        jnp.asarray(tokens),
        jnp.asarray(valid),
        row_keys,
        temp,
        topp,
        end_ids,
        cache_len=p + n,
        **static,
        **extra,
    )
    if n_real < b:
        carry["done"] = carry["done"].at[n_real:].set(True)
    # with forcing, every step: a claim can end at any token (module docstring), and the
    # decoder makes per-call work for that one step only (gemma3.decode's ``steps``)
    one_step = {"steps": 1} if force is not None else {}
    if force is not None:
        step_chunk = 1
    else:
        step_chunk = chunk or (1 if on_token else (8 if stops else max_new))
    stopped: dict[int, tuple[int, str]] = {}  # row -> (text cut, stop string)
    shown = [""] * n_real
    forcing: dict[int, list[int]] = {}  # row -> forced tokens not yet in its output
    forced_at: dict[int, list[int]] = {}  # row -> steps whose token was forced
    while True:
        out, step, done = np.asarray(carry["out"]), int(carry["step"]), np.asarray(carry["done"])
        if forcing:  # the step just picked each forcing row's next token: replace it
            out, done = out.copy(), done.copy()
            for r in list(forcing):
                out[r, step - 1] = forcing[r].pop(0)
                forced_at.setdefault(r, []).append(step - 1)
                done[r] = False  # a replaced end token ends nothing
                if not forcing[r]:
                    del forcing[r]
            carry["out"], carry["done"] = jnp.asarray(out), jnp.asarray(done)
        if stops or on_token or force is not None:
            for r in range(n_real):
                if r in stopped:
                    continue
                own = _until_end(out[r, :step], tok.end_ids)
                text = tok.decode(own)
                hit = find_stop(text, stops) if stops else None
                if hit is not None:
                    stopped[r] = hit
                    forcing.pop(r, None)
                    text = text[: hit[0]]
                if on_token and len(text) > len(shown[r]) and text.startswith(shown[r]):
                    on_token(row_ids[r], text[len(shown[r]) :])
                    shown[r] = text
                if force is not None and r not in stopped and r not in forcing and not done[r]:
                    extra = force(text)
                    ids_extra = tok.encode(extra) if extra else []
                    whole = step + len(ids_extra) <= max_new  # never a value cut short
                    if whole and ids_extra and tok.decode(own + ids_extra) == text + extra:
                        forcing[r] = ids_extra
            if stopped:
                done = done | np.isin(np.arange(b), list(stopped))
                carry["done"] = jnp.asarray(done)
        if done.all() or step >= max_new:
            break
        carry = decode(
            params,
            carry,
            row_keys,
            temp,
            topp,
            end_ids,
            jnp.int32(min(step + step_chunk, max_new)),
            jnp.int32(tok.pad_id),
            **static,
            **one_step,
        )
    results = []
    for r in range(n_real):
        gen = [int(t) for t in out[r, :step]]
        end_at = next((k for k, t in enumerate(gen) if t in tok.end_ids), None)
        if r in stopped:
            cut, _ = stopped[r]
            k = tokens_covering(tok, gen, cut)
            text = tok.decode(gen[:k])[:cut]
            g = Generation(text, gen[:k], "stop", len(ids[r]))
        elif end_at is not None:
            g = Generation(tok.decode(gen[:end_at]), gen[: end_at + 1], "end", len(ids[r]))
        else:
            gen = gen[:max_new]
            g = Generation(tok.decode(gen), gen, "length", len(ids[r]))
        g.forced = forced_within(forced_at.get(r, ()), len(g.token_ids))
        results.append(g)
    return results


def forced_within(forced: Iterable[int], n: int) -> tuple[int, ...]:
    """The forced indices that fall inside a completion cut to its first ``n`` tokens, sorted
    (a cut at a stop string can end inside or before a forced value)."""
    return tuple(sorted(i for i in forced if 0 <= i < n))


def _until_end(ids, end_ids) -> list[int]:
    out = []
    for t in ids:
        if int(t) in end_ids:
            break
        out.append(int(t))
    return out


def tokens_covering(tok, ids: list[int], n_chars: int) -> int:
    """Fewest leading tokens whose decoded text reaches ``n_chars`` characters."""
    for k in range(1, len(ids) + 1):
        if len(tok.decode(ids[:k])) >= n_chars:
            return k
    return len(ids)
