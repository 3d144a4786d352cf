"""What a valid ModelConfig is: the allowed values of its string and tuple knobs, its checks, and what its
derived fields (null = follow another field) become.

``zoo.config.ModelConfig.__post_init__`` calls ``validate`` and ``derivations``. This module sits below
zoo.config and never imports it: the functions take the config untyped (anything with ModelConfig's fields).
"""

from __future__ import annotations

from zoo import applicability
from zoo.fields import fail

# Allowed values of the string-valued knobs. One table, so errors and docs list the same thing.
CHOICES: dict[str, tuple[str, ...]] = {
    "architecture": ("decoder_only", "encoder_decoder"),
    "norm_position": ("pre", "post", "double", "output"),
    "norm_type": ("layernorm", "rmsnorm"),
    "position_embedding": ("sinusoidal", "learned", "rope", "relative_bias", "alibi", "transformer_xl", "none"),
    "rope_scaling": ("none", "linear", "llama3", "yarn"),
    "qk_norm": ("none", "per_head", "per_head_untied", "full", "per_head_no_gain"),
    "init_scheme": ("normal", "truncated_normal", "gpt2_scaled", "xavier", "t5", "fan_in"),
    "remat_policy": ("none", "full", "save_dots", "save_block_outputs"),
    "attention_impl": ("auto", "flash", "xla", "cudnn"),
    "moe_matmul": ("auto", "ragged_dot", "blocks"),
    "router": ("softmax_topk", "topk_softmax", "sigmoid_topk"),
    "dtype": ("float32", "bfloat16", "float16"),
    "param_dtype": ("float32", "bfloat16"),
}
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "quick_gelu", "squared_relu", "linear")
LAYER_KINDS = ("global", "local", "chunked", "global_nope", "local_nope", "chunked_nope")
MLP_KINDS = ("moe", "dense")


def derivations(c) -> dict:
    """What each derived field is when left null."""
    return {
        "num_kv_heads": c.num_heads,
        "head_dim": c.d_model // c.num_heads,
        "num_decoder_layers": c.num_layers,
        "attention_out_bias": c.attention_bias,
        "embedding_dim": c.d_model,
        "d_expert": c.d_ff,
        "value_head_dim": c.head_dim or c.d_model // c.num_heads,
    }


