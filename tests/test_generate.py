"""KV-cache generation against a no-cache full-forward loop, sampling, stopping, compiles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cotune import format as fmt
from cotune.generate import (
    bucket_len,
    compile_counts,
    encode_prompts,
    gemma3,
    generate,
    generate_detailed,
)
from cotune.generate.host import find_stop
from cotune.generate.sampling import argmax, nan_rows, pick
from cotune.model import load


@pytest.fixture(scope="module")
def model():
    # 6 layers: Tunix's pattern is 5 sliding-window layers then 1 global one, so both run.
    return load("tiny", num_layers=6, seed=1)


def reference_greedy(model, ids: list[int], n: int, width: int = 64) -> list[int]:
    """The obvious way: full causal forward over the whole sequence, no cache, one row.

    The sequence is right-padded to a fixed width only so one jit serves every step; with a
    causal mask, positions after the sequence cannot change the logits read at its end.
    """
    graphdef, state = nnx.split(model.module)

    @jax.jit
    def forward(state, seq):
        logits, _ = nnx.merge(graphdef, state)(
            seq, jnp.arange(width)[None], None, jnp.tril(jnp.ones((1, width, width), bool))
        )
        return logits[0]

    seq, out = list(ids), []
    for _ in range(n):
        length = len(seq)
        padded = jnp.array([seq + [0] * (width - length)])
        t = int(jnp.argmax(forward(state, padded)[length - 1]))
        out.append(t)
        if t in model.tokenizer.end_ids:
            break
        seq.append(t)
    return out


def test_kv_cache_equals_full_forward_for_mixed_lengths(model):
    tok = model.tokenizer
    texts = [
        "12 + 7 =",
        "What is the price of 3 apples after the discount? Think about 12 and 7 and 9",
        "a",
        "the total cost",
    ]
    prompts = [[tok.bos_id, *tok.encode(t)] for t in texts]
    lengths = {len(p) for p in prompts}
    assert len(lengths) == 4 and max(lengths) > 16  # mixed, and longer than the sliding window
    n = 24  # prompt + generation crosses the 16-token window during decode too
    got = generate_detailed(
        model, prompts, max_new_tokens=n, stop_strings=[], compute_dtype="float32"
    )
    for p, g in zip(prompts, got, strict=True):
        ref = reference_greedy(model, p, n)
        assert g.token_ids == ref
        assert g.finish_reason == ("end" if ref[-1] in tok.end_ids else "length")
    # the tiny model is not degenerate: rows differ and do not repeat one token
    outs = [tuple(g.token_ids) for g in got]
    assert len(set(outs)) == len(outs)
    assert all(len(set(o)) > 3 for o in outs if len(o) > 8)


def test_bfloat16_kv_cache_equals_bfloat16_recomputation(model):
    """The default bfloat16 decode (bf16 weights and cache) against the obvious bf16 way:
    prefill the whole sequence again for every token (prefill attends over the same
    bf16-rounded keys and values the cache holds)."""
    tok = model.tokenizer
    texts = ["12 + 7 =", "What is the price of 3 apples after the discount? Think about 12"]
    prompts = [[tok.bos_id, *tok.encode(t)] for t in texts]
    n = 20  # crosses the 16-token sliding window
    got = generate_detailed(model, prompts, max_new_tokens=n, stop_strings=[])
    for p, g in zip(prompts, got, strict=True):
        seq, ref = list(p), []
        for _ in range(n):
            (step,) = generate_detailed(
                model, [seq], max_new_tokens=1, stop_strings=[], compute_dtype="bfloat16"
            )
            ref.append(step.token_ids[0])
            if ref[-1] in tok.end_ids:
                break
            seq.append(ref[-1])
        assert g.token_ids == ref


def test_tunix_layer_path_equals_full_forward(model, monkeypatch):
    """Models other than Tunix's Gemma 3 decode through Tunix's own layers."""
    monkeypatch.setattr(gemma3, "facts", lambda module: None)
    tok = model.tokenizer
    prompts = [[tok.bos_id, *tok.encode(t)] for t in ("12 + 7 =", "the total cost of it all")]
    got = generate_detailed(model, prompts, max_new_tokens=20, stop_strings=[])
    assert [g.token_ids for g in got] == [reference_greedy(model, p, 20) for p in prompts]
    low = generate_detailed(
        model, prompts, max_new_tokens=20, stop_strings=[], compute_dtype="bfloat16"
    )
    assert all(1 <= len(g.token_ids) <= 20 for g in low)  # bf16 output projection runs


def test_gemma2_decodes_through_tunix_layers_as_its_full_forward():
    """Tunix's Gemma 2 (local sliding + global layers, soft caps) has no cotune decoder of
    its own: the Tunix-layer path must window by position although prompts are left-padded."""
    from tunix.models.gemma import model as gemma

    from cotune.model import Model, _randomize, tiny_tokenizer

    tok = tiny_tokenizer()
    local, wide = gemma.AttentionType.LOCAL_SLIDING, gemma.AttentionType.GLOBAL
    cfg = gemma.ModelConfig(
        num_layers=2,
        num_embed=tok.vocab_size,
        embed_dim=64,
        hidden_dim=128,
        num_heads=2,
        head_dim=32,
        num_kv_heads=1,
        final_logit_softcap=30.0,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        attention_types=[local, wide],
        attn_logits_soft_cap=50.0,
        sliding_window_size=16,
    )
    module = gemma.Gemma(cfg, rngs=nnx.Rngs(0))
    _randomize(module, 3)
    g2 = Model(module, tok, cfg, "tiny-gemma2")
    assert gemma3.facts(module) is None
    prompts = [[tok.bos_id, *tok.encode(t)] for t in ("12 + 7 =", "the total cost of it all")]
    got = generate_detailed(g2, prompts, max_new_tokens=20, stop_strings=[])
    assert [g.token_ids for g in got] == [reference_greedy(g2, p, 20) for p in prompts]


def test_decoder_parts_swap_a_piece_and_put_it_back(model):
    """The profiling surface bench/profile_decode.py uses: a cut output projection only
    reaches the first rows of the vocabulary; leaving the block restores the decoder."""
    from cotune.generate.caches import decoder_parts

    def first_rows(w, h):
        return gemma3.logits({"emb": w.get("emb_out", w["emb"])[:40]}, h)

    prompts = ["What is 2 + 3?", "the price of apples"]
    before = generate_detailed(model, prompts, max_new_tokens=8, stop_strings=[])
    with decoder_parts(logits=first_rows):
        cut = generate_detailed(model, prompts, max_new_tokens=8, stop_strings=[])
    after = generate_detailed(model, prompts, max_new_tokens=8, stop_strings=[])
    assert all(t < 40 for g in cut for t in g.token_ids)
    assert (
        [g.token_ids for g in after] == [g.token_ids for g in before] != [g.token_ids for g in cut]
    )


def test_batch_size_split_gives_same_tokens(model):
    prompts = ["What is 2 + 3?", "How many apples?", "Total cost of 4 books", "hi"]
    a = generate_detailed(model, prompts, max_new_tokens=12)
    b = generate_detailed(model, prompts, max_new_tokens=12, batch_size=1)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]


def test_rounds_give_the_one_pass_completions(model):
    """Greedy decoding in rounds of a few tokens (rows re-batched with what they wrote as
    prompt) gives exactly the one-pass tokens, texts and finish reasons, including a stop
    string that spans two rounds and rows finishing in different rounds."""
    tok = model.tokenizer
    texts = ["12 + 7 =", "What is the price of 3 apples after the discount?", "a", "total"]
    prompts = [[tok.bos_id, *tok.encode(t)] for t in texts]
    kw = dict(max_new_tokens=30, compute_dtype="float32", batch_size=2)
    one = generate_detailed(model, prompts, stop_strings=[], round_tokens=None, **kw)
    assert {g.finish_reason for g in one} == {"length"}  # every row runs through 4 rounds
    finished: list[int] = []
    got = generate_detailed(
        model,
        prompts,
        stop_strings=[],
        round_tokens=8,
        on_finish=lambda i, g: finished.append(i),
        **kw,
    )
    assert [(g.token_ids, g.text, g.finish_reason) for g in got] == [
        (g.token_ids, g.text, g.finish_reason) for g in one
    ]
    assert sorted(finished) == [0, 1, 2, 3]
    # a stop string made of the text around the end of the first round (tokens 6-10)
    ids = one[1].token_ids
    head, span = tok.decode(ids[:6]), tok.decode(ids[:10])
    stop = span[len(head) :]
    assert stop.strip() and stop not in head
    a = generate_detailed(model, prompts, stop_strings=[stop], round_tokens=None, **kw)
    b = generate_detailed(model, prompts, stop_strings=[stop], round_tokens=8, **kw)
    assert a[1].finish_reason == "stop"
    assert [(g.token_ids, g.text, g.finish_reason) for g in b] == [
        (g.token_ids, g.text, g.finish_reason) for g in a
    ]
    with pytest.raises(ValueError, match="round_tokens"):
        generate(model, ["x"], round_tokens=0)


def test_text_prompts_use_format_with_one_bos(model):
    tok = model.tokenizer
    (ids,) = encode_prompts(model, ["What is 2 + 3?"])
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert ids == tok.encode_segments(fmt.prompt_segments("What is 2 + 3?"), add_bos=True)
    assert ids.count(tok.start_of_turn_id) == 2
    (raw,) = encode_prompts(model, ["12 + 7 ="], raw=True)
    assert raw == [tok.bos_id, *tok.encode("12 + 7 =")]


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    prompts = ["What is 2 + 3?", "the price of apples"]
    kw = dict(max_new_tokens=16, temperature=1.0, top_p=0.95)
    a = generate_detailed(model, prompts, seed=3, **kw)
    b = generate_detailed(model, prompts, seed=3, **kw)
    c = generate_detailed(model, prompts, seed=4, **kw)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    greedy = generate_detailed(model, prompts, max_new_tokens=16)
    top1 = generate_detailed(model, prompts, max_new_tokens=16, temperature=1.5, top_k=1, seed=9)
    assert [g.token_ids for g in top1] == [g.token_ids for g in greedy]
    k3 = generate_detailed(model, prompts, max_new_tokens=16, temperature=5.0, top_k=3, seed=1)
    assert [g.token_ids for g in k3] != [g.token_ids for g in greedy]


def test_max_new_tokens_and_stop_strings(model):
    prompts = ["What is 2 + 3?"]
    (g,) = generate_detailed(model, prompts, max_new_tokens=7, stop_strings=[])
    assert len(g.token_ids) <= 7
    if g.finish_reason == "length":
        assert len(g.token_ids) == 7
    (long,) = generate_detailed(model, prompts, max_new_tokens=30, stop_strings=[])
    assert len(long.text) > 6, long
    stop = long.text[3:6]
    first = long.text.find(stop)
    (s,) = generate_detailed(model, prompts, max_new_tokens=30, stop_strings=[stop])
    assert s.finish_reason == "stop"
    assert s.text == long.text[:first]
    assert len(s.token_ids) < len(long.token_ids)


def test_closing_tag_stops_are_kept_others_dropped():
    assert find_stop(
        "<reasoning>x</reasoning><answer>4</answer> junk", fmt.stop_strings("tags")
    ) == (
        len("<reasoning>x</reasoning><answer>4</answer>"),
        "</answer>",
    )
    assert find_stop("Answer: 4\n\nQuestion: next", fmt.stop_strings("plain")) == (9, "\n\n")
    assert find_stop("nothing here", ["</answer>"]) is None


def test_streaming_deltas_add_up_to_the_text(model):
    pieces: list[tuple[int, str]] = []
    (g,) = generate_detailed(
        model, ["How many apples?"], max_new_tokens=10, on_token=lambda i, d: pieces.append((i, d))
    )
    assert pieces and all(i == 0 for i, _ in pieces)
    assert "".join(d for _, d in pieces) == g.text


def test_same_bucket_does_not_recompile(model):
    generate(model, ["What is 2 + 3?", "hi"], max_new_tokens=10)
    before = compile_counts()
    out = generate(model, ["What is 4 + 2?", "a b c"], max_new_tokens=12)  # same buckets
    generate(model, ["How many?"], max_new_tokens=9, batch_size=2)
    assert compile_counts() == before
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_prompt_length_buckets():
    got = [bucket_len(n) for n in (1, 16, 17, 48, 49, 64, 65, 74, 112, 113, 129, 300)]
    assert got == [16, 16, 32, 48, 64, 64, 80, 80, 112, 128, 160, 320]


def test_bad_arguments_are_refused(model):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, ["x"], max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, ["x"], temperature=1.0, top_p=1.5)
    with pytest.raises(ValueError, match="compute_dtype"):
        generate(model, ["x"], compute_dtype="float16")
    assert np.all(np.isfinite([1.0]))


@pytest.mark.parametrize("chunk", [4, 256])
def test_chunked_argmax_equals_jnp_argmax_on_either_axis(chunk):
    """The greedy pick, row-major [B, V] and vocabulary-major [V, B]: first maximum on
    ties, as jnp.argmax."""
    rng = np.random.default_rng(0)
    v, b = 4 * 256, 7
    logits = rng.standard_normal((v, b)).astype(np.float32)
    logits[:, 1] = 0.0  # all tied: index 0
    logits[[300, 900], 2] = 9.0  # tie across chunks: the first
    logits[[5, 6], 3] = 9.0  # tie inside a chunk: the first
    logits[v - 1, 5] = 99.0  # last entry of the last chunk
    logits[0, 6] = 99.0  # first entry of the first chunk
    want = np.asarray(jnp.argmax(jnp.asarray(logits.T), axis=-1))
    assert want[1:].tolist() == [0, 300, 5, int(want[4]), v - 1, 0]
    columns = argmax(jnp.asarray(logits), axis=0, chunk=chunk)
    rows = argmax(jnp.asarray(logits.T), chunk=chunk)
    assert np.asarray(columns).tolist() == want.tolist()
    assert np.asarray(rows).tolist() == want.tolist()


@pytest.mark.parametrize("vocab_major", [True, False])
def test_greedy_pick_of_a_nan_row_is_token_0_as_jnp_argmax(vocab_major):
    """NaN hidden states give NaN logits; the greedy pick answers as jnp.argmax does."""
    rng = np.random.default_rng(1)
    h = rng.standard_normal((3, 8)).astype(np.float32)
    h[1, 2] = np.nan
    e = rng.standard_normal((1024, 8)).astype(np.float32)
    logits = jnp.asarray(h) @ jnp.asarray(e).T  # [B, V], row 1 all NaN
    want = np.asarray(jnp.argmax(logits, axis=-1))
    assert want[1] == 0
    keys = jax.vmap(jax.random.key)(jnp.arange(3))
    kw = dict(greedy=True, top_k=None, use_top_p=False, vocab_major=vocab_major)
    got = pick(
        logits.T if vocab_major else logits,
        keys,
        0,
        1.0,
        1.0,
        **kw,
        nan_rows=nan_rows(jnp.asarray(h)),
    )
    assert np.asarray(got).tolist() == want.tolist()
