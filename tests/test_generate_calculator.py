"""The calculator mode of generation: exact values forced into claims, nothing else touched.

Two kinds of decoder. A scripted stand-in for the compiled prefill/decode writes a fixed
token stream whatever it is fed (a model that always writes ``48 / 2 = 99``), so the host
loop's decisions are checked on known text, batch rows and end tokens included. The real
tiny Gemma 3 then shows that forced tokens go through the decoder and its KV cache exactly
as if they had been prompted (float32 decoding equals the no-cache full forward), and that
with no claim in sight the option changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cotune.generate import api, gemma3, generate_detailed, host
from cotune.generate.carry import advance, running, start
from cotune.model import load
from cotune.model.tokenizer import tiny_tokenizer

TOK = tiny_tokenizer()


def test_calculator_text_writes_the_value_as_the_model_would() -> None:
    assert host.calculator_text("<reasoning>She sold 48 / 2 =") == " 24"
    assert host.calculator_text("<reasoning>She sold 48 / 2 = ") == "24"
    assert host.calculator_text("<reasoning>It costs 3 * 4 = $") == "12"
    assert host.calculator_text("<reasoning>10 / 3 =") == " 3.33"
    assert host.calculator_text("<reasoning>She has 3 apples.") is None
    assert host.calculator_text("<reasoning>a</reasoning><answer>48 / 2 =") is None
    assert host.calculator_text("<reasoning>5 / 0 =") is None


# --------------------------------------------------------------------------- scripted decoder


class _Empty(nnx.Module):
    """A module without parameters: no LoRA to fold, nothing to decode with."""


class ScriptedDecoder:
    """Stands in for the compiled prefill and decode (same arguments, same carry): row ``r``
    writes ``scripts[r][t]`` at step ``t`` whatever it is fed, then ``<eos>``; every step
    records the tokens it was fed (``out[step - 1]``), and every decode call is counted."""

    def __init__(self, scripts: list[list[int]]) -> None:
        self.scripts = scripts
        self.fed: list[np.ndarray] = []
        self.calls = 0

    def _picks(self, b: int, step: int) -> jnp.ndarray:
        def at(r: int) -> int:
            s = self.scripts[r] if r < len(self.scripts) else []
            return s[step] if step < len(s) else TOK.eos_id

        return jnp.asarray([at(r) for r in range(b)], jnp.int32)

    def prefill(self, params, tokens, valid, row_keys, temp, top_p, end_ids, *, cache_len, **kw):
        return start((), self._picks(tokens.shape[0], 0), valid, cache_len, end_ids)

    def decode(self, params, c, row_keys, temp, top_p, end_ids, until, pad_id, **kw):
        self.calls += 1
        while bool(running(c, until)):
            step = int(c["step"])
            self.fed.append(np.asarray(c["out"][:, step - 1]))
            picks = self._picks(c["out"].shape[0], step)
            c = advance(c, picks, (), c["key_valid"], pad_id, end_ids)
        return c

    def compiled(self, module, compute_dtype):
        return None, self.prefill, self.decode, {}


def _script(*pieces: str) -> list[int]:
    """Token ids of the pieces, each encoded on its own (so a piece is a known run of
    tokens: a value of the script and the calculator's value of the same length line up)."""
    return [t for p in pieces for t in TOK.encode(p)]


# Each row as its pieces; what the model writes after each "=" is a separate piece.
ROWS = [
    # two false claims in the reasoning, and one in the answer the calculator must not touch
    ("<reasoning>She had 48 / 2 =", " 99", " left and 9 + 8 =", " 71",
     ".</reasoning><answer>48 / 2 =", " 99", "</answer>"),
    # a claim only after the reasoning: nothing to fill
    ("<reasoning>No sums here.</reasoning><answer>3 + 4 =", " 9", "</answer>"),
    # the model ends right after "=": its <eos> is replaced, the value written, then it ends
    ("<reasoning>5 * 6 =",),
]  # fmt: skip


def _scripted_run(
    monkeypatch: pytest.MonkeyPatch,
    calculator: bool,
    rows: list[tuple[str, ...]] = ROWS,
    max_new_tokens: int = 160,
) -> tuple[list[Any], ScriptedDecoder]:
    fake = ScriptedDecoder([_script(*row) for row in rows])
    monkeypatch.setattr(host, "compiled", fake.compiled)
    model = type("Scripted", (), {"tokenizer": TOK, "module": _Empty()})()
    prompts = [[TOK.bos_id, *TOK.encode("q")]] * len(rows)
    gens = generate_detailed(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        stop_strings=["</answer>"],
        compute_dtype="float32",
        calculator=calculator,
    )
    return gens, fake


def test_scripted_model_gets_exact_values_inside_reasoning_only(monkeypatch) -> None:
    for wrong, right in ((" 99", " 24"), (" 71", " 17"), (" 9", " 7")):
        assert len(TOK.encode(wrong)) == len(TOK.encode(right))  # the scripts stay aligned
    off, fake_off = _scripted_run(monkeypatch, calculator=False)
    assert [g.text for g in off] == [
        "<reasoning>She had 48 / 2 = 99 left and 9 + 8 = 71.</reasoning><answer>48 / 2 = 99"
        "</answer>",
        "<reasoning>No sums here.</reasoning><answer>3 + 4 = 9</answer>",
        "<reasoning>5 * 6 =",
    ]
    on, fake_on = _scripted_run(monkeypatch, calculator=True)
    assert [g.text for g in on] == [
        "<reasoning>She had 48 / 2 = 24 left and 9 + 8 = 17.</reasoning><answer>48 / 2 = 99"
        "</answer>",
        "<reasoning>No sums here.</reasoning><answer>3 + 4 = 9</answer>",  # untouched
        "<reasoning>5 * 6 = 30",
    ]
    assert [g.finish_reason for g in on] == ["stop", "stop", "end"]
    assert on[1].token_ids == off[1].token_ids
    # the decoder was fed every token of the final completions, forced ones included, in
    # order: the model read the values as if it had written them
    fed = np.stack(fake_on.fed, axis=1)  # [rows, steps]
    for r, g in enumerate(on):
        assert fed[r, : len(g.token_ids) - 1].tolist() == g.token_ids[:-1]
    # on: one decode call per step; off: the plain chunks, far fewer calls
    assert fake_on.calls == len(fake_on.fed)
    assert fake_off.calls < len(fake_off.fed) // 4


def test_a_value_that_does_not_fit_the_budget_is_not_started(monkeypatch) -> None:
    row = ("<reasoning>5 * 6 =",)
    n = len(_script(*row)) + len(TOK.encode(" 30"))
    (fits,), _ = _scripted_run(monkeypatch, True, [row], max_new_tokens=n)
    assert (fits.text, fits.finish_reason) == ("<reasoning>5 * 6 = 30", "length")
    (short,), _ = _scripted_run(monkeypatch, True, [row], max_new_tokens=n - 1)
    assert (short.text, short.finish_reason) == ("<reasoning>5 * 6 =", "end")  # never " 3"


def forced_texts(tok, g: host.Generation) -> list[str]:
    """The text each run of consecutive forced tokens adds to the completion: the decoded
    text up to the run's end minus the decoded text before it (a piece's leading space
    decodes only after other text)."""
    runs: list[list[int]] = []
    for k in g.forced:
        if runs and runs[-1][-1] == k - 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    out = []
    for run in runs:
        before = tok.decode(g.token_ids[: run[0]])
        upto = tok.decode(g.token_ids[: run[-1] + 1])
        assert upto.startswith(before)
        out.append(upto[len(before) :])
    return out


def test_generations_say_which_tokens_the_calculator_wrote(monkeypatch) -> None:
    off, _ = _scripted_run(monkeypatch, calculator=False)
    assert [g.forced for g in off] == [(), (), ()]
    on, _ = _scripted_run(monkeypatch, calculator=True)
    assert [forced_texts(TOK, g) for g in on] == [[" 24", " 17"], [], [" 30"]]
    # exactly the value tokens, where the script had its own (wrong) values
    row = _script(*ROWS[0])
    first = len(_script(*ROWS[0][:1]))
    second = len(_script(*ROWS[0][:3]))
    want = [
        *range(first, first + len(TOK.encode(" 24"))),
        *range(second, second + len(TOK.encode(" 17"))),
    ]
    assert list(on[0].forced) == want
    assert [row[k] for k in want] != [on[0].token_ids[k] for k in want]  # not the model's
    assert len(on[0].token_ids) == len(off[0].token_ids)
    for k, (a, b) in enumerate(zip(on[0].token_ids, off[0].token_ids, strict=True)):
        assert k in want or a == b, k  # every other token is the script's
    # the last row ends on <eos> right after the value: the end token is its own
    assert on[2].forced[-1] == len(on[2].token_ids) - 2


def test_forced_tokens_past_a_stop_string_are_dropped(monkeypatch) -> None:
    """A stop string the value itself completes cuts the completion before the value: no
    forced index may point past the cut, at a token cut off the completion."""

    def run(stops: list[str]) -> host.Generation:
        fake = ScriptedDecoder([_script("<reasoning>5 * 6 =")])
        monkeypatch.setattr(host, "compiled", fake.compiled)
        model = type("Scripted", (), {"tokenizer": TOK, "module": _Empty()})()
        (g,) = generate_detailed(
            model,
            [[TOK.bos_id, *TOK.encode("q")]],
            max_new_tokens=32,
            stop_strings=stops,
            compute_dtype="float32",
            calculator=True,
        )
        return g

    whole = run([])
    assert whole.text == "<reasoning>5 * 6 = 30" and forced_texts(TOK, whole) == [" 30"]
    cut = run([" 3"])  # found once the value's first token is in place
    assert (cut.text, cut.finish_reason) == ("<reasoning>5 * 6 =", "stop")
    assert cut.token_ids == _script("<reasoning>5 * 6 =")
    assert cut.forced == ()


def test_rounds_carry_forced_positions_across_the_join() -> None:
    """A completion decoded in rounds keeps the forced indices of every round, the last
    round's moved by what came before, and loses those a stop string cuts off."""
    before = _script("<reasoning>5 * 6 =", " 30")
    before_forced = tuple(range(len(before) - len(TOK.encode(" 30")), len(before)))
    tail = _script(" and 2 + 2 =", " 4", ".</reasoning><answer>34</answer>", "more")
    at4 = len(_script(" and 2 + 2 ="))
    g_forced = tuple(range(at4, at4 + len(TOK.encode(" 4"))))
    g = host.Generation(TOK.decode(tail), tail, "length", 3, g_forced)
    joined = api._joined(TOK, before, before_forced, g, ["</answer>"], 3)
    assert joined.text.endswith("</answer>") and joined.finish_reason == "stop"
    assert joined.forced == before_forced + tuple(len(before) + k for k in g_forced)
    assert forced_texts(TOK, joined) == [" 30", " 4"]
    cut = api._joined(TOK, before, before_forced, g, [" and"], 3)
    assert cut.text == "<reasoning>5 * 6 = 30" and cut.forced == before_forced


# --------------------------------------------------------------------------- real decoder


@pytest.fixture(scope="module")
def model():
    return load("tiny", num_layers=6, seed=1)  # sliding-window and global layers


PROMPTS = ["12 + 7 =", "What is the price of 3 apples after the discount? Think"]


def _ids(model) -> list[list[int]]:
    return [[model.tokenizer.bos_id, *model.tokenizer.encode(t)] for t in PROMPTS]


def _forced_run(model, force: Callable[[str], str | None], n: int) -> list[host.Generation]:
    """The host loop on the tiny model, float32, greedy, with ``force`` deciding insertions."""
    ids = _ids(model)
    return host.generate_batch(
        model, ids, range(len(ids)), n, 0.0, None, None, 0, [], None, True, None, "float32", force
    )


def _continues_as_the_full_forward(reference_greedy, model, prompt, tokens, k) -> None:
    """The row's tokens after the first ``k`` are the model's own greedy continuation of
    prompt + those ``k`` tokens, as the no-cache full forward computes it."""
    rest = tokens[k:]
    assert rest, "the model goes on after the forced text"
    (ref,) = reference_greedy(model, [prompt + tokens[:k]], len(rest))
    end = next((i for i, t in enumerate(ref) if t in model.tokenizer.end_ids), len(ref))
    assert rest == ref[: end + 1]


def _force_then(prefix: str) -> Callable[[str], str | None]:
    """Forces ``prefix`` after the model's first token (standing in for a model that writes
    it), then leaves the row to the calculator."""
    return lambda text: prefix if "<reasoning>" not in text else host.calculator_text(text)


@pytest.mark.parametrize("decoder", ["gemma3", "tunix_layers"])
def test_forced_claim_gets_its_value_through_the_real_kv_cache(
    model, reference_greedy, monkeypatch, decoder
):
    """The calculator's value is forced into the reasoning, and the model's own tokens after
    it are exactly the no-cache full forward's for prompt + everything before them, through
    cotune's Gemma 3 decoder and through Tunix's layers (the decoder of other models)."""
    if decoder == "tunix_layers":
        monkeypatch.setattr(gemma3, "facts", lambda module: None)
    tok = model.tokenizer
    prefix = "<reasoning>48 / 2 ="
    gens = _forced_run(model, _force_then(prefix), 24)
    plain = _forced_run(model, lambda text: None, 24)
    for p, g, base in zip(_ids(model), gens, plain, strict=True):
        forced = [base.token_ids[0], *tok.encode(prefix), *tok.encode(" 24")]
        assert g.token_ids[: len(forced)] == forced  # the model's first token, then forcing
        assert g.text.startswith(tok.decode(base.token_ids[:1]) + prefix + " 24")
        _continues_as_the_full_forward(reference_greedy, model, p, g.token_ids, len(forced))


def test_forced_positions_on_the_real_model(model, monkeypatch):
    """Through :func:`generate_detailed` on the tiny Gemma 3: the completions report as
    forced exactly the tokens of the text forced into them (the claim standing in for the
    model's, then the calculator's value), and every other token is the model's."""
    tok = model.tokenizer
    prefix = "<reasoning>48 / 2 ="
    monkeypatch.setattr(api, "calculator_text", _force_then(prefix))
    kw: dict[str, Any] = {"max_new_tokens": 24, "stop_strings": [], "compute_dtype": "float32"}
    on = generate_detailed(model, _ids(model), calculator=True, **kw)
    off = generate_detailed(model, _ids(model), calculator=False, **kw)
    n = len(tok.encode(prefix)) + len(tok.encode(" 24"))
    for g, base in zip(on, off, strict=True):
        assert base.forced == ()
        assert g.forced == tuple(range(1, 1 + n))  # after the model's own first token
        assert forced_texts(tok, g) == [prefix + " 24"]
        assert g.token_ids[0] == base.token_ids[0]
        assert len(g.token_ids) > 1 + n  # the model went on after the value


def test_claim_after_the_reasoning_is_left_to_the_model(model, reference_greedy):
    tok = model.tokenizer
    prefix = "<reasoning>ok</reasoning><answer>48 / 2 ="
    gens = _forced_run(model, _force_then(prefix), 20)
    for p, g in zip(_ids(model), gens, strict=True):
        k = 1 + len(tok.encode(prefix))
        assert g.token_ids[1:k] == tok.encode(prefix)
        _continues_as_the_full_forward(reference_greedy, model, p, g.token_ids, k)  # no value


def _count_decode_calls(monkeypatch) -> list[int]:
    calls = [0]
    real = host.compiled

    def counting(module, compute_dtype):
        params, prefill, decode, extra = real(module, compute_dtype)

        def counted(*args, **kwargs):
            calls[0] += 1
            return decode(*args, **kwargs)

        return params, prefill, counted, extra

    monkeypatch.setattr(host, "compiled", counting)
    return calls


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_without_a_claim_the_option_changes_nothing(model, monkeypatch, dtype):
    """The tiny random model writes no claim; calculator on and off give the same tokens,
    and off decodes as the plain path does (one compiled call, no per-step host check)."""
    calls = _count_decode_calls(monkeypatch)
    prompts, n = _ids(model), 24
    kw: dict[str, Any] = {"max_new_tokens": n, "stop_strings": [], "compute_dtype": dtype}
    default = generate_detailed(model, prompts, **kw)
    assert calls[0] == 1  # no stop strings, no streaming: the whole budget in one call
    off = generate_detailed(model, prompts, calculator=False, **kw)
    assert calls[0] == 2
    on = generate_detailed(model, prompts, calculator=True, **kw)
    steps = max(len(g.token_ids) for g in on)
    assert calls[0] - 2 == steps - 1  # on: one call per step after prefill
    for d, a, b in zip(default, off, on, strict=True):
        assert d.token_ids == a.token_ids == b.token_ids
        assert d.forced == a.forced == b.forced == ()
        assert (d.text, d.finish_reason) == (a.text, a.finish_reason) == (b.text, b.finish_reason)
        # meaningful only if no prefix of the completion is a claim to fill
        prefixes = (model.tokenizer.decode(d.token_ids[:k]) for k in range(1, len(d.token_ids)))
        assert all(host.calculator_text(t) is None for t in prefixes)
