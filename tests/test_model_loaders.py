"""Loaders: GGUF (quantized) vs safetensors, the HF writer, the cache, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from cotune.model import WeightsError, load, load_gguf, load_safetensors_dir, save_safetensors
from cotune.model.convert import flat_state, tunix_to_hf

HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
Q = gguf.GGMLQuantizationType


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    _, _, i, rest = hf.split(".", 3)
    return f"blk.{i}.{HF_TO_GGUF[rest.removesuffix('.weight')]}.weight"


def qtype(hf: str) -> gguf.GGMLQuantizationType:
    """A mix like llama.cpp's: Q8_0 and F16 matrices, F32 norms."""
    if "norm" in hf:
        return Q.F32
    return Q.F16 if ("v_proj" in hf or "down_proj" in hf) else Q.Q8_0


def write_gguf(model, path: Path, arch: str = "gemma3") -> dict[str, np.ndarray]:
    """Write ``model`` as a llama.cpp-style GGUF; return the dequantized HF tensors it holds."""
    cfg = model.config
    hf = tunix_to_hf(flat_state(model.module), cfg)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_layers)
    w.add_context_length(2048)
    w.add_embedding_length(cfg.embed_dim)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_sliding_window(cfg.sliding_window_size)
    w.add_rope_freq_base(float(cfg.global_base_frequency))
    w.add_layer_norm_rms_eps(1e-6)
    mp = spm_pb2.ModelProto.FromString(model.tokenizer.model_proto)
    w.add_tokenizer_model("llama")
    w.add_token_list([p.piece for p in mp.pieces])
    w.add_token_scores([p.score for p in mp.pieces])
    w.add_token_types([int(p.type) for p in mp.pieces])
    w.add_bos_token_id(model.tokenizer.bos_id)
    w.add_eos_token_id(model.tokenizer.eos_id)
    w.add_unk_token_id(3)
    w.add_pad_token_id(model.tokenizer.pad_id)
    expected = {}
    for name, arr in hf.items():
        stored = arr + 1.0 if name.endswith("norm.weight") else arr  # llama.cpp's +1
        t = qtype(name)
        data = gguf.quants.quantize(stored.astype(np.float32), t)
        w.add_tensor(gguf_name(name), data, raw_dtype=t)
        deq = gguf.quants.dequantize(data, t).reshape(arr.shape).astype(np.float32)
        expected[name] = deq - 1.0 if name.endswith("norm.weight") else deq
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def write_folder(model, folder: Path, tensors: dict[str, np.ndarray]) -> Path:
    save_safetensors(model, folder)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()}, folder / "model.safetensors"
    )
    return folder


def logits(model, ids: list[int]) -> np.ndarray:
    n = len(ids)
    out, _ = model.module(
        jnp.array([ids]), jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool))
    )
    return np.asarray(out[0])


@pytest.fixture(scope="module")
def tiny():
    return load("tiny", num_layers=2, seed=2)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COTUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_quantized_gguf_equals_same_weights_from_safetensors(tiny, tmp_path, cache):
    path = tmp_path / "tiny.gguf"
    deq = write_gguf(tiny, path)
    types = {t.tensor_type for t in gguf.GGUFReader(path).tensors}
    assert {Q.Q8_0, Q.F16, Q.F32} <= types
    from_gguf = load_gguf(path)
    from_st = load_safetensors_dir(write_folder(tiny, tmp_path / "st", deq))
    ids = [tiny.tokenizer.bos_id, *tiny.tokenizer.encode("What is 12 + 7? The price of apples")]
    a, b, orig = logits(from_gguf, ids), logits(from_st, ids), logits(tiny, ids)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # and quantization only nudged the original model (Q8_0 ~ 0.4% relative error per weight)
    assert np.abs(a - orig).max() < 0.1 * np.abs(orig).max()
    assert (a.argmax(-1) == orig.argmax(-1)).mean() > 0.8
    # the tokenizer rebuilt from tokenizer.ggml.* tokenizes exactly like the original
    text = "Question: What is 1234 + 56?\n<reasoning>x</reasoning>  two  spaces é"
    assert from_gguf.tokenizer.encode(text) == tiny.tokenizer.encode(text)
    assert from_gguf.tokenizer.decode(from_gguf.tokenizer.encode(text)) == text
    assert from_gguf.tokenizer.end_ids == tiny.tokenizer.end_ids
    assert from_gguf.tokenizer.bos_id == tiny.tokenizer.bos_id


def test_gguf_cache_is_reused_and_identical(tiny, tmp_path, cache):
    path = tmp_path / "tiny.gguf"
    write_gguf(tiny, path)
    first = load_gguf(path)
    assert first.meta["cache_hit"] is False
    folder = Path(first.meta["cache"])
    assert folder.parent.parent == cache and (folder / "model.safetensors").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no tmp left
    second = load_gguf(path)
    assert second.meta["cache_hit"] is True
    ids = [2, 10, 20, 30, 40]
    np.testing.assert_array_equal(logits(first, ids), logits(second, ids))


def test_safetensors_round_trip_is_exact(tiny, tmp_path):
    folder = save_safetensors(tiny, tmp_path / "hf")
    assert {p.name for p in folder.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.model",
    }
    back = load(str(folder))
    ids = [2, 5, 6, 7, 8, 9]
    np.testing.assert_array_equal(logits(back, ids), logits(tiny, ids))


def test_hf_transformers_reads_the_written_folder(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = load("tiny", num_layers=6, seed=3)  # includes a global-attention layer
    folder = save_safetensors(model, tmp_path / "hf")
    hf = transformers.Gemma3ForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    ids = [2, *model.tokenizer.encode("What is the price of 3 apples after the discount, 12 + 7?")]
    assert len(ids) > model.config.sliding_window_size
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(logits(model, ids), theirs, rtol=2e-3, atol=2e-3)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        load_gguf(tmp_path / "nope.gguf")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_safetensors_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a model preset"):
        load(str(tmp_path / "missing-dir"))
    with pytest.raises(FileNotFoundError, match="COTUNE_GEMMA3_1B"):
        load("gemma3-1b")


def test_wrong_shape_names_the_tensor(tiny, tmp_path):
    folder = save_safetensors(tiny, tmp_path / "hf")
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][
        :, :10
    ].copy()
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(WeightsError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*\(128, 10\)"):
        load(str(folder))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(WeightsError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        load(str(folder))


def test_unknown_architecture_is_refused(tiny, tmp_path):
    folder = save_safetensors(tiny, tmp_path / "hf")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(WeightsError, match=r"config\.json.*unknown architecture.*llama"):
        load(str(folder))
    path = tmp_path / "llama.gguf"
    write_gguf(tiny, path, arch="llama")
    with pytest.raises(WeightsError, match=r"llama\.gguf.*unknown architecture.*'llama'"):
        load_gguf(path, use_cache=False)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(WeightsError, match="junk.gguf"):
        load_gguf(tmp_path / "junk.gguf", use_cache=False)
