"""gpt-oss (GptOssForCausalLM: gpt-oss-20b, gpt-oss-120b; OpenAI 2025, openai/gpt-oss gpt_oss/torch/model.py and
transformers models/gpt_oss/modeling_gpt_oss.py): a pre-norm RMSNorm decoder whose layers alternate a 128-token
sliding window (even layers) with full attention, q/k/v/o with biases, a learned sink logit per head in every
softmax (attention_sinks), YaRN RoPE, and in every layer a mixture of experts with a biased router (top k of the
logits, softmax over those k) and biased experts whose GLU is clamped: (clip(up, -7, 7) + 1) * quick_gelu(min(gate,
7)) (mlp_glu_limit, mlp_glu_linear_offset 1, quick_gelu = x sigmoid(1.702 x)).

Tensors: the experts are stored fused, gate_up_proj [E, d, 2f] with gate and up in alternate columns (gate
x[..., ::2], up x[..., 1::2]) and down_proj [E, f, d], each with a bias; the router is `mlp.router` (weight, bias);
the sinks `self_attn.sinks` [heads].
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.hf import llama, mixtral
from zoo.hf.core import SAME, TRANSPOSE, HFConfig, Rule, attention_rules, layer_types_to_hf, layer_types_to_zoo, rule

_LAYER_TYPES = {"sliding_attention": "local", "full_attention": "global"}
# GptOssConfig's RoPE when a config.json gives none (models/gpt_oss/configuration_gpt_oss.py, __post_init__ and
# its default_theta): YaRN x32 over 4096, transformers' truncate off.
DEFAULT_ROPE = {
    "rope_type": "yarn",
    "rope_theta": 150000.0,
    "factor": 32.0,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
    "original_max_position_embeddings": 4096,
}


def _to_zoo(hf: HFConfig) -> dict:
    if not hf.get("rope_parameters") and not hf.get("rope_scaling"):
        rope = {**DEFAULT_ROPE, "rope_theta": hf.get("rope_theta", DEFAULT_ROPE["rope_theta"])}
        hf = HFConfig({**hf.values, "rope_parameters": rope}, hf.model_type)
    return {
        **llama.rope_to_zoo(hf),
        **layer_types_to_zoo(hf, _LAYER_TYPES, lambda i: i % 2 == 0, 36, window=128),
        **mixtral.experts_to_zoo(hf, "num_local_experts", 128, 4),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    return {
        **llama.rope_to_hf(cfg),
        **layer_types_to_hf(cfg, _LAYER_TYPES, "HF gpt_oss (sliding or full layers)"),
        "intermediate_size": cfg.d_expert,  # one width, the experts' (as Mixtral)
    }


def _interleave(gate, up):
    """Two [..., f] -> [..., 2f] with gate in the even columns, up in the odd ones."""
    xp = np if isinstance(gate, np.ndarray) else jnp  # numpy when writing, jnp under eval_shape
    return (xp.stack([gate, up], axis=-1).reshape(*gate.shape[:-1], 2 * gate.shape[-1]),)


_GATE_UP = (lambda w: (w[..., ::2], w[..., 1::2]), _interleave)  # [E, d, 2f] <-> two [E, d, f]; biases [E, 2f] too


def _projections(cfg: ModelConfig, fused: bool) -> list[Rule]:
    del fused  # gpt-oss checkpoints are fused only
    attention = f"{llama.LAYER}.self_attn"
    moe = f"{llama.LAYER}.mlp"
    rules = attention_rules(cfg, attention, "attention") + [
        rule(f"{attention}.sinks", "attention/sinks", SAME),
        rule(f"{moe}.router.weight", "moe/router/kernel", TRANSPOSE),
        rule(f"{moe}.router.bias", "moe/router/bias", SAME),
        rule(f"{moe}.experts.gate_up_proj", ["moe/wi_0/kernel", "moe/wi_1/kernel"], _GATE_UP),
        rule(f"{moe}.experts.gate_up_proj_bias", ["moe/wi_0/bias", "moe/wi_1/bias"], _GATE_UP),
        rule(f"{moe}.experts.down_proj", "moe/wo/kernel", SAME),
        rule(f"{moe}.experts.down_proj_bias", "moe/wo/bias", SAME),
    ]
    return rules


FAMILY = mixtral.moe_family(
    llama.PRE_NORMS,
    lambda cfg: [],
    _projections,
    model_type="gpt_oss",
    hf_class="GptOssForCausalLM",
    # HF GptOssConfig's defaults (gpt-oss-120b's shapes).
    renames={
        **llama.LLAMA_LIKE_RENAMES,
        "vocab_size": ("vocab_size", 201088),
        "hidden_size": ("d_model", 2880),
        "intermediate_size": ("d_ff", 2880),
        "num_hidden_layers": ("num_layers", 36),
        "num_attention_heads": ("num_heads", 64),
        "num_key_value_heads": ("num_kv_heads", 8),
        "head_dim": ("head_dim", 64),
        "max_position_embeddings": ("max_seq_len", 131072),
        "rms_norm_eps": ("norm_eps", 1e-5),
        "attention_bias": ("attention_bias", True),
        "num_local_experts": ("num_experts", 128),
        "num_experts_per_tok": ("experts_per_token", 4),
        "router_aux_loss_coef": ("load_balancing_multiplier", 0.001),
        "swiglu_limit": ("mlp_glu_limit", 7.0),
    },
    fixed={
        **{k: v for k, v in llama.ROPE_DECODER.items() if k != "attention_pattern"},
        **mixtral.MOE_FIXED,
        "router": "topk_softmax",
        "router_bias": True,
        "mlp_bias": True,
        "mlp_activations": ("quick_gelu", "linear"),
        "mlp_glu_linear_offset": 1.0,
        "attention_sinks": True,
        "moe_pattern": ("moe",),
        "shared_expert_d_ff": 0,
    },
    # The gate's activation is x sigmoid(alpha x); the zoo's quick_gelu is alpha = 1.702, gpt-oss's.
    unsupported={"swiglu_alpha": (1.702,)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
