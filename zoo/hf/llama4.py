"""Llama 4, text (Llama4ForCausalLM, model_type llama4_text: Scout 17B-16E, Maverick 17B-128E; Meta's
meta-llama/llama-models models/llama4/{model.py,moe.py}): LLaMA's pre-RMSNorm blocks with interleaved RoPE and

- attention (transformers models/llama4/modeling_llama4.py, Llama4TextAttention): RoPE on the layers no_rope_layers
  marks 1, none on the others (every fourth by default); layer_types chunked_attention (a query sees the keys of
  its own attention_chunk_size chunk: masking_utils.chunked_overlay) or full_attention, by default chunked exactly
  on the RoPE layers; with use_qk_norm a gainless RMS norm (Llama4TextL2Norm) on queries and keys of the RoPE
  layers only; with attn_temperature_tuning, the NoPE layers' queries times 1 + attn_scale ln(1 + floor((p + 1) /
  floor_scale)). The zoo's chunked / global_nope kinds, qk_norm per_head_no_gain with qk_norm_nope_layers false,
  and attention_temperature_floor / _scale.
- mixture of experts (Llama4TextMoe, Llama4Router) on the layers moe_layers lists (by default every
  interleave_moe_layer_step-th, the last of each step), a dense SwiGLU of width intermediate_size_mlp on the others:
  the top k router logits, each weight their sigmoid (the zoo's sigmoid_topk, the same choice), scaling the expert's
  input, not its output (router_weights_input); a shared SwiGLU expert of the experts' width intermediate_size
  beside them. Experts stored fused: `experts.gate_up_proj` [E, d, 2f] (gate columns, then up) and
  `experts.down_proj` [E, f, d].
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.hf import llama, mixtral, qwen2_moe
from zoo.hf.core import SAME, TRANSPOSE, HFConfig, Rule, attention_rules, mlp_rules, only_with_mlp, rule

FEED_FORWARD = f"{llama.LAYER}.feed_forward"
_SWIGLU_NAMES = {"wi_0": "gate_proj", "wi_1": "up_proj", "wo": "down_proj"}
_KINDS = {(True, "chunked_attention"): "chunked", (True, "full_attention"): "global"}
_KINDS |= {(False, "chunked_attention"): "chunked_nope", (False, "full_attention"): "global_nope"}


# ============================================================================================ configs
def _int_list(hf: HFConfig, field: str, allowed: range, length: int | None = None) -> list[int] | None:
    """HF `field`, a list of integers in `allowed` (at least `length` of them), or None when absent."""
    value = hf.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        hf.fail(field, "must be a list of integers")
    if any(i not in allowed for i in value) or (length is not None and 0 < len(value) < length):
        hf.fail(field, f"needs {length or 'its'} entries in {allowed.start}..{allowed.stop - 1}")
    return value


def _attention_to_zoo(hf: HFConfig) -> dict:
    n = hf.get("num_hidden_layers", 48)
    interval = hf.get("no_rope_layer_interval", 4)
    default = [int((i + 1) % interval != 0) for i in range(n)]
    rope = _int_list(hf, "no_rope_layers", range(2), n) or default  # empty: the default, as Llama4TextConfig reads it
    chunk = hf.get("attention_chunk_size", 8192)
    types = hf.get("layer_types") or [
        "chunked_attention" if r and chunk is not None else "full_attention" for r in rope[:n]
    ]
    if len(types) != n or any(t not in ("chunked_attention", "full_attention") for t in types):
        hf.fail("layer_types", f"needs {n} entries from chunked_attention, full_attention")
    kinds = [_KINDS[(bool(rope[i]), types[i])] for i in range(n)]
    period = next(p for p in range(1, n + 1) if n % p == 0 and all(k == kinds[i % p] for i, k in enumerate(kinds)))
    out: dict = {"attention_pattern": tuple(kinds[:period])}
    if any(k.startswith("chunked") for k in kinds):
        if chunk is None:
            hf.fail("attention_chunk_size", "is null but layer_types has chunked_attention layers")
        out["attention_chunk_size"] = chunk
    nope = any(k.endswith("_nope") for k in kinds)
    if hf.get("use_qk_norm", True):
        out["qk_norm"] = "per_head_no_gain"
        if nope:
            out["qk_norm_nope_layers"] = False
    if nope and hf.get("attn_temperature_tuning", True):
        out["attention_temperature_floor"] = hf.get("floor_scale", 8192)
        out["attention_temperature_scale"] = float(hf.get("attn_scale", 0.1))
    return out


def _to_zoo(hf: HFConfig) -> dict:
    n = hf.get("num_hidden_layers", 48)
    experts = mixtral.experts_to_zoo(hf, "num_local_experts", 16, 1)
    step = hf.get("interleave_moe_layer_step", 1)
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        hf.fail("interleave_moe_layer_step", "must be a positive integer")
    listed = _int_list(hf, "moe_layers", range(n))
    moe = set(range(step - 1, n, step) if listed is None else listed)
    if not moe:
        hf.fail("moe_layers", "lists no layer: a dense model")
    return {
        **llama.to_zoo(mixtral.with_default_theta(hf, 500000.0)),
        **_attention_to_zoo(hf),
        **experts,
        **qwen2_moe.dense_prefix_and_pattern(["moe" if i in moe else "dense" for i in range(n)]),
        "shared_expert_d_ff": hf.get("intermediate_size", 8192),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    kinds = cfg.layer_kinds()
    tuning = cfg.attention_temperature_floor > 0
    return {
        **llama.to_hf(cfg),
        "no_rope_layers": [int(not k.endswith("_nope")) for k in kinds],
        "layer_types": ["chunked_attention" if k.startswith("chunked") else "full_attention" for k in kinds],
        "attention_chunk_size": cfg.attention_chunk_size,
        "use_qk_norm": cfg.qk_norm != "none",
        "attn_temperature_tuning": tuning,
        "floor_scale": cfg.attention_temperature_floor if tuning else 8192,
        "attn_scale": cfg.attention_temperature_scale,
        "moe_layers": [i for i, kind in enumerate(cfg.mlp_kinds()) if kind == "moe"],
    }


# ============================================================================================ weights
def _gate_up_to_zoo(w):
    f = w.shape[-1] // 2
    return w[..., :f], w[..., f:]


def _gate_up_to_hf(gate, up):
    xp = np if isinstance(gate, np.ndarray) else jnp  # numpy when writing, jnp under eval_shape
    return (xp.concatenate([gate, up], axis=-1),)


_GATE_UP = (_gate_up_to_zoo, _gate_up_to_hf)  # [E, d, 2f] <-> two [E, d, f]


def _projections(cfg: ModelConfig) -> list[Rule]:
    experts = [
        rule(f"{FEED_FORWARD}.router.weight", "moe/router/kernel", TRANSPOSE),
        rule(f"{FEED_FORWARD}.experts.gate_up_proj", ["moe/wi_0/kernel", "moe/wi_1/kernel"], _GATE_UP),
        rule(f"{FEED_FORWARD}.experts.down_proj", "moe/wo/kernel", SAME),
        *(
            rule(f"{FEED_FORWARD}.shared_expert.{hf}.weight", f"moe/shared/{zoo}/kernel", TRANSPOSE)
            for zoo, hf in _SWIGLU_NAMES.items()
        ),
    ]
    return (
        attention_rules(cfg, f"{llama.LAYER}.self_attn", "attention")
        + only_with_mlp(mlp_rules(cfg, FEED_FORWARD, _SWIGLU_NAMES), "dense")
        + only_with_mlp(experts, "moe")
    )


# HF Llama4TextConfig's defaults (= Scout's text shapes but its context, 131072).
FAMILY = llama.llama_like_family(
    llama.PRE_NORMS,
    projections=_projections,
    model_type="llama4_text",
    hf_class="Llama4ForCausalLM",
    presets="llama4",
    renames={
        **llama.LLAMA_LIKE_RENAMES,
        "vocab_size": ("vocab_size", 202048),
        "hidden_size": ("d_model", 5120),
        "intermediate_size": ("d_expert", 8192),
        "intermediate_size_mlp": ("d_ff", 16384),
        "num_hidden_layers": ("num_layers", 48),
        "num_attention_heads": ("num_heads", 40),
        "num_key_value_heads": ("num_kv_heads", 8),
        "head_dim": ("head_dim", 128),
        "max_position_embeddings": ("max_seq_len", 131072),
        "rms_norm_eps": ("norm_eps", 1e-5),
        "num_local_experts": ("num_experts", 16),
        "num_experts_per_tok": ("experts_per_token", 1),
        "router_aux_loss_coef": ("load_balancing_multiplier", 0.001),
        "router_jitter_noise": ("router_jitter", 0.0),
    },
    fixed={
        **{k: v for k, v in llama.ROPE_DECODER.items() if k not in ("attention_pattern", "qk_norm")},
        **mixtral.MOE_FIXED,
        "router": "sigmoid_topk",
        "router_renormalize": False,
        "router_weights_input": True,
        "rope_interleaved": True,
        "shared_expert_gate": False,
    },
    unsupported={},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
