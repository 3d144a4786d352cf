"""Hugging Face transformers checkpoints <-> zoo (config + params), one mapping table per family.

    cfg, params = zoo.hf.load("hf_dir")           # config.json + *.safetensors (sharded or not)
    zoo.hf.save(cfg, params, "out_dir")             # AutoModelFor{CausalLM,Seq2SeqLM}.from_pretrained("out_dir")

Families: gpt2, t5 (v1.0 relu/tied/rescaled and v1.1 gated-gelu/untied), llama (GQA, MQA, explicit head_dim,
linear and llama3 RoPE scaling, biases), gemma2, olmo2. A family is data (`Family` below):
  * `renames`: HF config field <-> ModelConfig field, copied as is (with HF's default when absent);
  * `fixed`: the ModelConfig values the HF architecture hard-codes (where norms sit, which norm, ...);
  * `unsupported`: HF fields whose other values the zoo cannot express;
  * `to_zoo` / `to_hf`: the few fields that need more than a rename (activations, RoPE, layer types);
  * `weights`: HF tensor name(s) <-> zoo param path(s), each with the reshape/transpose between them.

An HF config value the zoo cannot express raises ValueError naming the HF field. `save` maps the config to
HF and back and refuses a ModelConfig that would not come back unchanged, naming the ModelConfig field
(training-only fields such as dropout rates are exported where HF has them, and otherwise not checked).

Memory: tensors are read one at a time from memory-mapped safetensors files; a scanned stack's leaf is
assembled in one preallocated array; `save` converts and writes one tensor at a time. No pickle, no torch:
this module reads and writes the safetensors format itself (numpy's safetensors binding has no bfloat16).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import struct
from pathlib import Path
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from zoo.config import ModelConfig
from zoo.layers.init import dtype_of
from zoo.model import abstract_params

# ======================================================================================= safetensors I/O
# The format: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
# then the raw little-endian tensor bytes (https://github.com/huggingface/safetensors).
_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_ST_NAMES = {dtype: name for name, dtype in _ST_DTYPES.items()}
_IGNORED = re.compile(  # buffers and tied duplicates some checkpoints carry; HF ignores them too
    r"(rotary_emb\.inv_freq|\.attn\.(masked_)?bias|^(encoder|decoder)\.embed_tokens\.weight"
    r"|^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight)$")


class _Checkpoint:
    """The tensors of a checkpoint directory by name, each read on demand (memory-mapped, never all at once)."""

    def __init__(self, path: Path):
        index = path / "model.safetensors.index.json"
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            files = [path / f for f in files]
        else:
            files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.safetensors files (pickled pytorch_model.bin checkpoints are "
                                    "not read; convert them with safetensors first)")
        self.entries: dict[str, tuple[Path, np.dtype, tuple[int, ...], int]] = {}
        for file in files:
            with open(file, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                if info["dtype"] not in _ST_DTYPES:
                    raise ValueError(f"{file.name}: tensor {name!r} has unsupported dtype {info['dtype']}")
                start, end = info["data_offsets"]
                self.entries[name] = (file, _ST_DTYPES[info["dtype"]], tuple(info["shape"]), 8 + size + start)
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str) -> np.ndarray:
        if name not in self.entries:
            raise ValueError(f"checkpoint has no tensor {name!r}")
        self.used.add(name)
        file, dtype, shape, offset = self.entries[name]
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape)


def _write_safetensors(path: Path, tensors: list[tuple[str, jax.ShapeDtypeStruct, Callable]]) -> None:
    """Writes (name, shape/dtype, make) triples; `make()` builds each tensor only when it is written."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, spec, _ in tensors:
        nbytes = math.prod(spec.shape) * np.dtype(spec.dtype).itemsize
        header[name] = {"dtype": _ST_NAMES[np.dtype(spec.dtype)], "shape": list(spec.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, spec, make in tensors:
            array = np.ascontiguousarray(np.asarray(make()))
            if array.shape != tuple(spec.shape) or array.dtype != np.dtype(spec.dtype):
                raise AssertionError(f"{name}: built {array.shape} {array.dtype}, expected {spec}")
            f.write(array.reshape(-1).view(np.uint8).data)  # a byte view: buffers reject bfloat16


def _parse_size(size: int | str) -> int:
    """5_000_000_000, "5GB" (powers of 10, as HF) or "4GiB" -> bytes."""
    if isinstance(size, int):
        return size
    units = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]+)\s*", size)
    if not match or match.group(2).upper() not in units:
        raise ValueError(f"max_shard_size: cannot read {size!r}; use bytes or e.g. '5GB', '500MB'")
    return int(float(match.group(1)) * units[match.group(2).upper()])


# ============================================================================================ weights
class Rule(NamedTuple):
    """HF tensors <-> zoo params. Names may hold `{i}` (the HF layer index); layer rules' zoo paths are
    relative to the block. `to_zoo(*hf_arrays)` and `to_hf(*zoo_arrays)` each return a tuple; both run on
    numpy arrays, and `to_hf` also under jax.eval_shape (it uses array methods, or jnp for tracers)."""

    hf: tuple[str, ...]
    zoo: tuple[str, ...]
    to_zoo: Callable
    to_hf: Callable


def _rule(hf, zoo, codec) -> Rule:
    as_tuple = lambda x: (x,) if isinstance(x, str) else tuple(x)
    return Rule(as_tuple(hf), as_tuple(zoo), *codec)


# Codecs: (to_zoo, to_hf) pairs. torch Linear stores [out, in]; GPT-2's Conv1D and every zoo kernel [in, out].
_SAME = (lambda x: (x,), lambda x: (x,))
_TRANSPOSE = (lambda w: (w.T,), lambda k: (k.T,))


def _linear(*out):
    """Linear [prod(out), in] <-> kernel [in, *out] (q/k/v projections: out = (heads, head_dim))."""
    return (lambda w: (w.T.reshape(w.shape[1], *out),), lambda k: (k.reshape(k.shape[0], -1).T,))


