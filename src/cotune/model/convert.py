"""Hugging Face Gemma 3 tensors <-> Tunix Gemma 3 module parameters, and building the module.

Every loader (GGUF, safetensors, cache) ends here, so the name mapping, the head reshapes
and the shape checks exist once. HF stores projections as ``[out, in]`` torch matrices;
Tunix stores einsum weights with heads split out:

====================================  =================================  ===============
HF (``model.layers.N.`` prefix)       Tunix (``layers.N.`` prefix)        Tunix shape
====================================  =================================  ===============
``self_attn.q_proj.weight``           ``attn.q_einsum.w``                 ``[N, D, H]``
``self_attn.{k,v}_proj.weight``       ``attn.kv_einsum.w`` (stacked)      ``[2, K, D, H]``
``self_attn.o_proj.weight``           ``attn.attn_vec_einsum.w``          ``[N, H, D]``
``mlp.{gate,up}_proj.weight``         ``mlp.{gate,up}_proj.kernel``       ``[D, F]``
``mlp.down_proj.weight``              ``mlp.down_proj.kernel``            ``[F, D]``
``input_layernorm``                   ``pre_attention_norm.scale``        ``[D]``
``post_attention_layernorm``          ``post_attention_norm.scale``       ``[D]``
``pre_feedforward_layernorm``         ``pre_ffw_norm.scale``              ``[D]``
``post_feedforward_layernorm``        ``post_ffw_norm.scale``             ``[D]``
``self_attn.{q,k}_norm``              ``attn._{query,key}_norm.scale``    ``[H]``
``model.embed_tokens.weight``         ``embedder.input_embedding``        ``[V, D]``
``model.norm.weight``                 ``final_norm.scale``                ``[D]``
====================================  =================================  ===============

Norm weights use the same ``x * (1 + w)`` convention in HF and Tunix (GGUF differs: see
:mod:`cotune.model.gguf_loader`).
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tunix.models.gemma3 import model as gemma3


class WeightsError(ValueError):
    """A weights file is missing, malformed or of an architecture cotune cannot run."""


FlatState = dict[tuple[str | int, ...], np.ndarray]

_NORMS = {
    "input_layernorm": "pre_attention_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "pre_ffw_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
_HF_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.")


def _strip_prefix(name: str) -> str:
    for p in _HF_PREFIXES:
        if name.startswith(p):
            rest = name[len(p) :]
            return rest if rest.startswith("model.") else "model." + rest
    return name


# --------------------------------------------------------------------------- configs


def layer_types(cfg: gemma3.ModelConfig) -> list[str]:
    """HF ``layer_types`` for Tunix's fixed Gemma 3 pattern (5 sliding, then 1 global)."""
    pattern = itertools.cycle(gemma3.GEMMA3_ATTENTION_PATTERN)
    return [
        "sliding_attention" if t == gemma3.AttentionType.LOCAL_SLIDING else "full_attention"
        for _, t in zip(range(cfg.num_layers), pattern, strict=False)
    ]


def config_from_hf(hf: dict[str, Any], source: str, dtype=jnp.float32) -> gemma3.ModelConfig:
    """A Tunix config from an HF ``config.json`` dict; refuses what Tunix cannot run."""
    arch = hf.get("model_type")
    if arch == "gemma3" and "text_config" in hf:
        hf = {**hf["text_config"], "model_type": "gemma3_text"}
        arch = "gemma3_text"
    if arch != "gemma3_text":
        raise WeightsError(
            f"{source}: unknown architecture model_type={arch!r} "
            f"(architectures={hf.get('architectures')}); cotune runs Gemma 3 text models "
            "(model_type 'gemma3_text')"
        )
    try:
        d, n, h = int(hf["hidden_size"]), int(hf["num_attention_heads"]), int(hf["head_dim"])
        rope = hf.get("rope_parameters") or {}
        local_theta = (rope.get("sliding_attention") or {}).get(
            "rope_theta", hf.get("rope_local_base_freq", 10_000.0)
        )
        global_rope = rope.get("full_attention") or {}
        global_theta = global_rope.get("rope_theta", hf.get("rope_theta", 1_000_000.0))
        scaling = hf.get("rope_scaling") or global_rope
        factor = float(scaling.get("factor", 1.0)) if scaling.get("rope_type") == "linear" else 1.0
        cfg = gemma3.ModelConfig(
            num_layers=int(hf["num_hidden_layers"]),
            num_embed=int(hf["vocab_size"]),
            embed_dim=d,
            hidden_dim=int(hf["intermediate_size"]),
            num_heads=n,
            head_dim=h,
            num_kv_heads=int(hf["num_key_value_heads"]),
            sliding_window_size=int(hf["sliding_window"]),
            local_base_frequency=int(local_theta),
            global_base_frequency=int(global_theta),
            global_scale_factor=factor,
            param_dtype=dtype,
        )
    except KeyError as e:
        raise WeightsError(f"{source}: config is missing key {e.args[0]!r}") from None
    qpas = hf.get("query_pre_attn_scalar", h)
    if qpas == d // n and qpas != h:
        cfg.query_pre_attn_norm = (
            gemma3.QueryPreAttentionNormalisation.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS
        )
    elif qpas != h:
        raise WeightsError(
            f"{source}: query_pre_attn_scalar={qpas} is neither head_dim nor d/heads"
        )
    if hf.get("layer_types") and list(hf["layer_types"]) != layer_types(cfg):
        raise WeightsError(
            f"{source}: layer_types {hf['layer_types']} differ from Gemma 3's 5-local/1-global "
            "pattern that Tunix implements"
        )
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(key):
            raise WeightsError(f"{source}: {key}={hf[key]} is not supported by Tunix Gemma 3")
    return cfg


