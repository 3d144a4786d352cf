"""zoo.applicability: one table says when a knob applies. Validation refuses a knob set where it does nothing,
naming both fields and where each value came from; zoo.semantics drops exactly the fields the table says."""

import re

import pytest

import zoo
from zoo.applicability import RULES, unused_fields
from zoo.config import ModelConfig
from zoo.fields import field_names
from zoo.presets import get_train_config
from zoo.recipe import TrainConfig
from zoo.semantics import RUNTIME_FIELDS, TRAINING_FIELDS, semantics
from zoo.train.config import UserError, resolve

CLASSES = {"ModelConfig": ModelConfig, "TrainConfig": TrainConfig}
BASE = dict(vocab_size=64, d_model=32, num_layers=2, num_heads=4, d_ff=64, max_seq_len=16)
LOCAL = dict(attention_pattern=("local", "global"), sliding_window_size=4)
LATENT = dict(kv_latent_dim=8, rope_head_dim=4)

# field -> (the rest of a config under which it does nothing, a value that is neither its default nor null)
MODEL_CASES = {
    "num_decoder_layers": ({}, 4),
    "parallel_shared_norm": ({}, False),
    "norm_use_bias": ({}, True),
    "norm_scale_plus_one": (dict(norm_use_scale=False), True),
    "sliding_window_size": ({}, 4),
    "relative_num_buckets": ({}, 8),
    "relative_max_distance": ({}, 64),
    "relative_bias_shared": ({}, False),
    "position_offset": ({}, 2),
    "rope_theta": (dict(position_embedding="alibi"), 500.0),
    "rope_fraction": (dict(position_embedding="alibi"), 0.5),
    "rope_interleaved": (dict(position_embedding="learned"), True),
    "rope_scaling": (dict(position_embedding="none"), "linear"),
    "rope_local_theta": ({}, 100.0),
    "rope_scaling_factor": ({}, 2.0),
    "rope_scaling_local": (LOCAL, False),
    "rope_low_freq_factor": (dict(rope_scaling="linear", rope_scaling_factor=2.0), 2.0),
    "rope_high_freq_factor": (dict(rope_scaling="linear"), 8.0),
    "rope_original_max_len": (dict(rope_scaling="linear", rope_scaling_factor=2.0), 4096),
    "rope_yarn_beta_fast": (dict(rope_scaling="llama3", rope_scaling_factor=2.0), 16.0),
    "rope_yarn_beta_slow": ({}, 2.0),
    "rope_yarn_truncate": ({}, False),
    "rope_attention_factor": (dict(rope_scaling="linear", rope_scaling_factor=2.0), 1.2),
    "experts_per_token": ({}, 1),
    "d_expert": ({}, 32),
    "moe_pattern": ({}, ("dense", "moe")),
    "dense_prefix_layers": ({}, 1),
    "router": ({}, "topk_softmax"),
    "router_bias": ({}, True),
    "router_jitter": ({}, 0.01),
    "shared_expert_d_ff": ({}, 16),
    "capacity_factor": ({}, 1.25),
    "eval_capacity_factor": ({}, 2.0),
    "load_balancing_multiplier": ({}, 0.01),
    "load_balancing_per_sequence": ({}, True),
    "router_z_loss_multiplier": ({}, 0.001),
    "moe_matmul": ({}, "blocks"),
    "router_weight_scale": ({}, 2.0),
    "router_groups": ({}, 2),
    "router_groups_per_token": (dict(num_experts=4), 2),
    "router_group_score_experts": (dict(num_experts=4), 2),
    "router_balance_bias": ({}, True),
    "q_latent_dim": ({}, 8),
    "rope_head_dim": ({}, 4),
    "value_head_dim": ({}, 4),
    "qk_norm": (LATENT, "per_head"),
    "clip_qkv": (LATENT, 8.0),
    "router_renormalize": (dict(num_experts=4, router="topk_softmax"), True),
    "shared_expert_gate": (dict(num_experts=4), True),
    "mlp_glu_limit": (dict(mlp_activations=("gelu",)), 7.0),
    "mlp_glu_linear_offset": (dict(mlp_activations=("relu",)), 1.0),
    "lm_head_bias": ({}, True),
    "init_std": (dict(init_scheme="t5"), 0.1),
    "attention_chunk_size": (LOCAL, 8),
    "attention_temperature_floor": (LOCAL, 8),
    "attention_temperature_scale": (dict(attention_pattern=("global_nope",)), 0.2),
    "qk_norm_nope_layers": (dict(attention_pattern=("global_nope",)), False),
    "router_weights_input": ({}, True),
}
TRAIN_CASES = {
    "beta2": (dict(optimizer="adafactor"), 0.99),
    "adafactor_decay_rate": ({}, 0.5),
    "adafactor_factored": (dict(optimizer="adam", weight_decay=0.0), False),
    "adafactor_clipping_threshold": ({}, 2.0),
    "adafactor_multiply_by_parameter_scale": ({}, False),
    "weight_decay_lr_power": (dict(weight_decay=0.0), 2.0),
    "decay_norms_and_biases": (dict(weight_decay=0.0), True),
    "decay_embeddings": (dict(optimizer="adafactor", weight_decay=0.0), False),
    "final_lr_fraction": (dict(schedule="constant"), 0.0),
    "wsd_decay_fraction": (dict(schedule="inverse_sqrt"), 0.5),
}