def _linear_in(*inp):
    """Linear [out, prod(inp)] <-> kernel [*inp, out] (attention output: inp = (heads, head_dim))."""
    return (lambda w: (w.T.reshape(*inp, w.shape[0]),), lambda k: (k.reshape(-1, k.shape[-1]).T,))


def _reshape(*shape):
    """Flat HF vector <-> zoo array of `shape` (per-head biases, OLMo 2's full-width q/k norm scales)."""
    return (lambda b: (b.reshape(shape),), lambda b: (b.reshape(-1),))


def _conv1d_in(*inp):
    """Conv1D [prod(inp), out] <-> kernel [*inp, out]."""
    return (lambda w: (w.reshape(*inp, w.shape[-1]),), lambda k: (k.reshape(-1, k.shape[-1]),))


def _fused_qkv(heads, head_dim):
    """GPT-2's c_attn: one Conv1D [d, 3 * heads * head_dim] (or its bias) <-> query, key, value."""
    def to_zoo(w):
        lead = w.shape[:-1]
        return tuple(part.reshape(*lead, heads, head_dim) for part in np.split(w, 3, axis=-1))

    def to_hf(q, k, v):
        lead = q.shape[:-2]
        xp = np if isinstance(q, np.ndarray) else jnp  # numpy when writing, jnp under eval_shape
        return (xp.concatenate([x.reshape(*lead, -1) for x in (q, k, v)], axis=-1),)
    return to_zoo, to_hf


@dataclasses.dataclass(frozen=True)
class Weights:
    """Where every tensor goes: `top` rules use absolute zoo paths; `stacks` are (zoo stack name, number of
    layers, rules for one layer)."""

    top: list[Rule]
    stacks: list[tuple[str, int, list[Rule]]]


def _norm_rules(prefix: str, zoo: str, cfg: ModelConfig) -> list[Rule]:
    rules = [_rule(f"{prefix}.weight", f"{zoo}/scale", _SAME)]
    if cfg.norm_use_bias:
        rules.append(_rule(f"{prefix}.bias", f"{zoo}/bias", _SAME))
    return rules


def _embedding_rules(cfg: ModelConfig, embed: str) -> list[Rule]:
    """The token embedding, and the output head when it is not tied to it."""
    rules = [_rule(embed, "token_embed/embedding", _SAME)]
    if not cfg.tie_word_embeddings:
        rules.append(_rule("lm_head.weight", "lm_head/kernel", _TRANSPOSE))
    return rules


def _gpt2_weights(cfg: ModelConfig) -> Weights:
    h, hd = cfg.num_heads, cfg.head_dim
    qkv = ("attention/query", "attention/key", "attention/value")
    layer = [
        _rule("transformer.h.{i}.attn.c_attn.weight", [f"{p}/kernel" for p in qkv], _fused_qkv(h, hd)),
        _rule("transformer.h.{i}.attn.c_attn.bias", [f"{p}/bias" for p in qkv], _fused_qkv(h, hd)),
        _rule("transformer.h.{i}.attn.c_proj.weight", "attention/out/kernel", _conv1d_in(h, hd)),
        _rule("transformer.h.{i}.attn.c_proj.bias", "attention/out/bias", _SAME),
        *_norm_rules("transformer.h.{i}.ln_1", "attn_norm", cfg),
        *_norm_rules("transformer.h.{i}.ln_2", "mlp_norm", cfg),
        _rule("transformer.h.{i}.mlp.c_fc.weight", "mlp/wi/kernel", _SAME),
        _rule("transformer.h.{i}.mlp.c_fc.bias", "mlp/wi/bias", _SAME),
        _rule("transformer.h.{i}.mlp.c_proj.weight", "mlp/wo/kernel", _SAME),
        _rule("transformer.h.{i}.mlp.c_proj.bias", "mlp/wo/bias", _SAME),
    ]
    top = [*_embedding_rules(cfg, "transformer.wte.weight"),
           _rule("transformer.wpe.weight", "position_embed/embedding", _SAME),
           *_norm_rules("transformer.ln_f", "decoder/final_norm", cfg)]
    return Weights(top, [("decoder", cfg.num_layers, layer)])


def _attention_rules(cfg: ModelConfig, prefix: str, zoo: str,
                     names=("q_proj", "k_proj", "v_proj", "o_proj")) -> list[Rule]:
    h, kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q, k, v, o = names
    rules = [_rule(f"{prefix}.{q}.weight", f"{zoo}/query/kernel", _linear(h, hd)),
             _rule(f"{prefix}.{k}.weight", f"{zoo}/key/kernel", _linear(kv, hd)),
             _rule(f"{prefix}.{v}.weight", f"{zoo}/value/kernel", _linear(kv, hd)),
             _rule(f"{prefix}.{o}.weight", f"{zoo}/out/kernel", _linear_in(h, hd))]
    if cfg.attention_bias:
        rules += [_rule(f"{prefix}.{q}.bias", f"{zoo}/query/bias", _reshape(h, hd)),
                  _rule(f"{prefix}.{k}.bias", f"{zoo}/key/bias", _reshape(kv, hd)),
                  _rule(f"{prefix}.{v}.bias", f"{zoo}/value/bias", _reshape(kv, hd)),
                  _rule(f"{prefix}.{o}.bias", f"{zoo}/out/bias", _SAME)]
    return rules


def _mlp_rules(cfg: ModelConfig, prefix: str, names: dict[str, str]) -> list[Rule]:
    """`names`: zoo dense (wi / wi_0 / wi_1 / wo) -> HF module name."""
    rules = []
    for zoo, hf in names.items():
        rules.append(_rule(f"{prefix}.{hf}.weight", f"mlp/{zoo}/kernel", _TRANSPOSE))
        if cfg.mlp_bias:
            rules.append(_rule(f"{prefix}.{hf}.bias", f"mlp/{zoo}/bias", _SAME))
    return rules