def config_to_hf(cfg: gemma3.ModelConfig, tokenizer=None) -> dict[str, Any]:
    """An HF ``Gemma3ForCausalLM`` ``config.json`` (transformers 4.5x and 5.x both read it)."""
    by_embed = (
        cfg.query_pre_attn_norm
        == gemma3.QueryPreAttentionNormalisation.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS
    )
    global_rope: dict[str, Any] = {
        "rope_type": "default",
        "rope_theta": float(cfg.global_base_frequency),
    }
    if cfg.global_scale_factor != 1.0:
        global_rope = {**global_rope, "rope_type": "linear", "factor": cfg.global_scale_factor}
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": cfg.num_embed,
        "hidden_size": cfg.embed_dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "sliding_window": cfg.sliding_window_size,
        "layer_types": layer_types(cfg),
        "query_pre_attn_scalar": cfg.embed_dim // cfg.num_heads if by_embed else cfg.head_dim,
        "rope_theta": float(cfg.global_base_frequency),
        "rope_local_base_freq": float(cfg.local_base_frequency),
        "rope_scaling": None if cfg.global_scale_factor == 1.0 else global_rope,
        "rope_parameters": {
            "sliding_attention": {
                "rope_type": "default",
                "rope_theta": float(cfg.local_base_frequency),
            },
            "full_attention": global_rope,
        },
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "attention_bias": False,
        "tie_word_embeddings": True,
        "torch_dtype": "float32" if cfg.param_dtype == jnp.float32 else "bfloat16",
        "pad_token_id": getattr(tokenizer, "pad_id", 0),
        "eos_token_id": list(getattr(tokenizer, "end_ids", (1,))),
        "bos_token_id": getattr(tokenizer, "bos_id", 2),
    }


# --------------------------------------------------------------------------- tensors


def _expect(name: str, arr: np.ndarray, shape: tuple[int, ...], source: str) -> np.ndarray:
    if tuple(arr.shape) != tuple(shape):
        raise WeightsError(
            f"{source}: tensor {name!r} has shape {tuple(arr.shape)}, expected {tuple(shape)}"
        )
    return arr


