"""Parity with transformers' DeepseekV2ForCausalLM (DeepSeek-V2-Lite): random tiny models whose every knob binds
(latent attention with and without the query bottleneck; YaRN x4 over an original context of 16, shorter than the
24 tokens, with V2-Lite's mscale 0.707 in the softmax scale; a dense first layer; 5 routed experts, 2 per token,
scaled by 2.5, beside shared experts), HF -> zoo -> HF logits to 1e-4, scanned and unrolled; each detail changes
the logits; the -tiny preset through the class; the exact counts against the class on the meta device and
DeepSeek's published figures; configs the zoo cannot express are refused naming the field."""

import numpy as np
import pytest
from test_hf import _roundtrip, _tokens, _zoo_logits, torch, transformers
from test_hf_more import assert_refused

from zoo import count_params, hf
from zoo.presets import get_config, published

TOKENS = _tokens(128, 24)


def _hf_deepseek_v2(**kw):
    """A random tiny DeepseekV2ForCausalLM, every parameter drawn N(0, 0.1^2) (norm gains 1 + that)."""
    config = transformers.DeepseekV2Config(
        **{
            "vocab_size": 128,
            "hidden_size": 48,
            "intermediate_size": 64,
            "moe_intermediate_size": 16,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "kv_lora_rank": 24,
            "q_lora_rank": 20,
            "qk_nope_head_dim": 12,
            "qk_rope_head_dim": 8,
            "v_head_dim": 10,
            "n_routed_experts": 5,
            "num_experts_per_tok": 2,
            "n_shared_experts": 2,
            "first_k_dense_replace": 1,
            "routed_scaling_factor": 2.5,
            "max_position_embeddings": 256,
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 16,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "mscale": 0.707,
                "mscale_all_dim": 0.707,
            },
            "attn_implementation": "eager",
            **kw,
        }
    )
    torch.manual_seed(0)
    model = transformers.DeepseekV2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1)
            if name.endswith("norm.weight"):
                p.add_(1.0)
    return model


def _differs(cfg, params, ref, **change):
    return np.abs(_zoo_logits(cfg.replace(**change), params, TOKENS) - ref).max() > 1e-3


def test_deepseek_v2_both_ways_and_each_detail_matters(tmp_path):
    cfg, params, ref = _roundtrip("deepseek_v2", _hf_deepseek_v2(), TOKENS, tmp_path)
    assert (cfg.kv_latent_dim, cfg.q_latent_dim, cfg.rope_head_dim, cfg.head_dim, cfg.value_head_dim) == (
        24,
        20,
        8,
        20,
        10,
    )
    assert (cfg.dense_prefix_layers, cfg.shared_expert_d_ff, cfg.router_weight_scale) == (1, 32, 2.5)
    assert cfg.rope_interleaved and cfg.query_scale > cfg.head_dim**-0.5
    block = params["decoder"]["cycles"]["block_0"]
    assert block["attention"]["kv_up"]["kernel"].shape == (2, 24, 4, 22)
    for change in (
        dict(rope_interleaved=False),
        dict(query_scale=None),
        dict(router_weight_scale=1.0),
    ):
        assert _differs(cfg, params, ref, **change), change
    cfg_unrolled, unrolled = hf.load(tmp_path / "zoo", scan_layers=False)
    assert np.abs(_zoo_logits(cfg_unrolled, unrolled, TOKENS) - ref).max() < 1e-4


def test_deepseek_v2_group_limited_routing(tmp_path):
    """DeepSeek-V2's group_limited_greedy: 8 experts in 4 groups, each token's 2 from its best group (with 2 groups
    or more the top 2 would always lie in them); routing over every group instead changes the logits."""
    model = _hf_deepseek_v2(n_routed_experts=8, topk_method="group_limited_greedy", n_group=4, topk_group=1)
    cfg, params, ref = _roundtrip("deepseek_v2 (groups)", model, TOKENS, tmp_path)
    assert (cfg.router_groups, cfg.router_groups_per_token) == (4, 1)
    assert _differs(cfg, params, ref, router_groups=1, router_groups_per_token=1)


def test_deepseek_v2_without_the_query_bottleneck(tmp_path):
    """V2-Lite's q_lora_rank null: one q_proj, the query_down/query_norm/query_up path absent."""
    cfg, params, _ = _roundtrip("deepseek_v2 (q_proj)", _hf_deepseek_v2(q_lora_rank=None), TOKENS, tmp_path)
    assert cfg.q_latent_dim == 0 and "query" in params["decoder"]["cycles"]["block_0"]["attention"]


def test_tiny_preset_through_its_hf_class(tmp_path):
    preset = get_config("deepseek-v2-lite-tiny")
    assert hf.family_of(preset).model_type == "deepseek_v2"
    values = hf.config_to_hf(preset, "deepseek_v2")
    config = transformers.AutoConfig.for_model(
        values.pop("model_type"), **{**values, "initializer_range": 0.1}, attn_implementation="eager"
    )
    torch.manual_seed(0)
    model = transformers.DeepseekV2ForCausalLM(config).eval()
    cfg, _, _ = _roundtrip("deepseek-v2-lite-tiny", model, _tokens(512, 48), tmp_path, family="deepseek_v2")
    untracked = ("init_scheme", "init_std", "load_balancing_multiplier")
    assert cfg.replace(**{f: getattr(preset, f) for f in untracked}) == preset.replace(scan_layers=True)


@pytest.mark.parametrize("name", ["deepseek-v2-lite", "deepseek-v2"])
def test_exact_total_and_active_counts_are_the_transformers_counts(name):
    """Total: numel of DeepseekV2ForCausalLM on the meta device == zoo.count_params == published; active: every
    routed expert tensor scaled by k/E. Less the input embedding, DeepSeek's labels: 2.4B (2.45B, truncated) and 21B
    (20.85B; 21.38B with it)."""
    cfg = get_config(name)
    values = hf.config_to_hf(cfg, "deepseek_v2")
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    active = total - routed + routed * cfg.experts_per_token // cfg.num_experts
    assert count_params(cfg) == total == published(name).params
    assert count_params(cfg, active=True) == active == published(name).active
    without_input_embedding = active - cfg.vocab_size * cfg.d_model
    label = float(published(name).active_label.rstrip("B"))
    if name == "deepseek-v2-lite":  # 2,451,435,008: "2.4B" truncates to one decimal (with the embedding: 2.66B)
        assert without_input_embedding // 10**8 / 10 == label
    else:
        assert round(without_input_embedding / 1e9) == round(active / 1e9) == label


@pytest.mark.parametrize(
    "change, field",
    [
        ({"topk_method": "noaux_tc"}, "topk_method"),
        ({"topk_method": "group_limited_greedy", "n_group": None, "num_experts_per_tok": 6}, "n_group"),
        ({"rms_norm_eps": 1e-5}, "rms_norm_eps"),
        ({"num_key_value_heads": 2}, "num_key_value_heads"),
        ({"n_routed_experts": 4, "num_experts_per_tok": 5}, "num_experts_per_tok"),
        ({}, "num_experts_per_tok"),  # the class has no default (None)
    ],
)
def test_inexpressible_hf_config_names_the_field(tmp_path, change, field):
    assert_refused(tmp_path, "deepseek_v2", change, field)