_SWIGLU_NAMES = {"wi_0": "gate_proj", "wi_1": "up_proj", "wo": "down_proj"}


def _llama_like_weights(cfg: ModelConfig, norms: dict[str, str]) -> Weights:
    """LLaMA, Gemma 2 and OLMo 2 share tensor names; they differ in which norms a layer has (`norms`: HF
    layer-norm name -> zoo norm) and OLMo 2's q/k norms."""
    p = "model.layers.{i}"
    layer = _attention_rules(cfg, f"{p}.self_attn", "attention") + _mlp_rules(cfg, f"{p}.mlp", _SWIGLU_NAMES)
    for hf, zoo in norms.items():
        layer += _norm_rules(f"{p}.{hf}", zoo, cfg)
    if cfg.qk_norm == "full":  # OLMo 2: one norm over all heads, stored flat
        layer += [_rule(f"{p}.self_attn.q_norm.weight", "attention/query_norm/scale",
                        _reshape(cfg.num_heads, cfg.head_dim)),
                  _rule(f"{p}.self_attn.k_norm.weight", "attention/key_norm/scale",
                        _reshape(cfg.num_kv_heads, cfg.head_dim))]
    top = _embedding_rules(cfg, "model.embed_tokens.weight") + _norm_rules("model.norm", "decoder/final_norm", cfg)
    return Weights(top, [("decoder", cfg.num_layers, layer)])


def _t5_weights(cfg: ModelConfig) -> Weights:
    mlp = {"wi_0": "wi_0", "wi_1": "wi_1", "wo": "wo"} if cfg.is_gated else {"wi": "wi", "wo": "wo"}
    names = ("q", "k", "v", "o")
    stacks = []
    for stack, n in (("encoder", cfg.num_layers), ("decoder", cfg.num_decoder_layers)):
        p = f"{stack}.block.{{i}}.layer"
        rules = _attention_rules(cfg, f"{p}.0.SelfAttention", "attention", names)
        rules += _norm_rules(f"{p}.0.layer_norm", "attn_norm", cfg)
        ff = 1
        if stack == "decoder":
            rules += _attention_rules(cfg, f"{p}.1.EncDecAttention", "cross_attention", names)
            rules += _norm_rules(f"{p}.1.layer_norm", "cross_norm", cfg)
            ff = 2
        rules += _mlp_rules(cfg, f"{p}.{ff}.DenseReluDense", mlp)
        rules += _norm_rules(f"{p}.{ff}.layer_norm", "mlp_norm", cfg)
        stacks.append((stack, n, rules))
    top = _embedding_rules(cfg, "shared.weight")
    for stack in ("encoder", "decoder"):
        # HF keeps the stack's one bias table in its first layer; the zoo keeps it on the stack.
        top.append(_rule(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                         f"{stack}/relative_bias", _SAME))
        top += _norm_rules(f"{stack}.final_layer_norm", f"{stack}/final_norm", cfg)
    return Weights(top, stacks)


# ============================================================================================= configs
class _HFConfig:
    """An HF config.json dict whose errors name the field."""

    def __init__(self, values: dict, model_type: str):
        self.values, self.model_type = values, model_type

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def fail(self, name: str, why: str):
        """ValueError naming the field; `name` may be "dict_field.key"."""
        head, _, key = name.partition(".")
        value = self.values.get(head, "<absent>")
        if key and isinstance(value, dict):
            value = value.get(key, "<absent>")
        raise ValueError(f"HF {self.model_type} config field {name}={value!r}: {why}")


# HF activation names (transformers' ACT2FN) -> zoo activations. gelu_new / gelu_pytorch_tanh / gelu_fast are
# all the tanh approximation; plain "gelu" is exact (erf).
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                   "gelu_fast": "gelu_tanh", "relu": "relu", "relu2": "squared_relu", "silu": "silu",
                   "swish": "silu", "linear": "linear"}
_ZOO_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "squared_relu": "relu2",
                    "silu": "silu", "linear": "linear"}


def _activation(hf: _HFConfig, field: str, default: str) -> str:
    name = hf.get(field, default)
    if name not in _HF_ACTIVATIONS:
        hf.fail(field, f"no zoo activation matches; supported: {', '.join(_HF_ACTIVATIONS)}")
    return _HF_ACTIVATIONS[name]


def _glu(hf: _HFConfig, field: str, default: str) -> dict:
    """LLaMA-style MLP: act(gate_proj x) * up_proj x."""
    return {"mlp_activations": (_activation(hf, field, default), "linear")}


_ROPE_TYPES = {"default": "none", "linear": "linear", "llama3": "llama3"}


def _rope_to_zoo(hf: _HFConfig) -> dict:
    """RoPE: transformers 5 writes `rope_parameters` {rope_type, rope_theta, ...}; 4.x wrote `rope_theta` plus
    an optional `rope_scaling` {type | rope_type, factor, ...}."""
    field, params = "rope_parameters", hf.get("rope_parameters")
    if not params:
        field, params = "rope_scaling", dict(hf.get("rope_scaling") or {})
        params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    if "full_attention" in params or "sliding_attention" in params:
        hf.fail(field, "per-layer-type RoPE parameters are not supported for this family")
    key = "rope_type" if "rope_type" in params else "type"
    kind = params.get(key, "default")
    if kind not in _ROPE_TYPES:
        hf.fail(f"{field}.{key}", f"RoPE scaling {kind!r} is not in the zoo; supported: {', '.join(_ROPE_TYPES)}")
    for where, value in (("partial_rotary_factor", hf.get("partial_rotary_factor")),
                         (f"{field}.partial_rotary_factor", params.get("partial_rotary_factor"))):
        if value not in (None, 1, 1.0):
            hf.fail(where, f"partial rotary ({value}) is not applied by this HF family's attention")
    out = {"rope_theta": float(params.get("rope_theta", 10000.0)), "rope_scaling": _ROPE_TYPES[kind]}
    if kind != "default":
        out["rope_scaling_factor"] = float(params["factor"])
    if kind == "llama3":
        out.update(rope_low_freq_factor=float(params["low_freq_factor"]),
                   rope_high_freq_factor=float(params["high_freq_factor"]),
                   rope_original_max_len=int(params["original_max_position_embeddings"]))
    return out


