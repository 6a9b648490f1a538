"""cotune's GGUF exports run in llama.cpp and decode what cotune decodes.

The real Gemma 3 270M is exported as f32 and as q8_0 and loaded by llama-cpp-python (built
from source by ``make llama``, which ``make test-all`` runs first; flags and why in
docs/export.md). Both sides decode greedily from the same prompt ids: text openings, and
cotune's chat prompt, whose ids llama.cpp must also get from the exported chat template.
llama.cpp's KV cache is kept in f32 so that its f16 default is not one more difference.

* f32: the same tokens for every prompt. The logits still differ slightly (at most 0.04
  measured) because ggml evaluates GELU through an f16 lookup table.
* q8_0: compared with cotune decoding the same file (``load_gguf``: the dequantized
  weights), so both sides multiply by identical weights. llama.cpp also rounds the
  activations to 8-bit blocks inside every Q8_0 matrix product and cotune does not, which
  moves logits by 0.15-0.26 rms. A greedy choice can then flip wherever cotune's top two
  tokens are within a fraction of a logit, and which near-ties flip depends on the kernels
  llama.cpp was built with. So the test requires: wherever llama.cpp picks another token
  than cotune (scored on cotune's path, and in its own greedy decode), cotune's gap between
  the two is below ``NEAR_TIE``; and at least half the prompts decode identically.
  Measured: 8 of 8 identical with ``make llama``'s build; an AVX-512 ``-march=native``
  build chose differently at 2 positions, where cotune's gaps were 0.04 and 0.15.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

import cotune.model as cm
from cotune import export as ex
from cotune import format as fmt
from cotune.generate import encode_prompts, generate_detailed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

OPENINGS = [
    "The capital of France is Paris. The capital of Germany is",
    "12 + 7 = 19\n25 + 13 = 38\n41 + 16 =",
    "def fibonacci(n):\n",
    "The three primary colors are",
    "In 1969, Neil Armstrong",
    "Once upon a time, in a small village by the sea,",
]
QUESTIONS = ["What is 12 * 4?", "A shop sells a pen for 240 after a 20% discount. Original price?"]
NEW = 32
F32_LOGIT_TOL = 0.1  # measured: at most 0.037 over the vocabulary at any position
Q8_LOGIT_RMS = 0.4  # measured: 0.15-0.26 per prompt
NEAR_TIE = 0.5  # measured: llama.cpp's q8_0 choices differed at cotune gaps of 0.04-0.15


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        pytest.fail(
            "llama-cpp-python is not installed: `make llama` builds it (make test-all does)"
        )
    return llama_cpp


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = cm.load("gemma3-270m")
    root = tmp_path_factory.mktemp("llamacpp")
    files = {
        "f32": ex.export(model, root / "f32", format="gguf"),
        "q8_0": ex.export(model, root / "q8_0", format="gguf", quant="q8_0"),
    }
    return model, files


def _open(llama_cpp, path):
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=256,
        n_threads=min(2, os.cpu_count() or 1),
        logits_all=True,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        verbose=False,
    )


def _prompt_ids(model, llm) -> list[list[int]]:
    """cotune's prompt ids, checked against what llama.cpp's tokenizer and the exported chat
    template make of the same text."""
    import jinja2

    raw = encode_prompts(model, OPENINGS, raw=True)
    for text, ids in zip(OPENINGS, raw, strict=True):
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == ids, text
    chat = encode_prompts(model, QUESTIONS)
    template = jinja2.Template(llm.metadata["tokenizer.chat_template"])
    for q, ids in zip(QUESTIONS, chat, strict=True):
        text = template.render(
            messages=[
                {"role": "system", "content": fmt.INSTRUCTIONS["tags"]},
                {"role": "user", "content": f"Question: {q}"},
            ],
            add_generation_prompt=True,
            bos_token="",
        )
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == ids, q
    return raw + chat


def _cotune_greedy(model, prompts) -> list[list[int]]:
    gens = generate_detailed(
        model, prompts, max_new_tokens=NEW, stop_strings=[], compute_dtype="float32"
    )
    return [g.token_ids for g in gens]  # an end token, if reached, is the last id


def _llama_greedy(llm, ids, end_ids) -> list[int]:
    llm.reset()
    out: list[int] = []
    for tok in llm.generate(ids, temp=0.0, repeat_penalty=1.0):
        out.append(int(tok))
        if tok in end_ids or len(out) == NEW:
            break
    return out


def _logits_along(model, llm, ids, path) -> tuple[np.ndarray, np.ndarray]:
    """Both sides' logits for each token of ``path`` after ``ids`` (teacher-forced)."""
    seq = ids + path
    t = len(seq)
    ours = model.module(
        jnp.asarray([seq], jnp.int32),
        jnp.arange(t, dtype=jnp.int32)[None],
        None,
        jnp.tril(jnp.ones((t, t), bool))[None],
    )[0][0]
    llm.reset()
    llm.eval(seq)
    theirs = np.asarray(llm.scores[len(ids) - 1 : t - 1], np.float32)
    return np.asarray(ours[len(ids) - 1 : t - 1], np.float32), theirs


def _first_difference(a: list[int], b: list[int]) -> int | None:
    return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)


def test_f32_export_decodes_the_same_tokens_in_llamacpp(exported) -> None:
    llama_cpp = _llama_cpp()
    model, files = exported
    llm = _open(llama_cpp, files["f32"])
    prompts = _prompt_ids(model, llm)
    end = set(model.tokenizer.end_ids)
    for ids, ours in zip(prompts, _cotune_greedy(model, prompts), strict=True):
        theirs = _llama_greedy(llm, ids, end)
        assert theirs == ours, (model.tokenizer.decode(ours), model.tokenizer.decode(theirs))
        assert llm.detokenize(ours).decode() == model.tokenizer.decode(ours)
        a, b = _logits_along(model, llm, ids, ours)
        assert np.abs(a - b).max() < F32_LOGIT_TOL


def test_q8_0_export_in_llamacpp_matches_cotune_on_the_same_weights(exported) -> None:
    llama_cpp = _llama_cpp()
    model, files = exported
    back = cm.load_gguf(files["q8_0"], use_cache=False)
    llm = _open(llama_cpp, files["q8_0"])
    prompts = _prompt_ids(back, llm)
    end = set(back.tokenizer.end_ids)
    same, ties = 0, []
    for ids, ours in zip(prompts, _cotune_greedy(back, prompts), strict=True):
        a, b = _logits_along(back, llm, ids, ours)
        assert np.sqrt(np.mean((a - b) ** 2)) < Q8_LOGIT_RMS
        assert a.argmax(1).tolist() == ours  # the path is cotune's own greedy choice
        where = back.tokenizer.decode(ids[-6:])
        # Scored on the same prefix, llama.cpp may prefer another token only at a near-tie.
        for k in np.nonzero(b.argmax(1) != a.argmax(1))[0]:
            gap = float(a[k, ours[k]] - a[k, b[k].argmax()])
            ties.append((where, int(k), round(gap, 3)))
            assert gap < NEAR_TIE, ties
        theirs = _llama_greedy(llm, ids, end)
        k = _first_difference(ours, theirs)
        if k is None:
            assert theirs == ours
            same += 1
        else:  # llama.cpp's own decode may part from cotune's only at a near-tie too
            gap = float(a[k, ours[k]] - a[k, theirs[k]])
            ties.append((where, k, round(gap, 3)))
            assert gap < NEAR_TIE, ties
    assert same >= len(prompts) // 2, ties
