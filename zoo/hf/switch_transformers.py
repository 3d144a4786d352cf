"""Switch Transformer (SwitchTransformersForConditionalGeneration: google/switch-base-8 ... switch-c-2048; Fedus et al.
2021, "Switch Transformers", arXiv:2101.03961): T5 v1.0 (pre-RMSNorm, unscaled attention, one relative-position bias
table per stack, ReLU MLP without biases, head tied to the embedding with its input rescaled by d_model**-0.5) whose
MLP is, in some layers, E ReLU experts with a top-1 router (transformers models/switch_transformers/
modeling_switch_transformers.py).

Which layers have experts (SwitchTransformersStack): with step = num_layers // num_sparse_encoder_layers (decoder:
num_decoder_layers // num_sparse_decoder_layers; step = num_layers when the count is 0), layer i does when
step == 1 or i % step == 1: switch-base/large, 6 of 12 and 12 of 24, are (dense, moe) cycled; switch-c, every
layer. The layer list becomes moe_pattern, its shortest repeating period; the zoo has one pattern for both stacks,
so an encoder and a decoder whose lists differ are refused.

Router (SwitchTransformersTop1Router): Linear(d, E) (bias with router_bias) in float32, softmax over every expert,
argmax, the chosen expert's output scaled by its probability: softmax_topk with experts_per_token 1, not
renormalised. router_jitter_noise is router_jitter (training only: HF scales the router's input, in place, which in
float32 training also scales the experts' input; the zoo scales the router's only); router_z_loss_coef and
router_aux_loss_coef are the two loss multipliers (HF adds them only with output_router_logits).

Capacity: HF applies a fixed `expert_capacity` (tokens per expert per sequence, 64 in the released configs) in
training and at inference alike: in each sequence the tokens after an expert's first expert_capacity, in position
order, are dropped, and a dropped token's MLP output is zero (the residual carries it on), as a zoo capacity drop.
The zoo's capacity is a factor, ceil(T k / E * factor), not a count, so the import is dropless (capacity_factor and
eval_capacity_factor null) and `save` writes expert_capacity = max_seq_len, which never binds on sequences up to
max_seq_len. Parity with a loaded checkpoint therefore holds while no expert receives more than its
expert_capacity tokens of one sequence (short sequences, or a large expert_capacity); past that HF drops tokens
the zoo keeps.
"""

from __future__ import annotations

import numpy as np

from zoo.config import ModelConfig
from zoo.hf import mixtral, t5
from zoo.hf.core import (
    SAME,
    TRANSPOSE,
    Family,
    HFConfig,
    Weights,
    activation,
    attention_rules,
    embedding_rules,
    hf_activation,
    mlp_rules,
    norm_rules,
    only_with_mlp,
    rule,
)

_FIELDS = {
    "encoder": ("num_layers", "num_sparse_encoder_layers"),
    "decoder": ("num_decoder_layers", "num_sparse_decoder_layers"),
}


# ============================================================================================ configs
def hf_kinds(layers: int, sparse: int) -> list[str]:
    """SwitchTransformersStack's placement: the MLP kind of each of `layers` layers given num_sparse_*_layers."""
    step = layers // sparse if sparse > 0 else layers
    return ["moe" if step > 0 and (step == 1 or i % step == 1) else "dense" for i in range(layers)]


def _period(kinds: list[str]) -> tuple[str, ...]:
    n = len(kinds)
    return tuple(
        kinds[: next(p for p in range(1, n + 1) if n % p == 0 and all(k == kinds[i % p] for i, k in enumerate(kinds)))]
    )