def _rope_to_hf(cfg: ModelConfig) -> dict:
    """Both spellings, so transformers 4.x and 5.x read the same RoPE."""
    kind = {v: k for k, v in _ROPE_TYPES.items()}[cfg.rope_scaling]
    scaling = {"rope_type": kind}
    if kind != "default":
        scaling["factor"] = cfg.rope_scaling_factor
    if kind == "llama3":
        scaling.update(low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
                       original_max_position_embeddings=cfg.rope_original_max_len)
    return {"rope_parameters": {**scaling, "rope_theta": cfg.rope_theta}, "rope_theta": cfg.rope_theta,
            "rope_scaling": None if kind == "default" else {**scaling, "type": kind}}


# --------------------------------------------------------------------------------------------- gpt2
def _gpt2_to_zoo(hf: _HFConfig) -> dict:
    scale = hf.get("scale_attn_weights", True)
    return {"d_ff": hf.get("n_inner") or 4 * hf.get("n_embd", 768),
            "mlp_activations": (_activation(hf, "activation_function", "gelu_new"),),
            "query_scale": None if scale else 1.0}


def _gpt2_to_hf(cfg: ModelConfig) -> dict:
    act = {**_ZOO_ACTIVATIONS, "gelu_tanh": "gelu_new"}[cfg.mlp_activations[0]]
    return {"n_inner": cfg.d_ff, "activation_function": act, "scale_attn_weights": cfg.query_scale != 1.0}


# ------------------------------------------------------------------------------------------- llama
def _llama_to_zoo(hf: _HFConfig) -> dict:
    return {**_glu(hf, "hidden_act", "silu"), **_rope_to_zoo(hf)}


def _llama_to_hf(cfg: ModelConfig) -> dict:
    return {"hidden_act": _ZOO_ACTIVATIONS[cfg.mlp_activations[0]], **_rope_to_hf(cfg)}


# ------------------------------------------------------------------------------------------ gemma2
_GEMMA_LAYER_TYPES = {"sliding_attention": "local", "full_attention": "global"}


def _gemma2_to_zoo(hf: _HFConfig) -> dict:
    n = hf.get("num_hidden_layers", 26)
    # HF's default (and Gemma 2's layout): layer i slides when i is even.
    types = hf.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
    if len(types) != n or any(t not in _GEMMA_LAYER_TYPES for t in types):
        hf.fail("layer_types", f"needs {n} entries from {', '.join(_GEMMA_LAYER_TYPES)}")
    kinds = [_GEMMA_LAYER_TYPES[t] for t in types]
    period = next(p for p in range(1, n + 1) if n % p == 0 and all(k == kinds[i % p] for i, k in enumerate(kinds)))
    window = hf.get("sliding_window", 4096)
    if "local" in kinds and window is None:
        hf.fail("sliding_window", "is null but layer_types has sliding_attention layers")
    # Early Gemma 2 configs named the activation hidden_act.
    act_field = "hidden_act" if hf.get("hidden_act") and not hf.get("hidden_activation") else "hidden_activation"
    return {"attention_pattern": tuple(kinds[:period]),
            "sliding_window_size": window if "local" in kinds else None,
            "query_scale": float(hf.get("query_pre_attn_scalar", 256)) ** -0.5,
            **_glu(hf, act_field, "gelu_pytorch_tanh"), **_rope_to_zoo(hf)}


def _gemma2_to_hf(cfg: ModelConfig) -> dict:
    kinds = {v: k for k, v in _GEMMA_LAYER_TYPES.items()}
    for kind in cfg.attention_pattern:
        if kind not in kinds:
            raise ValueError(f"ModelConfig.attention_pattern: {kind!r} layers cannot be expressed as HF gemma2 "
                             f"(layer_types has only {', '.join(kinds)})")
    scalar = (cfg.query_scale if cfg.query_scale is not None else cfg.head_dim ** -0.5) ** -2
    if math.isclose(scalar, round(scalar), rel_tol=1e-6):
        scalar = int(round(scalar))  # HF types it int
    return {"layer_types": [kinds[k] for k in cfg.layer_kinds()],
            "sliding_window": cfg.sliding_window_size, "query_pre_attn_scalar": scalar,
            "hidden_activation": _ZOO_ACTIVATIONS[cfg.mlp_activations[0]], **_rope_to_hf(cfg)}


# ------------------------------------------------------------------------------------------------ t5
def _t5_to_zoo(hf: _HFConfig) -> dict:
    proj = hf.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    act = parts[-1]
    if gated and act == "gelu":
        act = "gelu_new"  # HF: "gated-gelu" (T5 v1.1, flan-t5) means the tanh approximation
    if len(parts) > 2 or (len(parts) == 2 and not gated) or act not in _HF_ACTIVATIONS:
        hf.fail("feed_forward_proj", "must be ACT or gated-ACT with ACT one of " + ", ".join(_HF_ACTIVATIONS))
    act = _HF_ACTIVATIONS[act]
    # transformers 4 rescaled the decoder output by d_model**-0.5 exactly when the head is tied (v1.0);
    # transformers 5 writes that choice as `scale_decoder_outputs`. Tying itself is decided by the checkpoint.
    scale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
    return {"mlp_activations": (act, "linear") if gated else (act,),
            "tie_word_embeddings": hf.get("tie_word_embeddings", True) is not False,
            "scale_logits_by_inv_sqrt_d_model": bool(scale),
            "embedding_dropout": hf.get("dropout_rate", 0.1), "attention_dropout": hf.get("dropout_rate", 0.1),
            "residual_dropout": hf.get("dropout_rate", 0.1)}