def validate(c) -> None:
    """Refuse a config that breaks a rule, naming the field and what it accepts (ModelConfig.__post_init__)."""
    for name, allowed in CHOICES.items():
        if getattr(c, name) not in allowed:
            fail(c, name, f"got {getattr(c, name)!r}; allowed: {', '.join(allowed)}")
    for name in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_seq_len"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            fail(c, name, f"must be a positive integer, got {value!r}")
    if c.attention_out_bias is not None and not isinstance(c.attention_out_bias, bool):
        fail(c, "attention_out_bias", f"must be true, false or null (= attention_bias), got {c.attention_out_bias!r}")
    for name in ("kv_latent_dim", "q_latent_dim", "rope_head_dim"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            fail(c, name, f"must be an integer >= 0 (0 = off), got {value!r}")
    for name in (
        "num_kv_heads",
        "head_dim",
        "num_decoder_layers",
        "sliding_window_size",
        "attention_chunk_size",
        "embedding_dim",
        "value_head_dim",
    ):
        value = getattr(c, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            fail(c, name, f"must be a positive integer or null, got {value!r}")

    if c.head_dim is None and c.d_model % c.num_heads:
        fail(
            c,
            "num_heads",
            f"d_model={c.d_model} is not divisible by num_heads={c.num_heads}; "
            "pick a divisor or set head_dim explicitly",
        )
    kv = c.num_heads if c.num_kv_heads is None else c.num_kv_heads
    if c.num_heads % kv:
        fail(
            c,
            "num_kv_heads",
            f"{kv} does not divide num_heads={c.num_heads}; "
            "each key/value head must serve a whole group of query heads",
        )
    head_dim = c.head_dim or c.d_model // c.num_heads

    acts = tuple(c.mlp_activations)
    if len(acts) not in (1, 2) or any(a not in ACTIVATIONS for a in acts):
        fail(c, "mlp_activations", f"got {acts!r}; one or two of: {', '.join(ACTIVATIONS)}")
    if not c.attention_pattern:
        fail(c, "attention_pattern", "must name at least one layer kind")
    for kind in c.attention_pattern:
        if kind not in LAYER_KINDS:
            fail(c, "attention_pattern", f"got {kind!r}; allowed: {', '.join(LAYER_KINDS)}")
    if not isinstance(c.num_experts, int) or isinstance(c.num_experts, bool) or c.num_experts < 0:
        fail(c, "num_experts", f"must be an integer >= 0 (0 = dense), got {c.num_experts!r}")
    if not c.moe_pattern or any(kind not in MLP_KINDS for kind in c.moe_pattern) or "moe" not in c.moe_pattern:
        fail(c, "moe_pattern", f"got {tuple(c.moe_pattern)!r}; one or more of: moe, dense, with at least one moe")
    # Knobs the rest of the config makes meaningless (one table, shared with zoo.semantics), before the range
    # checks below: rope_fraction: 0.3 on an ALiBi model is a knob that does nothing, not a bad fraction.
    applicability.check(c, derivations(c))
    for stack in ("num_layers", "num_decoder_layers"):
        layers = getattr(c, stack)
        if layers is None or layers % c.cycle_length == 0:
            continue
        field = "attention_pattern" if layers % len(c.attention_pattern) else "moe_pattern"
        length = len(getattr(c, field))
        both = f"; with both patterns a cycle is {c.cycle_length} layers" if c.cycle_length > length else ""
        fail(c, field, f"its length {length} must divide {stack}={layers} (the stack scans over whole cycles{both})")
    _check_experts(c)
    if any(k.startswith("local") for k in c.attention_pattern) and c.sliding_window_size is None:
        fail(c, "sliding_window_size", "local layers in attention_pattern need a window size")
    if any(k.startswith("chunked") for k in c.attention_pattern) and c.attention_chunk_size is None:
        fail(c, "attention_chunk_size", "chunked layers in attention_pattern need a chunk size")
    depth = c.mtp_depth
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        fail(c, "mtp_depth", f"must be an integer >= 0 (0 = off), got {depth!r}")
    if depth and (c.architecture != "decoder_only" or c.position_embedding == "relative_bias"):
        fail(c, "mtp_depth", "multi-token prediction is for decoder_only stacks without a shared relative_bias table")
    floor = c.attention_temperature_floor
    if not isinstance(floor, int) or isinstance(floor, bool) or floor < 0:
        fail(c, "attention_temperature_floor", f"must be an integer >= 0 (0 = off), got {floor!r}")

    if c.norm_eps <= 0:
        fail(c, "norm_eps", f"must be > 0, got {c.norm_eps}")
    if c.norm_position == "post" and c.final_norm:
        fail(c, "final_norm", "a post-norm stack already ends in a norm; set final_norm: false")

    if c.position_embedding == "relative_bias":
        if c.relative_num_buckets < 4 or c.relative_num_buckets % 2:
            fail(c, "relative_num_buckets", "needs an even number >= 4 (half per direction in the encoder)")
        if c.relative_max_distance <= c.relative_num_buckets // 2:
            fail(c, "relative_max_distance", "must exceed the exact-distance buckets (relative_num_buckets / 2)")
    if c.kv_latent_dim:
        _check_latent(c, head_dim, kv)
    rotary = head_dim * c.rope_fraction
    if not 0.0 < c.rope_fraction <= 1.0 or rotary != int(rotary) or int(rotary) % 2:
        fail(c, "rope_fraction", f"must be in (0, 1] and rotate a whole, even number of the {head_dim} head dims")
    if c.rope_theta <= 0 or (c.rope_local_theta is not None and c.rope_local_theta <= 0):
        fail(c, "rope_theta", "must be > 0")
    if c.rope_scaling != "none" and c.rope_scaling_factor < 1.0:
        fail(c, "rope_scaling_factor", f"must be >= 1 with rope_scaling {c.rope_scaling!r}")
    if c.rope_scaling == "llama3" and not c.rope_high_freq_factor >= c.rope_low_freq_factor > 0:
        fail(c, "rope_high_freq_factor", "llama3 scaling needs rope_high_freq_factor >= rope_low_freq_factor > 0")
    if c.rope_scaling == "yarn" and not c.rope_yarn_beta_fast > c.rope_yarn_beta_slow > 0:
        fail(c, "rope_yarn_beta_fast", "yarn scaling needs rope_yarn_beta_fast > rope_yarn_beta_slow > 0")
    if c.rope_scaling == "yarn" and c.rope_attention_factor is not None and not c.rope_attention_factor > 0:
        fail(c, "rope_attention_factor", f"must be > 0 or null (0.1 ln(factor) + 1), got {c.rope_attention_factor}")
    if c.rope_scaling in ("llama3", "yarn") and not c.rope_original_max_len > 0:
        fail(c, "rope_original_max_len", f"must be a positive length, got {c.rope_original_max_len}")
    if c.position_embedding in ("sinusoidal", "transformer_xl") and c.d_model % 2:
        fail(c, "d_model", f"{c.position_embedding} positions need an even d_model")

    if not isinstance(c.position_offset, int) or c.position_offset < 0:
        fail(c, "position_offset", f"must be an integer >= 0, got {c.position_offset!r}")
    for name in ("attn_logits_soft_cap", "final_logits_soft_cap", "query_scale", "logits_scale", "clip_qkv"):
        value = getattr(c, name)
        if value is not None and not value > 0:
            fail(c, name, f"must be > 0 or null, got {value}")
    for name in (
        "embedding_dropout",
        "attention_dropout",
        "residual_dropout",
        "mlp_hidden_dropout",
        "final_norm_dropout",
    ):
        if not 0.0 <= getattr(c, name) < 1.0:
            fail(c, name, f"must be in [0, 1), got {getattr(c, name)}")
    if c.z_loss_multiplier < 0:
        fail(c, "z_loss_multiplier", "must be >= 0")
    if c.init_std <= 0:
        fail(c, "init_std", "must be > 0")
    if c.parallel_layers and c.norm_position not in ("pre", "double"):
        fail(c, "parallel_layers", f"needs norm_position pre or double, got {c.norm_position!r}")
    if c.is_encoder_decoder and c.parallel_layers:
        fail(c, "parallel_layers", "is only implemented for decoder_only stacks")


def _check_latent(c, head_dim: int, kv_heads: int) -> None:
    """Latent attention's shapes (the applicability table has refused its fields, QK-norm and clipping without it)."""
    if c.architecture != "decoder_only":
        fail(c, "kv_latent_dim", "latent attention is for decoder_only stacks (no latent cross-attention)")
    if kv_heads != c.num_heads:
        fail(
            c,
            "num_kv_heads",
            f"latent attention expands keys and values to every query head: "
            f"must equal num_heads={c.num_heads} or be null",
        )
    if c.position_embedding not in ("rope", "none"):
        fail(
            c,
            "position_embedding",
            f"latent attention takes rope (a shared RoPE key) or none, got {c.position_embedding!r}",
        )
    rope = c.position_embedding == "rope"
    if (c.rope_head_dim > 0) != rope or c.rope_head_dim % 2 or c.rope_head_dim >= head_dim:
        fail(
            c,
            "rope_head_dim",
            f"must be even, below head_dim={head_dim} (the rest of each head has no RoPE), and > 0 exactly with "
            f"position_embedding rope; got {c.rope_head_dim} with {c.position_embedding}",
        )


def _check_experts(c) -> None:
    """The mixture-of-experts knobs' ranges (the applicability table has refused them on a dense config)."""
    if not c.is_moe:
        return
    if not isinstance(c.experts_per_token, int) or not 1 <= c.experts_per_token <= c.num_experts:
        fail(c, "experts_per_token", f"must be in 1..num_experts={c.num_experts}, got {c.experts_per_token!r}")
    if c.d_expert is not None and (not isinstance(c.d_expert, int) or c.d_expert < 1):
        fail(c, "d_expert", f"must be a positive integer or null (= d_ff), got {c.d_expert!r}")
    if not isinstance(c.shared_expert_d_ff, int) or c.shared_expert_d_ff < 0:
        fail(c, "shared_expert_d_ff", f"must be an integer >= 0 (0 = none), got {c.shared_expert_d_ff!r}")
    prefix = c.dense_prefix_layers
    if not isinstance(prefix, int) or isinstance(prefix, bool) or prefix < 0 or prefix % c.cycle_length:
        fail(c, "dense_prefix_layers", f"must be a multiple of the cycle, {c.cycle_length} layers, got {prefix!r}")
    for stack in ("num_layers", "num_decoder_layers"):
        layers = getattr(c, stack)
        if layers is not None and prefix >= layers:
            fail(c, "dense_prefix_layers", f"must leave MoE layers: it is {prefix}, {stack}={layers}")
    groups, per_token = c.router_groups, c.router_groups_per_token
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or c.num_experts % groups:
        fail(c, "router_groups", f"must be a positive divisor of num_experts={c.num_experts}, got {groups!r}")
    if groups > 1 and (
        not isinstance(per_token, int)
        or not 1 <= per_token <= groups
        or per_token * c.num_experts // groups < c.experts_per_token
    ):
        fail(
            c,
            "router_groups_per_token",
            f"must be in 1..router_groups={groups} and leave at least experts_per_token={c.experts_per_token} experts "
            f"({c.num_experts // groups} per group), got {per_token!r}",
        )
    top = c.router_group_score_experts
    if groups > 1 and (not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= c.num_experts // groups):
        per_group = c.num_experts // groups
        fail(c, "router_group_score_experts", f"must be in 1..{per_group} (experts per group), got {top!r}")
    if not c.router_weight_scale > 0:
        fail(c, "router_weight_scale", f"must be > 0, got {c.router_weight_scale}")
    if not 0.0 <= c.router_jitter < 1.0:
        fail(c, "router_jitter", f"must be in [0, 1), got {c.router_jitter}")
    for name in ("capacity_factor", "eval_capacity_factor"):
        value = getattr(c, name)
        if value is not None and not value > 0:
            fail(c, name, f"must be > 0, or null for dropless routing, got {value}")
    for name in ("load_balancing_multiplier", "router_z_loss_multiplier"):
        if getattr(c, name) < 0:
            fail(c, name, f"must be >= 0, got {getattr(c, name)}")