def _rule(cls_name: str, name: str):
    return next(rule for rule in RULES[cls_name] if name in rule.fields)


def _build(cls_name: str, values: dict):
    return ModelConfig(**BASE, **values) if cls_name == "ModelConfig" else TrainConfig(**values)


def test_every_rule_names_real_fields_and_has_a_case():
    for cls_name, rules in RULES.items():
        names = [name for rule in rules for name in rule.fields]
        assert len(names) == len(set(names)), f"{cls_name}: a field in two rules"
        assert set(names) <= set(field_names(CLASSES[cls_name]))
        assert set(names) == set(MODEL_CASES if cls_name == "ModelConfig" else TRAIN_CASES)


@pytest.mark.parametrize(
    "cls_name, name, context, value",
    [("ModelConfig", n, *case) for n, case in MODEL_CASES.items()]
    + [("TrainConfig", n, *case) for n, case in TRAIN_CASES.items()],
)
def test_a_value_that_does_nothing_is_refused_naming_both_fields(cls_name, name, context, value):
    config = _build(cls_name, context)  # the context alone, the field at its default, is fine
    rule = _rule(cls_name, name)
    assert not rule.applies(config) and name in unused_fields(config)
    deciding = [f for f in re.findall(r"\w+", rule.when) if f in field_names(CLASSES[cls_name])]
    assert deciding
    with pytest.raises(ValueError, match=rf"^{cls_name}\.{name}: only applies with ") as e:
        _build(cls_name, {**context, name: value})
    assert all(f in str(e.value) for f in deciding), str(e.value)


def test_null_counts_as_unset_where_a_field_does_not_apply():
    assert TrainConfig(optimizer="adafactor", beta1=None, beta2=None).beta2 is None
    assert TrainConfig(adafactor_decay_rate=None, adafactor_clipping_threshold=None).adafactor_decay_rate is None


def test_a_derived_value_given_back_counts_as_unset_and_stays_derived():
    """config.json stores num_decoder_layers = num_layers for a decoder-only model: reading it back is fine, and
    the value still follows num_layers."""
    cfg = ModelConfig(**BASE)
    back = ModelConfig.from_dict(cfg.to_dict())
    assert back == cfg and back.num_decoder_layers == 2
    assert back.replace(num_layers=4).num_decoder_layers == 4
    with pytest.raises(ValueError, match=r"num_decoder_layers: only applies with architecture: encoder_decoder"):
        ModelConfig(**BASE, num_decoder_layers=4)
    t5 = ModelConfig(
        **BASE,
        architecture="encoder_decoder",
        num_decoder_layers=4,
        position_embedding="relative_bias",
        relative_num_buckets=8,
        relative_max_distance=16,
    )
    assert t5.replace(num_layers=4).num_decoder_layers == 4 and t5.replace(d_model=64).num_decoder_layers == 4


def test_messages_say_where_each_value_came_from():
    """pythia-tiny sets parallel_shared_norm: false in its file; the command line turns parallel_layers off."""
    with pytest.raises(UserError) as e:
        resolve("pythia-tiny", ["model.parallel_layers=false"])
    message = str(e.value)
    assert message.startswith("ModelConfig.parallel_shared_norm: only applies with parallel_layers: true")
    assert "model.parallel_shared_norm=False from configs/gpt_neox.yaml preset 'pythia-tiny'" in message
    assert "model.parallel_layers=False from the command line" in message
    with pytest.raises(UserError) as e:
        resolve("llama-tiny", ["train.schedule=constant", "train.final_lr_fraction=0.0"])
    message = str(e.value)
    assert message.startswith("TrainConfig.final_lr_fraction: only applies with schedule: cosine, linear or wsd")
    assert (
        "train.final_lr_fraction=0.0 from the command line; train.schedule='constant' from the command line" in message
    )


def test_beta1_null_is_refused_with_adam():
    for optimizer in ("adamw", "adam"):
        with pytest.raises(ValueError, match=rf"^TrainConfig.beta1: null .* optimizer '{optimizer}'"):
            TrainConfig(optimizer=optimizer, beta1=None, weight_decay=0.0)
    assert TrainConfig(optimizer="adafactor", beta1=None).beta1 is None  # Adafactor without momentum (T5)
    with pytest.raises(
        UserError,
        match=r"TrainConfig.beta1: .*train.beta1=None from configs/t5.yaml preset "
        r"'t5-small'; train.optimizer='adamw' from the command line",
    ):
        resolve("t5-small", ["train.optimizer=adamw"])


@pytest.mark.parametrize("name", zoo.list_presets())
def test_every_preset_loads_and_semantics_drops_exactly_the_unused_fields(name):
    cfg, recipe = zoo.get_config(name), get_train_config(name)
    assert {n for r in RULES["TrainConfig"] for n in r.fields if not r.applies(recipe)} == unused_fields(recipe)
    unused = {n for r in RULES["ModelConfig"] for n in r.fields if not r.applies(cfg)}
    never = {*RUNTIME_FIELDS, *TRAINING_FIELDS, "scan_layers", "param_dtype"}
    assert set(semantics(cfg)) == set(field_names(ModelConfig)) - never - unused