def _t5_to_hf(cfg: ModelConfig) -> dict:
    if cfg.scale_logits_by_inv_sqrt_d_model != cfg.tie_word_embeddings:
        raise ValueError(
            f"ModelConfig.scale_logits_by_inv_sqrt_d_model={cfg.scale_logits_by_inv_sqrt_d_model} with "
            f"tie_word_embeddings={cfg.tie_word_embeddings} cannot be expressed as HF t5: transformers 4.x "
            "rescales the decoder output exactly when the head is tied")
    first = cfg.mlp_activations[0]
    if cfg.is_gated:
        proj = "gated-gelu" if first == "gelu_tanh" else f"gated-{_ZOO_ACTIVATIONS[first]}"
    else:
        proj = {**_ZOO_ACTIVATIONS, "gelu_tanh": "gelu_new"}[first]
    return {"feed_forward_proj": proj, "tie_word_embeddings": cfg.tie_word_embeddings,
            "scale_decoder_outputs": cfg.scale_logits_by_inv_sqrt_d_model, "dropout_rate": cfg.residual_dropout,
            "is_encoder_decoder": True}


# =========================================================================================== families
@dataclasses.dataclass(frozen=True)
class Family:
    """One HF model type: its config mapping table and its weight names."""

    model_type: str
    hf_class: str
    renames: dict[str, tuple[str, Any]]  # HF field -> (ModelConfig field, HF default when absent)
    fixed: dict[str, Any]                # ModelConfig values the HF architecture hard-codes
    unsupported: dict[str, tuple]        # HF field -> the only values the zoo can express
    to_zoo: Callable[[_HFConfig], dict]  # fields that need more than a rename
    to_hf: Callable[[ModelConfig], dict]
    weights: Callable[[ModelConfig], Weights]
    embedding: str                       # HF name of the token embedding (what a tied head reads)
    prefix: str = ""                     # base-model prefix of tensor names ("model.", "transformer.")

    def config_to_zoo(self, values: dict, **overrides) -> ModelConfig:
        hf = _HFConfig(values, self.model_type)
        for name, allowed in self.unsupported.items():
            if hf.get(name, allowed[0]) not in allowed:
                hf.fail(name, f"the zoo can only express {' or '.join(map(repr, allowed))}")
        fields = {zoo: hf.get(name, default) for name, (zoo, default) in self.renames.items()}
        fields.update(self.fixed)
        fields.update(self.to_zoo(hf))
        fields.update(overrides)
        return ModelConfig(**fields)

    def config_to_hf(self, cfg: ModelConfig) -> dict:
        values = {"architectures": [self.hf_class], "model_type": self.model_type}
        values.update({name: getattr(cfg, zoo) for name, (zoo, _) in self.renames.items()})
        values.update({name: allowed[0] for name, allowed in self.unsupported.items() if allowed[0] is not None})
        values.update(self.to_hf(cfg))
        return values


_DECODER = {"architecture": "decoder_only", "parallel_layers": False, "final_norm": True, "norm_use_scale": True,
            "scale_logits_by_inv_sqrt_d_model": False}
_LLAMA_LIKE_RENAMES = {
    "vocab_size": ("vocab_size", 32000), "hidden_size": ("d_model", 4096), "intermediate_size": ("d_ff", 11008),
    "num_hidden_layers": ("num_layers", 32), "num_attention_heads": ("num_heads", 32),
    "num_key_value_heads": ("num_kv_heads", None), "head_dim": ("head_dim", None),
    "max_position_embeddings": ("max_seq_len", 2048), "rms_norm_eps": ("norm_eps", 1e-6),
    "attention_bias": ("attention_bias", False), "tie_word_embeddings": ("tie_word_embeddings", False),
    "attention_dropout": ("attention_dropout", 0.0), "initializer_range": ("init_std", 0.02),
}
_ROPE_DECODER = {**_DECODER, "norm_type": "rmsnorm", "norm_use_bias": False, "position_embedding": "rope",
                 "rope_fraction": 1.0, "rope_local_theta": None, "qk_norm": "none", "attn_logits_soft_cap": None,
                 "final_logits_soft_cap": None, "scale_embeddings": False, "norm_scale_plus_one": False,
                 "attention_pattern": ("global",), "mlp_bias": False, "query_scale": None, "norm_position": "pre"}

