"""Mixtral (MixtralForCausalLM): Mistral's attention (GQA, no biases, one optional sliding window on every layer)
with a mixture of 8 SwiGLU experts, 2 per token, in every layer (Jiang et al. 2024, "Mixtral of Experts",
arXiv:2401.04088 §2). Also what the other transformers MoE families (qwen2_moe, qwen3_moe, olmoe) share with it:
the per-expert weight rules, the expert-count checks and the router fields.

Router (transformers models/mixtral/modeling_mixtral.py, MixtralTopKRouter): softmax over every expert in float32,
the top k probabilities, divided by their sum: the zoo's softmax_topk with router_renormalize, which is the
softmax over the k best logits (topk_softmax, mistralai/mistral-src's MoeLayer) up to rounding. The Qwen-MoE and
OLMoE routers are the same with the division switched by norm_topk_prob.

Weights as save_pretrained writes them by default (and the hub files hold them): one Linear per expert,
`experts.{e}.{w1,w3,w2}` (gate, up, down; Qwen-MoE and OLMoE: gate_proj, up_proj, down_proj), and the router
`gate` [E, d]; `save` writes this layout. transformers 5 fuses them into `experts.gate_up_proj` [E, 2f, d] and
`experts.down_proj` [E, d, f] when it loads them, and save_pretrained(save_original_format=False) writes those;
`load` reads either. The zoo stacks them into its [E, d, f] / [E, f, d] kernels.

Training-only fields: router_aux_loss_coef is load_balancing_multiplier (HF adds that loss only when
output_router_logits is on, a per-call switch the zoo ignores); router_jitter_noise is router_jitter (HF scales
the experts' input by the noise too, the zoo only the router's). Neither changes inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from zoo.config import ModelConfig
from zoo.hf import llama, mistral
from zoo.hf.core import TRANSPOSE, Family, HFConfig, Rule, attention_rules, only_with_mlp, rule

# What every transformers MoE family here fixes: a bias-free router, dropless routing (every token reaches its
# k experts: HF drops nothing), softmax over all experts before the top k.
MOE_FIXED = {"router": "softmax_topk", "router_bias": False, "capacity_factor": None, "eval_capacity_factor": None}


# ============================================================================================ weights
def per_expert(num_experts: int):
    """E Linears [out, in] <-> one stacked kernel [E, in, out]."""

    def to_zoo(*weights):
        return (np.stack([w.T for w in weights]),)

    def to_hf(kernel):
        return tuple(kernel[e].T for e in range(num_experts))

    return to_zoo, to_hf


def expert_rules(cfg: ModelConfig, prefix: str, names: dict[str, str], fused: bool = False) -> list[Rule]:
    """The router `{prefix}.gate.weight` [E, d] and the experts <-> the MoeMlp `moe`, in the blocks whose
    moe_pattern entry is moe. The experts per expert, `{prefix}.experts.{e}.{name}.weight` (`names`: zoo kernel
    wi_0 / wi_1 / wo -> HF Linear), or `fused`, `{prefix}.experts.gate_up_proj` (gate rows, then up rows) and
    `{prefix}.experts.down_proj`."""
    num_experts = cfg.num_experts
    rules = [rule(f"{prefix}.gate.weight", "moe/router/kernel", TRANSPOSE)]
    if fused:
        rules.append(rule(f"{prefix}.experts.gate_up_proj", ["moe/wi_0/kernel", "moe/wi_1/kernel"], _GATE_UP))
        rules.append(rule(f"{prefix}.experts.down_proj", "moe/wo/kernel", _SWAP))
    else:
        for zoo, hf in names.items():
            experts = [f"{prefix}.experts.{e}.{hf}.weight" for e in range(num_experts)]
            rules.append(rule(experts, f"moe/{zoo}/kernel", per_expert(num_experts)))
    return only_with_mlp(rules, "moe")


def _gate_up_to_zoo(w):
    f = w.shape[1] // 2
    return w[:, :f].transpose(0, 2, 1), w[:, f:].transpose(0, 2, 1)


def _gate_up_to_hf(gate, up):
    xp = np if isinstance(gate, np.ndarray) else jnp  # numpy when writing, jnp under eval_shape
    return (xp.concatenate([gate, up], axis=-1).transpose(0, 2, 1),)


_GATE_UP = (_gate_up_to_zoo, _gate_up_to_hf)  # [E, 2f, d] <-> two [E, d, f]
_SWAP = (lambda w: (w.transpose(0, 2, 1),), lambda k: (k.transpose(0, 2, 1),))  # [E, d, f] <-> [E, f, d]


def moe_family(norms: dict[str, str], layer_rules, projections: Callable[[ModelConfig, bool], list[Rule]], **fields):
    """llama_like_family whose projections(cfg, fused) are a layer's attention and MLP tensors, per expert or
    fused: it writes the per-expert layout and reads whichever a checkpoint holds."""

    def layout(fused: bool) -> Family:
        return llama.llama_like_family(norms, layer_rules, projections=lambda c: projections(c, fused), **fields)

    per_expert_layout, fused_layout = layout(False), layout(True)

    def read_weights(cfg: ModelConfig, has: Callable[[str], bool]):
        first = cfg.mlp_kinds().index("moe")  # HF layer index of the first MoE layer
        fused = has(f"{llama.LAYER.format(i=first)}.mlp.experts.gate_up_proj")
        return (fused_layout if fused else per_expert_layout).weights(cfg)

    return dataclasses.replace(per_expert_layout, read_weights=read_weights)


# ============================================================================================ configs
def experts_to_zoo(hf: HFConfig, field: str, experts: int, per_token: int | None) -> dict:
    """Checks HF `field` (the expert count, default `experts`) and num_experts_per_tok (default `per_token`; None:
    required), so that a bad value is named by its HF field rather than by the ModelConfig field it becomes."""
    num = hf.get(field, experts)
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        hf.fail(field, "needs at least one expert (0 is a dense model: load it as its dense family)")
    k = hf.get("num_experts_per_tok", per_token)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= num:
        hf.fail("num_experts_per_tok", f"must be in 1..{field}={num}")
    return {"num_experts": num, "experts_per_token": k}


def with_default_theta(hf: HFConfig, theta: float) -> HFConfig:
    """`hf` with rope_theta set to the class's default_theta when the config gives none (MixtralConfig: 1e6)."""
    params = hf.get("rope_parameters") or {}
    if params.get("rope_theta") is not None or hf.get("rope_theta") is not None:
        return hf
    values = {**hf.values, "rope_theta": theta}
    if params:
        values["rope_parameters"] = {**params, "rope_theta": theta}
    return HFConfig(values, hf.model_type)