def _sparse_to_zoo(hf: HFConfig) -> dict:
    encoder = hf.get("num_layers", 12)
    decoder = hf.get("num_decoder_layers", 12)
    decoder = encoder if decoder is None else decoder
    patterns = {}
    for stack, layers in (("encoder", encoder), ("decoder", decoder)):
        field = _FIELDS[stack][1]
        sparse = hf.get(field, 3)
        if not isinstance(sparse, int) or isinstance(sparse, bool) or sparse < 0:
            hf.fail(field, "must be an integer >= 0")
        kinds = hf_kinds(layers, sparse)
        if "moe" not in kinds:
            hf.fail(field, "leaves no layer with experts: a dense model (load it as t5)")
        patterns[stack] = _period(kinds)
    if patterns["encoder"] != patterns["decoder"]:
        hf.fail(
            "num_sparse_decoder_layers",
            f"puts experts in decoder layers {patterns['decoder']} cycled, the encoder's in {patterns['encoder']} "
            "cycled: the zoo has one moe_pattern for both stacks",
        )
    return {"moe_pattern": patterns["encoder"]}


def _sparse_to_hf(cfg: ModelConfig) -> dict:
    out = {}
    for stack in ("encoder", "decoder"):
        layers_field, field = _FIELDS[stack]
        layers = getattr(cfg, layers_field)
        want = list(cfg.mlp_kinds(layers))
        counts = [s for s in range(1, layers + 1) if hf_kinds(layers, s) == want]
        if not counts:
            raise ValueError(
                f"ModelConfig.moe_pattern={cfg.moe_pattern!r} cannot be expressed as HF switch_transformers: its "
                f"{stack} layer i has experts when i % ({layers_field} // {field}) == 1, or every layer"
            )
        # Several counts give one placement (12 layers: 5 and 6 both make step 2): the number of sparse layers.
        out[field] = want.count("moe") if want.count("moe") in counts else counts[0]
    return out


def _to_zoo(hf: HFConfig) -> dict:
    tied = hf.get("tie_word_embeddings", True) is not False
    return {
        # dense_act_fn is one ACT2FN name: SwitchTransformersDenseActDense has no gated form.
        "mlp_activations": (activation(hf, "dense_act_fn", "relu"),),
        "tie_word_embeddings": tied,
        "scale_logits_by_inv_sqrt_d_model": tied,  # ForConditionalGeneration rescales exactly when tied
        "d_expert": hf.get("d_ff", 2048),  # one width: the dense MLPs' and each expert's
        **_sparse_to_zoo(hf),
        **t5.dropout_to_zoo(hf),
    }


def _to_hf(cfg: ModelConfig) -> dict:
    t5.check_rescale_when_tied(cfg, "switch_transformers")
    if cfg.d_expert != cfg.d_ff:
        raise ValueError(
            f"ModelConfig.d_expert={cfg.d_expert} cannot be expressed as HF switch_transformers: its experts and "
            f"dense MLPs share one width, d_ff={cfg.d_ff}"
        )
    if cfg.is_gated:
        raise ValueError(
            f"ModelConfig.mlp_activations={cfg.mlp_activations!r} cannot be expressed as HF switch_transformers: "
            "its MLPs are ungated (wi, wo)"
        )
    return {
        "dense_act_fn": hf_activation(cfg.mlp_activations[0], "gelu_new"),
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "dropout_rate": cfg.residual_dropout,
        "is_encoder_decoder": True,
        # A count that never binds on sequences up to max_seq_len: HF then runs dropless, as the zoo does.
        "expert_capacity": cfg.max_seq_len,
        **_sparse_to_hf(cfg),
    }


# ============================================================================================ weights
def _ff_rules(cfg: ModelConfig, prefix: str) -> list:
    """The MLP at `prefix` (HF `....layer.{ff}.mlp`): dense in the dense blocks, router + experts in the others."""
    dense = only_with_mlp(mlp_rules(cfg, prefix, {"wi": "wi", "wo": "wo"}), "dense")
    sparse = [rule(f"{prefix}.router.classifier.weight", "moe/router/kernel", TRANSPOSE)]
    if cfg.router_bias:
        sparse.append(rule(f"{prefix}.router.classifier.bias", "moe/router/bias", SAME))
    for name in ("wi", "wo"):
        experts = [f"{prefix}.experts.expert_{e}.{name}.weight" for e in range(cfg.num_experts)]
        sparse.append(rule(experts, f"moe/{name}/kernel", mixtral.per_expert(cfg.num_experts)))
    return dense + only_with_mlp(sparse, "moe")