FAMILIES: dict[str, Family] = {
    "gpt2": Family(
        model_type="gpt2", hf_class="GPT2LMHeadModel", prefix="transformer.",
        renames={"vocab_size": ("vocab_size", 50257), "n_embd": ("d_model", 768), "n_layer": ("num_layers", 12),
                 "n_head": ("num_heads", 12), "n_positions": ("max_seq_len", 1024),
                 "layer_norm_epsilon": ("norm_eps", 1e-5), "tie_word_embeddings": ("tie_word_embeddings", True),
                 "embd_pdrop": ("embedding_dropout", 0.1), "attn_pdrop": ("attention_dropout", 0.1),
                 "resid_pdrop": ("residual_dropout", 0.1), "initializer_range": ("init_std", 0.02)},
        fixed={**_DECODER, "norm_position": "pre", "norm_type": "layernorm", "norm_use_bias": True,
               "norm_scale_plus_one": False, "mlp_bias": True, "attention_bias": True, "qk_norm": "none",
               "position_embedding": "learned", "attention_pattern": ("global",), "scale_embeddings": False,
               "attn_logits_soft_cap": None, "final_logits_soft_cap": None, "init_scheme": "gpt2_scaled"},
        unsupported={"scale_attn_by_inverse_layer_idx": (False,), "add_cross_attention": (False,)},
        to_zoo=_gpt2_to_zoo, to_hf=_gpt2_to_hf, weights=_gpt2_weights, embedding="transformer.wte.weight"),
    "t5": Family(
        model_type="t5", hf_class="T5ForConditionalGeneration",
        renames={"vocab_size": ("vocab_size", 32128), "d_model": ("d_model", 512), "d_kv": ("head_dim", 64),
                 "d_ff": ("d_ff", 2048), "num_layers": ("num_layers", 6),
                 "num_decoder_layers": ("num_decoder_layers", None), "num_heads": ("num_heads", 8),
                 "relative_attention_num_buckets": ("relative_num_buckets", 32),
                 "relative_attention_max_distance": ("relative_max_distance", 128),
                 "layer_norm_epsilon": ("norm_eps", 1e-6), "n_positions": ("max_seq_len", 512)},
        fixed={"architecture": "encoder_decoder", "norm_position": "pre", "norm_type": "rmsnorm",
               "norm_use_bias": False, "norm_scale_plus_one": False, "final_norm": True, "attention_bias": False,
               "mlp_bias": False, "query_scale": 1.0, "qk_norm": "none", "position_embedding": "relative_bias",
               "relative_bias_shared": True, "attention_pattern": ("global",), "scale_embeddings": False,
               "attn_logits_soft_cap": None, "final_logits_soft_cap": None, "init_scheme": "t5"},
        unsupported={}, to_zoo=_t5_to_zoo, to_hf=_t5_to_hf, weights=_t5_weights, embedding="shared.weight"),
    "llama": Family(
        model_type="llama", hf_class="LlamaForCausalLM", prefix="model.",
        renames={**_LLAMA_LIKE_RENAMES, "mlp_bias": ("mlp_bias", False)},
        fixed={k: v for k, v in _ROPE_DECODER.items() if k != "mlp_bias"},
        # LLaMA's attention has no sliding window (that is Mistral).
        unsupported={"sliding_window": (None,), "use_sliding_window": (None, False)},
        to_zoo=_llama_to_zoo, to_hf=_llama_to_hf, embedding="model.embed_tokens.weight",
        weights=lambda cfg: _llama_like_weights(cfg, {"input_layernorm": "attn_norm",
                                                       "post_attention_layernorm": "mlp_norm"})),
    "gemma2": Family(
        model_type="gemma2", hf_class="Gemma2ForCausalLM", prefix="model.",
        renames={**_LLAMA_LIKE_RENAMES, "vocab_size": ("vocab_size", 256000), "hidden_size": ("d_model", 2304),
                 "intermediate_size": ("d_ff", 9216), "num_hidden_layers": ("num_layers", 26),
                 "num_attention_heads": ("num_heads", 8), "num_key_value_heads": ("num_kv_heads", 4),
                 "head_dim": ("head_dim", 256), "max_position_embeddings": ("max_seq_len", 8192),
                 "tie_word_embeddings": ("tie_word_embeddings", True),
                 "attn_logit_softcapping": ("attn_logits_soft_cap", 50.0),
                 "final_logit_softcapping": ("final_logits_soft_cap", 30.0)},
        fixed={**{k: v for k, v in _ROPE_DECODER.items()
                  if k not in ("attention_pattern", "query_scale", "attn_logits_soft_cap", "final_logits_soft_cap")},
               "norm_position": "double", "norm_scale_plus_one": True, "scale_embeddings": True},
        unsupported={"use_bidirectional_attention": (None, False)},
        to_zoo=_gemma2_to_zoo, to_hf=_gemma2_to_hf, embedding="model.embed_tokens.weight",
        weights=lambda cfg: _llama_like_weights(cfg, {
            "input_layernorm": "attn_norm", "post_attention_layernorm": "attn_post_norm",
            "pre_feedforward_layernorm": "mlp_norm", "post_feedforward_layernorm": "mlp_post_norm"})),
    "olmo2": Family(
        model_type="olmo2", hf_class="Olmo2ForCausalLM", prefix="model.",
        renames={**_LLAMA_LIKE_RENAMES, "vocab_size": ("vocab_size", 50304), "rms_norm_eps": ("norm_eps", 1e-5)},
        fixed={**_ROPE_DECODER, "norm_position": "output", "qk_norm": "full"},
        unsupported={}, to_zoo=_llama_to_zoo, to_hf=_llama_to_hf, embedding="model.embed_tokens.weight",
        weights=lambda cfg: _llama_like_weights(cfg, {"post_attention_layernorm": "attn_norm",
                                                       "post_feedforward_layernorm": "mlp_norm"})),
}

# Fields `save` does not hold to the family: how the model runs, and training-only settings.
_NOT_COMPARED = {"scan_layers", "remat_policy", "dtype", "param_dtype", "attention_impl", "init_scheme", "init_std",
                 "z_loss_multiplier", "embedding_dropout", "attention_dropout", "residual_dropout"}