def hf_to_tunix(hf: dict[str, np.ndarray], cfg: gemma3.ModelConfig, source: str) -> FlatState:
    """Map HF Gemma 3 tensors to flat Tunix state entries, checking every shape.

    ``lm_head.weight`` is accepted only when it equals the tied embedding (Gemma ties them).
    """
    d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_dim
    src = {_strip_prefix(name): arr for name, arr in hf.items()}
    out: FlatState = {}
    used: set[str] = set()

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in src:
            raise WeightsError(f"{source}: missing tensor {name!r}")
        used.add(name)
        return _expect(name, np.asarray(src[name]), shape, source)

    out[("embedder", "input_embedding")] = take("model.embed_tokens.weight", (cfg.num_embed, d))
    out[("final_norm", "scale")] = take("model.norm.weight", (d,))
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        q = take(p + "self_attn.q_proj.weight", (n * h, d))
        kk = take(p + "self_attn.k_proj.weight", (k * h, d))
        v = take(p + "self_attn.v_proj.weight", (k * h, d))
        o = take(p + "self_attn.o_proj.weight", (d, n * h))
        out[("layers", i, "attn", "q_einsum", "w")] = q.reshape(n, h, d).transpose(0, 2, 1)
        kv = np.stack([kk.reshape(k, h, d), v.reshape(k, h, d)]).transpose(0, 1, 3, 2)
        out[("layers", i, "attn", "kv_einsum", "w")] = kv
        out[("layers", i, "attn", "attn_vec_einsum", "w")] = o.T.reshape(n, h, d)
        out[("layers", i, "attn", "_query_norm", "scale")] = take(
            p + "self_attn.q_norm.weight", (h,)
        )
        out[("layers", i, "attn", "_key_norm", "scale")] = take(p + "self_attn.k_norm.weight", (h,))
        out[("layers", i, "mlp", "gate_proj", "kernel")] = take(
            p + "mlp.gate_proj.weight", (f, d)
        ).T
        out[("layers", i, "mlp", "up_proj", "kernel")] = take(p + "mlp.up_proj.weight", (f, d)).T
        out[("layers", i, "mlp", "down_proj", "kernel")] = take(
            p + "mlp.down_proj.weight", (d, f)
        ).T
        for hf_norm, tx_norm in _NORMS.items():
            out[("layers", i, tx_norm, "scale")] = take(p + hf_norm + ".weight", (d,))
    if "lm_head.weight" in src:
        used.add("lm_head.weight")
        if not np.array_equal(np.asarray(src["lm_head.weight"]), src["model.embed_tokens.weight"]):
            raise WeightsError(f"{source}: untied lm_head.weight is not supported (Gemma ties it)")
    extra = sorted(set(src) - used)
    if extra:
        raise WeightsError(f"{source}: unexpected tensors (not Gemma 3 text?): {extra[:5]}")
    return out


def tunix_to_hf(flat: FlatState, cfg: gemma3.ModelConfig) -> dict[str, np.ndarray]:
    """Inverse of :func:`hf_to_tunix` (contiguous float arrays, HF names)."""
    d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    hf: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": flat[("embedder", "input_embedding")],
        "model.norm.weight": flat[("final_norm", "scale")],
    }
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        q = flat[("layers", i, "attn", "q_einsum", "w")]
        kv = flat[("layers", i, "attn", "kv_einsum", "w")]
        o = flat[("layers", i, "attn", "attn_vec_einsum", "w")]
        hf[p + "self_attn.q_proj.weight"] = q.transpose(0, 2, 1).reshape(n * h, d)
        hf[p + "self_attn.k_proj.weight"] = kv[0].transpose(0, 2, 1).reshape(k * h, d)
        hf[p + "self_attn.v_proj.weight"] = kv[1].transpose(0, 2, 1).reshape(k * h, d)
        hf[p + "self_attn.o_proj.weight"] = o.reshape(n * h, d).T
        hf[p + "self_attn.q_norm.weight"] = flat[("layers", i, "attn", "_query_norm", "scale")]
        hf[p + "self_attn.k_norm.weight"] = flat[("layers", i, "attn", "_key_norm", "scale")]
        for proj in ("gate_proj", "up_proj", "down_proj"):
            hf[p + f"mlp.{proj}.weight"] = flat[("layers", i, "mlp", proj, "kernel")].T
        for hf_norm, tx_norm in _NORMS.items():
            hf[p + hf_norm + ".weight"] = flat[("layers", i, tx_norm, "scale")]
    return {name: np.ascontiguousarray(a) for name, a in hf.items()}


# --------------------------------------------------------------------------- modules


def flat_state(module: nnx.Module) -> FlatState:
    """The module's parameters as ``{path tuple: numpy array}`` (host copies)."""
    state = nnx.state(module, nnx.Param)
    return {tuple(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def build_module(cfg: gemma3.ModelConfig, flat: FlatState, source: str) -> gemma3.Gemma3:
    """A Tunix Gemma 3 holding exactly ``flat``: no random init, every key and shape checked."""
    abstract = nnx.eval_shape(lambda: gemma3.Gemma3(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    expected = dict(nnx.to_flat_state(state))
    missing = [p for p in expected if p not in flat]
    if missing:
        raise WeightsError(f"{source}: missing tensor {'.'.join(map(str, missing[0]))}")
    extra = [p for p in flat if p not in expected]
    if extra:
        raise WeightsError(f"{source}: unexpected tensor {'.'.join(map(str, extra[0]))}")
    leaves = []
    for path, var in expected.items():
        arr = flat[path]
        shape = tuple(var.get_value().shape)
        _expect(".".join(map(str, path)), arr, shape, source)
        leaves.append((path, var.replace(jnp.asarray(arr, dtype=cfg.param_dtype))))
    state = nnx.from_flat_state(leaves)
    return nnx.merge(graphdef, state)


def as_numpy_tree(x: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, x)
