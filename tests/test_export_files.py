"""Export outputs on the plain tiny model: HF folder and GGUF contents, chat template,
refusal without force, atomicity, and (when transformers is installed) that transformers
loads the folder and generates what cotune generates."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest

import cotune.model as cm
from cotune import export as ex
from cotune.generate import encode_prompts, generate_detailed

# the GGUF loader caches converted weights: in the session's temp folder, not ~/.cache
pytestmark = pytest.mark.usefixtures("model_cache")


@pytest.fixture(scope="module")
def model():
    m = cm.load("tiny")
    return m


def test_hf_folder_contents(model, tmp_path) -> None:
    out = ex.export(model, tmp_path / "hf", dtype="bf16")
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "generation_config.json",
    } <= names
    assert not [n for n in names if n.startswith(".")]
    cfg = json.loads((out / "config.json").read_text())
    c = model.config
    assert cfg["architectures"] == ["Gemma3ForCausalLM"] and cfg["model_type"] == "gemma3_text"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["head_dim"]) == (
        c.embed_dim,
        c.num_layers,
        c.head_dim,
    )
    assert cfg["sliding_window"] == 16 and cfg["tie_word_embeddings"] is True
    assert cfg["torch_dtype"] == "bfloat16"
    gen = json.loads((out / "generation_config.json").read_text())
    tok = model.tokenizer
    assert gen["eos_token_id"] == [tok.eos_id, tok.end_of_turn_id]
    tc = json.loads((out / "tokenizer_config.json").read_text())
    assert "<start_of_turn>" in tc["chat_template"]
    assert tc["added_tokens_decoder"][str(tok.end_of_turn_id)]["content"] == "<end_of_turn>"
    assert (out / "tokenizer.model").read_bytes() == tok.model_proto


def test_gguf_metadata_and_modelfile(model, tmp_path) -> None:
    path = ex.export(model, tmp_path / "g", format="gguf", quant="q8_0")
    assert path.name == ex.GGUF_NAME
    r = gguf.GGUFReader(path)
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.ggml.t")}
    c, tok = model.config, model.tokenizer
    assert f["general.architecture"] == "gemma3"
    assert f["gemma3.embedding_length"] == c.embed_dim and f["gemma3.block_count"] == c.num_layers
    assert f["gemma3.feed_forward_length"] == c.hidden_dim
    assert (f["gemma3.attention.head_count"], f["gemma3.attention.head_count_kv"]) == (2, 1)
    assert f["gemma3.attention.key_length"] == f["gemma3.attention.value_length"] == c.head_dim
    assert f["gemma3.attention.sliding_window"] == 16 and f["gemma3.rope.freq_base"] == 1e6
    assert abs(f["gemma3.attention.layer_norm_rms_epsilon"] - 1e-6) < 1e-12
    assert f["tokenizer.ggml.model"] == "llama"
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"]) == (
        tok.bos_id,
        tok.eos_id,
    )
    assert f["tokenizer.ggml.eot_token_id"] == tok.end_of_turn_id
    assert len(r.fields["tokenizer.ggml.tokens"].data) == tok.vocab_size
    assert "<start_of_turn>" in f["tokenizer.chat_template"]
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["token_embd.weight"] == "Q8_0" and types["blk.0.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
    norm = next(t for t in r.tensors if t.name == "output_norm.weight")
    want = cm.convert.flat_state(model.module)[("final_norm", "scale")] + 1.0
    np.testing.assert_allclose(np.asarray(norm.data), want, rtol=1e-6)  # llama.cpp's +1
    mf = (path.parent / "Modelfile").read_text()
    assert f"FROM ./{ex.GGUF_NAME}" in mf
    assert 'PARAMETER stop "<end_of_turn>"' in mf and 'PARAMETER stop "</answer>"' in mf
    assert "<start_of_turn>user" in mf and "<reasoning>" in mf


def test_chat_template_renders_cotune_prompt(model) -> None:
    jinja2 = pytest.importorskip("jinja2")
    from cotune import format as fmt

    q = "What is 12 * 4?"
    text = jinja2.Template(ex.chat_template()).render(
        messages=[
            {"role": "system", "content": fmt.INSTRUCTIONS["tags"]},
            {"role": "user", "content": f"Question: {q}"},
        ],
        add_generation_prompt=True,
        bos_token="",
    )
    assert text == fmt.prompt_text(fmt.prompt_segments(q))


def test_refuses_existing_output_without_force(model, tmp_path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ex.OutputExists, match="already exists"):
        ex.export(model, out)
    assert (out / "keep.txt").read_text() == "mine"
    ex.export(model, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no temp or backup left


@pytest.mark.parametrize("format", ["safetensors", "gguf"])
def test_interrupted_export_leaves_nothing(model, tmp_path, monkeypatch, format) -> None:
    def boom(*a, **k):
        raise KeyboardInterrupt("simulated crash mid-write")

    if format == "gguf":
        monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    else:
        import safetensors.numpy

        monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        ex.export(model, tmp_path / "out", format=format)
    assert list(tmp_path.iterdir()) == []
    # and an existing export survives a failed --force overwrite untouched
    monkeypatch.undo()
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(tmp_path.parent / "cache"))
    first = ex.export(model, tmp_path / "out", format=format)
    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    if format == "gguf":
        monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    else:
        import safetensors.numpy

        monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        ex.export(model, tmp_path / "out", format=format, force=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before and first.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_bad_options(model, tmp_path) -> None:
    with pytest.raises(ex.ExportError, match="gguf"):
        ex.export(model, tmp_path / "x", format="safetensors", quant="q8_0")
    with pytest.raises(ex.ExportError, match="dtype"):
        ex.export(model, tmp_path / "x", dtype="f64")
    with pytest.raises(ex.ExportError, match="format"):
        ex.export(model, tmp_path / "x", format="onnx")
    assert not (tmp_path / "x").exists()


def test_transformers_loads_the_folder_and_agrees(tmp_path) -> None:
    """The HF folder is what transformers expects: same chat-prompt ids, same greedy tokens.

    Six layers, so the global (full-attention, rope 1M) layer is exercised too.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from cotune import format as fmt

    m = cm.load("tiny", num_layers=6)
    out = ex.export(m, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    q = "What is 12 * 4?"
    msgs = [
        {"role": "system", "content": fmt.INSTRUCTIONS["tags"]},
        {"role": "user", "content": f"Question: {q}"},
    ]
    hf_ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    hf_ids = hf_ids["input_ids"] if hasattr(hf_ids, "keys") else hf_ids
    assert list(hf_ids) == encode_prompts(m, [q])[0]
    prompts = [f"What is {i} + {2 * i + 5}?" for i in range(4)]
    ours = generate_detailed(  # float32: HF runs the float32 weights
        m, prompts, max_new_tokens=10, stop_strings=[], compute_dtype="float32"
    )
    for p, g in zip(prompts, ours, strict=True):
        ids = encode_prompts(m, [p])[0]
        o = hf.generate(
            torch.tensor([ids]),
            max_new_tokens=10,
            do_sample=False,
            eos_token_id=list(m.tokenizer.end_ids),
            pad_token_id=m.tokenizer.pad_id,
        )
        assert o[0, len(ids) :].tolist()[: len(g.token_ids)] == g.token_ids