def _semantics(cfg: ModelConfig) -> dict:
    """The fields that decide what the model computes, with unused knobs dropped and defaults resolved."""
    values = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_COMPARED}
    values["query_scale"] = cfg.query_scale if cfg.query_scale is not None else cfg.head_dim ** -0.5
    values["attention_pattern"] = cfg.layer_kinds()
    unused = set()
    if cfg.position_embedding != "rope":
        unused |= {k for k in values if k.startswith("rope_")}
    elif cfg.rope_scaling == "none":
        unused |= {"rope_scaling_factor", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len"}
    elif cfg.rope_scaling == "linear":
        unused |= {"rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len"}
    if not any(k.startswith("local") for k in cfg.attention_pattern):
        unused |= {"sliding_window_size", "rope_local_theta"}
    if cfg.position_embedding != "relative_bias":
        unused |= {"relative_num_buckets", "relative_max_distance", "relative_bias_shared"}
    if not cfg.parallel_layers:
        unused.add("parallel_shared_norm")
    if not cfg.is_encoder_decoder:
        unused.add("num_decoder_layers")
    return {k: v for k, v in values.items() if k not in unused}


def _mismatches(cfg: ModelConfig, family: Family) -> list[str]:
    """Why `cfg` cannot be saved as `family` (empty when it can): the fields that change on a round trip."""
    try:
        back = family.config_to_zoo(family.config_to_hf(cfg))
    except ValueError as e:
        return [str(e)]
    ours, theirs = _semantics(cfg), _semantics(back)
    out = []
    for name in ours.keys() | theirs.keys():
        a, b = ours.get(name, "<unused>"), theirs.get(name, "<unused>")
        same = (math.isclose(a, b, rel_tol=1e-6) if isinstance(a, float) and isinstance(b, float) else a == b)
        if not same:
            out.append(f"ModelConfig.{name}={a!r} cannot be expressed as HF {family.model_type} "
                       f"(it would load back as {b!r})")
    return sorted(out)


def family_of(cfg: ModelConfig, family: str | None = None) -> Family:
    """The HF family that expresses `cfg` exactly (or check the one named); ValueError naming the fields if none."""
    if family is not None:
        if family not in FAMILIES:
            raise ValueError(f"unknown HF family {family!r}; supported: {', '.join(FAMILIES)}")
        problems = _mismatches(cfg, FAMILIES[family])
        if problems:
            raise ValueError("; ".join(problems))
        return FAMILIES[family]
    report = {}
    for name, candidate in FAMILIES.items():
        problems = _mismatches(cfg, candidate)
        if not problems:
            return candidate
        report[name] = problems
    raise ValueError("no HF family expresses this ModelConfig:\n" +
                     "\n".join(f"  {name}: {'; '.join(p)}" for name, p in report.items()))


def config_from_hf(values: dict | str | Path, **overrides) -> ModelConfig:
    """An HF config (dict, config.json or its directory) -> ModelConfig; `overrides` replace any field."""
    if not isinstance(values, dict):
        path = Path(values)
        values = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    model_type = values.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"HF config field model_type={model_type!r}: not supported; supported: "
                         f"{', '.join(FAMILIES)}")
    return FAMILIES[model_type].config_to_zoo(values, **overrides)


def config_to_hf(cfg: ModelConfig, family: str | None = None) -> dict:
    """ModelConfig -> the HF config.json dict of the family that expresses it exactly."""
    return family_of(cfg, family).config_to_hf(cfg)


# ========================================================================================= load / save
def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _get(tree: dict, path: str):
    for key in path.split("/"):
        if not isinstance(tree, dict) or key not in tree:
            raise ValueError(f"params have no {path!r}")
        tree = tree[key]
    return tree


