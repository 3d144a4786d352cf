"""When a knob applies: one table of "field F does something only when <condition on the rest of the config>".

Both readers of the rule use this table, so they cannot disagree:
- validation (ModelConfig and TrainConfig ``__post_init__``) refuses a field the rest of its config makes
  meaningless when the field is set, naming both fields: "ModelConfig.parallel_shared_norm: only applies with
  parallel_layers: true; here parallel_layers: false";
- ``zoo.semantics`` leaves the same fields out of what decides a model's outputs (the HF round trip, init.hf).

"Set" means neither the declared default nor null (null is "unused" wherever such a field is nullable:
TrainConfig.beta2 under Adafactor) nor, for a field the config derives when left null (num_decoder_layers =
num_layers), the value it derives: saved run configs (config.json) carry derived values back as given ones.
Each rule may rely on the rules above it: once rope_scaling is refused without RoPE, rope_scaling_factor's
condition needs only to read rope_scaling. Rules state what the code reads (zoo/layers, zoo/model.py,
zoo/train/optim.py); a field no rule names always applies.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from zoo.fields import fail, field_names, is_default


@dataclasses.dataclass(frozen=True)
class Rule:
    fields: tuple[str, ...]
    """The fields that do nothing unless `applies`."""
    applies: Callable[[Any], bool]
    """The condition, on a config whose earlier rules hold."""
    when: str
    """The condition in words, naming the deciding fields as the config spells them."""


def _local(c) -> bool:
    """Some layer is sliding-window (its positions rotated or not)."""
    return _has_kind(c, prefix="local")


def _has_kind(c, prefix: str = "", suffix: str = "") -> bool:
    """Some entry of attention_pattern starts with `prefix` and ends with `suffix`."""
    return any(kind.startswith(prefix) and kind.endswith(suffix) for kind in c.attention_pattern)


def _relative_tables(c) -> bool:
    """A parameter with the "relative" init role exists: T5's bias table, Transformer-XL's u and v."""
    return c.position_embedding in ("relative_bias", "transformer_xl")


RULES: dict[str, tuple[Rule, ...]] = {
    "ModelConfig": (
        Rule(("num_decoder_layers",), lambda c: c.architecture == "encoder_decoder", "architecture: encoder_decoder"),
        Rule(("parallel_shared_norm",), lambda c: c.parallel_layers, "parallel_layers: true"),
        # An RMSNorm given a bias would add one (zoo/layers/norms.py), a norm no family uses: refused, not ignored.
        Rule(("norm_use_bias",), lambda c: c.norm_type == "layernorm", "norm_type: layernorm"),
        Rule(("norm_scale_plus_one",), lambda c: c.norm_use_scale, "norm_use_scale: true"),
        Rule(("sliding_window_size",), _local, "a local or local_nope layer in attention_pattern"),
        Rule(
            ("attention_chunk_size",),
            lambda c: _has_kind(c, prefix="chunked"),
            "a chunked or chunked_nope layer in attention_pattern",
        ),
        Rule(
            ("attention_temperature_floor",),
            lambda c: _has_kind(c, suffix="_nope"),
            "a *_nope layer in attention_pattern",
        ),
        Rule(
            ("attention_temperature_scale",),
            lambda c: c.attention_temperature_floor > 0,
            "attention_temperature_floor > 0",
        ),
        Rule(
            ("relative_num_buckets", "relative_max_distance", "relative_bias_shared"),
            lambda c: c.position_embedding == "relative_bias",
            "position_embedding: relative_bias",
        ),
        Rule(("position_offset",), lambda c: c.position_embedding == "learned", "position_embedding: learned"),
        Rule(
            ("rope_theta", "rope_interleaved", "rope_scaling"),
            lambda c: c.position_embedding == "rope",
            "position_embedding: rope",
        ),
        # Latent attention rotates its own rope_head_dim dims, and has no per-head keys to normalise or clip.
        Rule(
            ("rope_fraction",),
            lambda c: c.position_embedding == "rope" and c.kv_latent_dim == 0,
            "position_embedding: rope and kv_latent_dim: 0",
        ),
        Rule(
            ("q_latent_dim", "rope_head_dim", "value_head_dim"),
            lambda c: c.kv_latent_dim > 0,
            "kv_latent_dim > 0",
        ),
        Rule(("qk_norm", "clip_qkv"), lambda c: c.kv_latent_dim == 0, "kv_latent_dim: 0"),
        Rule(
            ("qk_norm_nope_layers",),
            lambda c: c.qk_norm != "none" and _has_kind(c, suffix="_nope"),
            "qk_norm other than none and a *_nope layer in attention_pattern",
        ),
        # *_nope layers skip RoPE, so only a "local" layer reads the local base and the local scaling switch.
        Rule(
            ("rope_local_theta",),
            lambda c: c.position_embedding == "rope" and "local" in c.attention_pattern,
            "position_embedding: rope and a local layer in attention_pattern",
        ),
        Rule(("rope_scaling_factor",), lambda c: c.rope_scaling != "none", "rope_scaling: linear, llama3 or yarn"),
        Rule(
            ("rope_scaling_local",),
            lambda c: c.rope_scaling != "none" and "local" in c.attention_pattern,
            "rope_scaling: linear, llama3 or yarn and a local layer in attention_pattern",
        ),
        Rule(
            ("rope_low_freq_factor", "rope_high_freq_factor"),
            lambda c: c.rope_scaling == "llama3",
            "rope_scaling: llama3",
        ),
        Rule(
            ("rope_original_max_len",),
            lambda c: c.rope_scaling in ("llama3", "yarn"),
            "rope_scaling: llama3 or yarn",
        ),
        Rule(
            ("rope_yarn_beta_fast", "rope_yarn_beta_slow", "rope_yarn_truncate", "rope_attention_factor"),
            lambda c: c.rope_scaling == "yarn",
            "rope_scaling: yarn",
        ),
        Rule(
            (
                "experts_per_token",
                "d_expert",
                "moe_pattern",
                "dense_prefix_layers",
                "router",
                "router_groups",
                "router_weight_scale",
                "router_bias",
                "router_balance_bias",
                "router_jitter",
                "router_weights_input",
                "shared_expert_d_ff",
                "capacity_factor",
                "eval_capacity_factor",
                "load_balancing_multiplier",
                "load_balancing_per_sequence",
                "router_z_loss_multiplier",
                "moe_matmul",
            ),
            lambda c: c.num_experts > 0,
            "num_experts > 0",
        ),
        Rule(
            ("router_renormalize",),
            lambda c: c.num_experts > 0 and c.router in ("softmax_topk", "sigmoid_topk"),
            "num_experts > 0 and router: softmax_topk or sigmoid_topk",
        ),
        Rule(
            ("router_groups_per_token", "router_group_score_experts"),
            lambda c: c.num_experts > 0 and c.router_groups > 1,
            "num_experts > 0 and router_groups > 1",
        ),
        Rule(("shared_expert_gate",), lambda c: c.shared_expert_d_ff > 0, "shared_expert_d_ff > 0"),
        Rule(("mlp_glu_limit", "mlp_glu_linear_offset"), lambda c: len(c.mlp_activations) == 2, "two mlp_activations"),
        Rule(("lm_head_bias",), lambda c: not c.tie_word_embeddings, "tie_word_embeddings: false"),
        # zoo/layers/init.py: t5 never reads init_std; xavier and fan_in read it for relative tables only.
        Rule(
            ("init_std",),
            lambda c: (
                c.init_scheme in ("normal", "truncated_normal", "gpt2_scaled")
                or (c.init_scheme in ("xavier", "fan_in") and _relative_tables(c))
            ),
            "init_scheme: normal, truncated_normal or gpt2_scaled (xavier or fan_in: with position_embedding "
            "relative_bias or transformer_xl, whose tables it initialises)",
        ),
    ),
    "TrainConfig": (
        Rule(("beta2",), lambda c: c.optimizer in ("adam", "adamw"), "optimizer: adam or adamw"),
        Rule(
            (
                "adafactor_decay_rate",
                "adafactor_factored",
                "adafactor_clipping_threshold",
                "adafactor_multiply_by_parameter_scale",
            ),
            lambda c: c.optimizer == "adafactor",
            "optimizer: adafactor",
        ),
        Rule(
            ("weight_decay_lr_power", "decay_norms_and_biases", "decay_embeddings"),
            lambda c: c.weight_decay > 0,
            "weight_decay > 0",
        ),
        Rule(
            ("final_lr_fraction",),
            lambda c: c.schedule in ("cosine", "linear", "wsd"),
            "schedule: cosine, linear or wsd",
        ),
        Rule(("wsd_decay_fraction",), lambda c: c.schedule == "wsd", "schedule: wsd"),
    ),
}


def _rules(config) -> dict[str, Rule]:
    return {name: rule for rule in RULES.get(type(config).__name__, ()) for name in rule.fields}


def unused_fields(config) -> set[str]:
    """The fields of `config` that its other values make meaningless (zoo.semantics leaves them out)."""
    return {name for name, rule in _rules(config).items() if not rule.applies(config)}


def _show(value) -> str:
    """A value as a preset or the command line writes it."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def check(config, derived: dict[str, Any]) -> None:
    """Refuse the first field, in table order, that is set although its rule says it does nothing.
    `derived`: what each derived field is when left null (such a value counts as unset)."""
    names = field_names(type(config))
    for name, rule in _rules(config).items():
        value = getattr(config, name)
        unset = value is None or is_default(config, name) or (name in derived and value == derived[name])
        if not unset and not rule.applies(config):
            deciding = [f for f in dict.fromkeys(re.findall(r"\w+", rule.when)) if f in names]
            here = ", ".join(f"{f}: {_show(getattr(config, f))}" for f in deciding)
            fail(config, name, f"only applies with {rule.when}; here {here}")
