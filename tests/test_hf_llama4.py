"""Parity with transformers' Llama4ForCausalLM (llama4_text): random tiny models of odd shapes whose every knob
binds at 40 tokens, longer than each chunk (7) and than the temperature's floor (5): chunked RoPE layers and a
NoPE global layer with temperature tuning, the gainless QK-norm on the RoPE layers only, llama3 RoPE scaling
(Scout's equal frequency factors), alternating dense and MoE layers (Maverick), top-1 of 5 experts by sigmoid
weight scaling the expert's input, a shared expert; HF -> zoo -> HF logits to 1e-4; each detail changes the
logits (chunk off by one, RoPE on the NoPE layer, QK-norm on it, no temperature, weights on the output, softmax
router); the -tiny preset through the class; the exact counts against the class on the meta device."""

import numpy as np
import pytest
from test_hf import _roundtrip, _tokens, _zoo_logits, torch, transformers
from test_hf_more import assert_refused

from zoo import count_params, hf
from zoo.presets import get_config, published

TOKENS = _tokens(96, 40)


def _hf_llama4(**kw):
    """A random tiny Llama4ForCausalLM, every parameter drawn N(0, 0.1^2) (norm gains 1 + that); the router N(0, 1)
    so that sigmoid weights spread over (0, 1)."""
    config = transformers.Llama4TextConfig(
        **{
            "vocab_size": 96,
            "hidden_size": 40,
            "intermediate_size": 24,
            "intermediate_size_mlp": 56,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 12,
            "num_local_experts": 5,
            "num_experts_per_tok": 1,
            "interleave_moe_layer_step": 2,
            "attention_chunk_size": 7,
            "floor_scale": 5,
            "attn_scale": 0.3,
            "use_qk_norm": True,
            "max_position_embeddings": 256,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 16.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 1.0,
                "original_max_position_embeddings": 16,
            },
            "attn_implementation": "eager",
            **kw,
        }
    )
    torch.manual_seed(0)
    model = transformers.Llama4ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (1.0 if name.endswith("router.weight") else 0.1))
            if name.endswith("norm.weight"):
                p.add_(1.0)
    return model


def _differs(cfg, params, ref, **change):
    return np.abs(_zoo_logits(cfg.replace(**change), params, TOKENS) - ref).max() > 1e-3


def test_llama4_both_ways_and_each_detail_matters(tmp_path):
    cfg, params, ref = _roundtrip("llama4_text", _hf_llama4(), TOKENS, tmp_path)
    assert cfg.attention_pattern == ("chunked", "chunked", "chunked", "global_nope")
    assert (cfg.attention_chunk_size, cfg.attention_temperature_floor, cfg.attention_temperature_scale) == (7, 5, 0.3)
    assert (cfg.qk_norm, cfg.qk_norm_nope_layers, cfg.rope_interleaved) == ("per_head_no_gain", False, True)
    assert (cfg.moe_pattern, cfg.d_ff, cfg.d_expert, cfg.shared_expert_d_ff) == (("dense", "moe"), 56, 24, 24)
    assert (cfg.router, cfg.router_renormalize, cfg.router_weights_input) == ("sigmoid_topk", False, True)
    for change in (
        dict(attention_chunk_size=6),
        dict(attention_chunk_size=8),
        dict(qk_norm_nope_layers=True),
        dict(attention_temperature_scale=0.1),
        dict(router_weights_input=False),
        dict(router="softmax_topk"),
        dict(rope_interleaved=False),
    ):
        assert _differs(cfg, params, ref, **change), change
    # Temperature off, then RoPE on the NoPE layer too (QK-norm off, so that nothing else changes on that layer).
    plain = cfg.replace(attention_temperature_floor=0, attention_temperature_scale=0.1)
    assert np.abs(_zoo_logits(plain, params, TOKENS) - ref).max() > 1e-3
    plain = plain.replace(qk_norm="none", qk_norm_nope_layers=True)
    rotated = plain.replace(attention_pattern=("chunked", "chunked", "chunked", "global"))
    assert np.abs(_zoo_logits(rotated, params, TOKENS) - _zoo_logits(plain, params, TOKENS)).max() > 1e-3
    cfg_unrolled, unrolled = hf.load(tmp_path / "zoo", scan_layers=False)
    assert np.abs(_zoo_logits(cfg_unrolled, unrolled, TOKENS) - ref).max() < 1e-4


def test_scout_layout_every_layer_moe_no_temperature_and_full_rope_layers(tmp_path):
    """Scout's every-layer experts; without temperature tuning; full-attention RoPE layers where layer_types says so
    (a global kind), and the class's default no_rope_layers (every fourth layer NoPE)."""
    layer_types = ["full_attention", "chunked_attention", "chunked_attention", "full_attention"]
    model = _hf_llama4(interleave_moe_layer_step=1, attn_temperature_tuning=False, layer_types=layer_types)
    cfg, _, _ = _roundtrip("llama4_text (scout)", model, TOKENS, tmp_path)
    assert cfg.attention_pattern == ("global", "chunked", "chunked", "global_nope")
    assert cfg.moe_pattern == ("moe",) and cfg.attention_temperature_floor == 0


def test_tiny_preset_through_its_hf_class(tmp_path):
    preset = get_config("llama4-tiny")
    assert hf.family_of(preset).model_type == "llama4_text"
    values = hf.config_to_hf(preset, "llama4_text")
    config = transformers.AutoConfig.for_model(
        values.pop("model_type"), **{**values, "initializer_range": 0.1}, attn_implementation="eager"
    )
    torch.manual_seed(0)
    model = transformers.Llama4ForCausalLM(config).eval()
    cfg, _, _ = _roundtrip("llama4-tiny", model, _tokens(512, 48), tmp_path, family="llama4_text")
    untracked = ("init_scheme", "init_std", "load_balancing_multiplier")
    assert cfg.replace(**{f: getattr(preset, f) for f in untracked}) == preset.replace(scan_layers=True)


@pytest.mark.parametrize("name", ["llama4-scout", "llama4-maverick"])
def test_exact_total_and_active_counts_are_the_transformers_counts(name):
    """Total: numel of Llama4ForCausalLM's parameters on the meta device == zoo.count_params == the preset's record;
    active: the routed experts scaled by 1/E (Meta's 17B: embedding, head and shared experts included)."""
    cfg = get_config(name)
    values = hf.config_to_hf(cfg, "llama4_text")
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    active = total - routed + routed * cfg.experts_per_token // cfg.num_experts
    assert count_params(cfg) == total == published(name).params
    assert count_params(cfg, active=True) == active == published(name).active
    assert round(active / 1e9) == 17


@pytest.mark.parametrize(
    "change, field",
    [
        ({"interleave_moe_layer_step": 0}, "interleave_moe_layer_step"),
        ({"no_rope_layers": [1, 1]}, "no_rope_layers"),
        ({"layer_types": ["sliding_attention"] * 4}, "layer_types"),
        ({"num_local_experts": 4, "num_experts_per_tok": 5}, "num_experts_per_tok"),
    ],
)
def test_inexpressible_hf_config_names_the_field(tmp_path, change, field):
    assert_refused(tmp_path, "llama4_text", change, field)