@functools.lru_cache(maxsize=8)
def _model_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Param path -> shape for `cfg` (traced, never allocated; cached because load and save both ask)."""
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract_params(cfg)))[0]
    return {jax.tree_util.keystr(k): tuple(v.shape) for k, v in flat}


def _check_shapes(cfg: ModelConfig, params: dict, what: str) -> None:
    """`params` must have exactly the tree and shapes the model builds for `cfg`."""
    want = _model_shapes(cfg)
    have = {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    if want != have:
        diffs = sorted(f"{k}: {what} {have.get(k, 'missing')}, model {want.get(k, 'missing')}"
                       for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        raise ValueError(f"{what} do not match the model for this config: " + "; ".join(diffs[:8]))


class _Names:
    """HF tensor names as a checkpoint spells them: with or without the base-model prefix."""

    def __init__(self, ckpt: _Checkpoint, prefix: str):
        self.ckpt, self.prefix = ckpt, prefix

    def resolve(self, name: str) -> str:
        if name in self.ckpt or not name.startswith(self.prefix):
            return name
        return name[len(self.prefix):] if name[len(self.prefix):] in self.ckpt else name

    def get(self, name: str) -> np.ndarray:
        return self.ckpt.get(self.resolve(name))


def _decide_tying(cfg: ModelConfig, names: _Names, embed: str) -> ModelConfig:
    """The checkpoint decides tying, as in transformers 5: a stored lm_head that differs from the embedding is
    its own matrix whatever the config says (T5 v1.1 under transformers 5 writes tie_word_embeddings: true)."""
    if "lm_head.weight" not in names.ckpt:
        if not cfg.tie_word_embeddings:
            raise ValueError("HF config field tie_word_embeddings=false, but the checkpoint has no lm_head.weight")
        return cfg
    tied = cfg.tie_word_embeddings and np.array_equal(names.get("lm_head.weight"), names.get(embed))
    return cfg.replace(tie_word_embeddings=bool(tied))


def load(path: str | Path, **overrides) -> tuple[ModelConfig, dict]:
    """Reads an HF checkpoint directory: config.json + model.safetensors (or shards with
    model.safetensors.index.json). Returns (ModelConfig, params) for `zoo.build(cfg).apply({"params": params},
    ...)`; `overrides` replace ModelConfig fields (scan_layers=False for the unrolled layout, dtype,
    param_dtype, ...). Raises ValueError naming the HF field for anything the zoo cannot express."""
    path = Path(path)
    values = json.loads((path / "config.json").read_text())
    cfg = config_from_hf(values)  # every config error before any weight is read
    family = FAMILIES[values["model_type"]]
    names = _Names(_Checkpoint(path), family.prefix)
    cfg = _decide_tying(cfg, names, family.embedding).replace(**overrides)
    dtype = np.dtype(dtype_of(cfg.param_dtype))
    spec = family.weights(cfg)

    params: dict = {}

    def put(zoo_path: str, value):
        _set(params, zoo_path, jax.device_put(np.asarray(value, dtype)))  # device_put: no per-shape compile

    for rule in spec.top:
        for zoo, value in zip(rule.zoo, rule.to_zoo(*map(names.get, rule.hf))):
            put(zoo, value)
    k = cfg.cycle_length
    for stack, num_layers, rules in spec.stacks:
        cycles = num_layers // k
        for rule in rules:
            for j in range(k):  # block j of cycle c is HF layer c * k + j
                layers = (rule.to_zoo(*(names.get(n.format(i=c * k + j)) for n in rule.hf)) for c in range(cycles))
                if not cfg.scan_layers:
                    for c, values in enumerate(layers):
                        for zoo, value in zip(rule.zoo, values):
                            put(f"{stack}/cycle_{c}/block_{j}/{zoo}", value)
                    continue
                buffers = None  # one preallocated [cycles, ...] array per leaf, filled a layer at a time
                for c, values in enumerate(layers):
                    if buffers is None:
                        buffers = [np.empty((cycles, *np.shape(v)), dtype) for v in values]
                    for buffer, value in zip(buffers, values):
                        buffer[c] = value
                for zoo, buffer in zip(rule.zoo, buffers):
                    put(f"{stack}/cycles/block_{j}/{zoo}", buffer)
                del buffers

    unused = sorted(n for n in names.ckpt.entries if n not in names.ckpt.used and not _IGNORED.search(n))
    if unused:
        raise ValueError(f"checkpoint tensors with no place in the zoo {family.model_type} model (an HF feature "
                         f"the converter does not express?): {', '.join(unused[:10])}")
    _check_shapes(cfg, params, "checkpoint tensors")
    return cfg, params


def _host(x, index: int | None = None) -> np.ndarray:
    """A zoo leaf (or layer `index` of a stacked leaf) as numpy. np.asarray on a jax array that has to copy
    (accelerator or sharded) keeps the copy cached on the array for the array's lifetime, which over a whole
    save would be a second model in host memory; so such arrays are sliced where they live and cross shard
    by shard through temporary CPU arrays. A single-device CPU array is viewed in place."""
    if not isinstance(x, jax.Array):
        array = np.asarray(x)
    elif len(x.devices()) == 1 and next(iter(x.devices())).platform == "cpu":
        array = np.asarray(x)  # a view of the buffer: no copy, nothing cached
    else:
        if index is not None:
            x, index = x[index], None  # one layer crosses to the host
        array = np.empty(x.shape, x.dtype)
        cpu = jax.devices("cpu")[0]
        for shard in x.addressable_shards:
            if shard.replica_id == 0:
                array[shard.index] = np.asarray(jax.device_put(shard.data, cpu))
    return array if index is None else array[index]


def _leaves(arrays: list, index: int | None = None) -> list:
    return [_host(x, index) for x in arrays]


def _make(rule: Rule, leaves: Callable[[], list], index: int):
    return rule.to_hf(*leaves())[index]


def save(cfg: ModelConfig, params: dict, out_dir: str | Path, *, family: str | None = None,
         max_shard_size: int | str = "5GB", extra_config: dict | None = None) -> Path:
    """Writes config.json + model.safetensors (sharded with an index above `max_shard_size`) that
    transformers' AutoModelForCausalLM / AutoModelForSeq2SeqLM.from_pretrained reads. `family` (gpt2, t5,
    llama, gemma2, olmo2) defaults to the one that expresses `cfg` exactly; a config no family expresses
    raises ValueError naming the ModelConfig field. `params` may be scanned or unrolled; `extra_config` adds
    HF config fields the zoo does not track (token ids, ...)."""
    fam = family_of(cfg, family)
    params = nn.meta.unbox(params)
    layout_scanned = "cycles" in params["decoder"]
    _check_shapes(cfg.replace(scan_layers=layout_scanned), params, "params")
    spec = fam.weights(cfg)

    jobs = []  # (rule, format values for its names, zoo arrays' shapes, () -> zoo arrays on the host)
    for rule in spec.top:
        leaves = [_get(params, p) for p in rule.zoo]
        jobs.append((rule, {}, leaves, functools.partial(_leaves, leaves)))
    k = cfg.cycle_length
    for stack, num_layers, rules in spec.stacks:
        for rule in rules:
            for j in range(k):
                for c in range(num_layers // k):
                    if layout_scanned:
                        stacked = [_get(params, f"{stack}/cycles/block_{j}/{p}") for p in rule.zoo]
                        shapes = [jax.ShapeDtypeStruct(x.shape[1:], x.dtype) for x in stacked]
                        jobs.append((rule, {"i": c * k + j}, shapes, functools.partial(_leaves, stacked, c)))
                    else:
                        leaves = [_get(params, f"{stack}/cycle_{c}/block_{j}/{p}") for p in rule.zoo]
                        jobs.append((rule, {"i": c * k + j}, leaves, functools.partial(_leaves, leaves)))
    tensors = []  # (HF name, ShapeDtypeStruct, make): nothing is converted before it is written
    for rule, fmt, shapes, leaves in jobs:
        abstract = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in shapes]
        for index, (name, spec_) in enumerate(zip(rule.hf, jax.eval_shape(rule.to_hf, *abstract))):
            tensors.append((name.format(**fmt), spec_, functools.partial(_make, rule, leaves, index)))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    limit = _parse_size(max_shard_size)
    shards, size = [[]], 0
    for t in tensors:
        nbytes = math.prod(t[1].shape) * np.dtype(t[1].dtype).itemsize
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += nbytes
    for stale in list(out.glob("model*.safetensors")) + [out / "model.safetensors.index.json"]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        _write_safetensors(out / "model.safetensors", shards[0])
    else:
        weight_map, total = {}, 0
        for n, shard in enumerate(shards, 1):
            file = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
            _write_safetensors(out / file, shard)
            for name, spec_, _ in shard:
                weight_map[name] = file
                total += math.prod(spec_.shape) * np.dtype(spec_.dtype).itemsize
        (out / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    dtype = str(np.dtype(_get(params, "token_embed/embedding").dtype))
    hf_config = {**(extra_config or {}), **fam.config_to_hf(cfg), "dtype": dtype, "torch_dtype": dtype}
    (out / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return out