def _one_input_embedding(shared, encoder, decoder):
    if not np.array_equal(encoder, decoder):
        raise ValueError(
            "HF switch_transformers checkpoint with tie_word_embeddings=false and different encoder.embed_tokens and "
            "decoder.embed_tokens: the zoo has one input embedding for both stacks"
        )
    return (encoder,)


def _untied_embedding_rules() -> list:
    """Untied, transformers 5 gives each stack its own input embedding (encoder.embed_tokens, decoder.embed_tokens;
    shared.weight is then read by neither): they must be equal, and are written as three copies of the zoo's one."""
    embeddings = ["shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]
    return [
        rule(embeddings, "token_embed/embedding", (_one_input_embedding, lambda e: (e, e, e))),
        rule("lm_head.weight", "lm_head/kernel", TRANSPOSE),
    ]


def _weights(cfg: ModelConfig) -> Weights:
    names = ("q", "k", "v", "o")
    stacks = []
    for stack, n in (("encoder", cfg.num_layers), ("decoder", cfg.num_decoder_layers)):
        p = f"{stack}.block.{{i}}.layer"
        rules = attention_rules(cfg, f"{p}.0.SelfAttention", "attention", names)
        rules += norm_rules(f"{p}.0.layer_norm", "attn_norm", cfg)
        ff = 1
        if stack == "decoder":
            rules += attention_rules(cfg, f"{p}.1.EncDecAttention", "cross_attention", names)
            rules += norm_rules(f"{p}.1.layer_norm", "cross_norm", cfg)
            ff = 2
        rules += _ff_rules(cfg, f"{p}.{ff}.mlp")
        rules += norm_rules(f"{p}.{ff}.layer_norm", "mlp_norm", cfg)
        stacks.append((stack, n, rules))
    top = embedding_rules(cfg, "shared.weight") if cfg.tie_word_embeddings else _untied_embedding_rules()
    for stack in ("encoder", "decoder"):
        bias = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        top.append(rule(bias, f"{stack}/relative_bias", SAME))  # HF: in the first layer; the zoo: on the stack
        top += norm_rules(f"{stack}.final_layer_norm", f"{stack}/final_norm", cfg)
    return Weights(top, stacks)


FAMILY = Family(
    model_type="switch_transformers",
    hf_class="SwitchTransformersForConditionalGeneration",
    # HF SwitchTransformersConfig's defaults (switch-base-8's shapes but d_ff, 3072 in the checkpoints, and
    # num_sparse_*_layers, 6 in them).
    renames={
        "vocab_size": ("vocab_size", 32128),
        "d_model": ("d_model", 768),
        "d_kv": ("head_dim", 64),
        "d_ff": ("d_ff", 2048),
        "num_layers": ("num_layers", 12),
        "num_decoder_layers": ("num_decoder_layers", 12),
        "num_heads": ("num_heads", 12),
        "relative_attention_num_buckets": ("relative_num_buckets", 32),
        "relative_attention_max_distance": ("relative_max_distance", 128),
        "layer_norm_epsilon": ("norm_eps", 1e-6),
        "n_positions": ("max_seq_len", 512),  # not a SwitchTransformersConfig field: kept for the round trip
        "num_experts": ("num_experts", 8),
        "router_bias": ("router_bias", False),
        "router_jitter_noise": ("router_jitter", 0.01),
        "router_z_loss_coef": ("router_z_loss_multiplier", 0.001),
        "router_aux_loss_coef": ("load_balancing_multiplier", 0.001),
    },
    fixed={
        **t5.FAMILY.fixed,
        "experts_per_token": 1,
        "router": "softmax_topk",
        "router_renormalize": False,
        "capacity_factor": None,  # dropless: see the module docstring on expert_capacity
        "eval_capacity_factor": None,
        "shared_expert_d_ff": 0,
        "mlp_bias": False,
    },
    unsupported={"router_dtype": ("float32",)},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
    weights=_weights,
    embedding="shared.weight",
    presets="switch",
    # Tied copies of shared.weight, and a cross-attention bias table HF never reads.
    ignored=(
        r"^(encoder|decoder)\.embed_tokens\.weight$",
        r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$",
    ),
)