def _to_zoo(hf: HFConfig) -> dict:
    return {
        **llama.to_zoo(with_default_theta(hf, 1e6)),
        **mistral.window_to_zoo(hf, None),
        **experts_to_zoo(hf, "num_local_experts", 8, 2),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    # One width for every MLP: intermediate_size is the experts' (a zoo d_ff that differs from d_expert is unused
    # here, and comes back equal to it: family_of names the field).
    return {**llama.to_hf(cfg), **mistral.window_to_hf(cfg), "intermediate_size": cfg.d_expert}


def _projections(cfg: ModelConfig, fused: bool) -> list[Rule]:
    # transformers 5 names the fused module `mlp`, the per-expert checkpoints `block_sparse_moe`.
    moe = f"{llama.LAYER}.{'mlp' if fused else 'block_sparse_moe'}"
    names = {"wi_0": "w1", "wi_1": "w3", "wo": "w2"}
    return attention_rules(cfg, f"{llama.LAYER}.self_attn", "attention") + expert_rules(cfg, moe, names, fused)


FAMILY: Family = moe_family(
    llama.PRE_NORMS,
    lambda cfg: [],
    _projections,
    model_type="mixtral",
    hf_class="MixtralForCausalLM",
    # HF MixtralConfig's defaults (Mixtral-8x7B's shapes; its context, 131072, is not the released file's 32768).
    renames={
        **mistral.RENAMES,
        "intermediate_size": ("d_ff", 14336),
        "num_key_value_heads": ("num_kv_heads", 8),
        "max_position_embeddings": ("max_seq_len", 131072),
        "rms_norm_eps": ("norm_eps", 1e-5),
        "num_local_experts": ("num_experts", 8),
        "num_experts_per_tok": ("experts_per_token", 2),
        "router_aux_loss_coef": ("load_balancing_multiplier", 0.001),
        "router_jitter_noise": ("router_jitter", 0.0),
    },
    fixed={
        **mistral.FIXED,
        "attention_bias": False,
        **MOE_FIXED,
        "router_renormalize": True,
        "moe_pattern": ("moe",),
        "shared_expert_d_ff": 0,
    },
    unsupported={},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
)
