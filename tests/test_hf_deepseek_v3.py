"""Parity with transformers' DeepseekV3ForCausalLM: random tiny models whose every routing knob binds (sigmoid
scores, 8 experts in 4 groups of which a token keeps 2, each group scored by its best two, 3 per token, renormalised
and scaled by 2.5, a random e_score_correction_bias that changes the choices), with latent attention, YaRN and a
dense first layer, HF -> zoo -> HF logits to 1e-4; each routing detail changes the logits; RoPE in halves as well as
interleaved; the -tiny preset through the class; the exact counts against the class on the meta device and
DeepSeek's published figures (the bias is a buffer: not counted)."""

import numpy as np
import pytest
from test_hf import _hf_logits, _roundtrip, _tokens, _zoo_logits, torch, transformers
from test_hf_more import assert_refused

from zoo import count_params, hf
from zoo.presets import get_config, published

TOKENS = _tokens(128, 24)


def _hf_deepseek_v3(**kw):
    """A random tiny DeepseekV3ForCausalLM, every parameter drawn N(0, 0.1^2) (norm gains 1 + that), and every
    router's e_score_correction_bias N(0, 0.2^2): about the spread of the scores, so it moves choices."""
    config = transformers.DeepseekV3Config(
        **{
            "vocab_size": 128,
            "hidden_size": 48,
            "intermediate_size": 64,
            "moe_intermediate_size": 16,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "kv_lora_rank": 24,
            "q_lora_rank": 20,
            "qk_nope_head_dim": 12,
            "qk_rope_head_dim": 8,
            "v_head_dim": 10,
            "n_routed_experts": 8,
            "num_experts_per_tok": 3,
            "n_group": 4,
            "topk_group": 2,
            "n_shared_experts": 1,
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
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
            },
            "attn_implementation": "eager",
            **kw,
        }
    )
    torch.manual_seed(0)
    model = transformers.DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1)
            if name.endswith("norm.weight"):
                p.add_(1.0)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.randn_like(b) * 0.2)
    return model


def _differs(cfg, params, ref, **change):
    return np.abs(_zoo_logits(cfg.replace(**change), params, TOKENS) - ref).max() > 1e-3


def test_deepseek_v3_both_ways_and_each_routing_detail_matters(tmp_path):
    cfg, params, ref = _roundtrip("deepseek_v3", _hf_deepseek_v3(), TOKENS, tmp_path)
    assert (cfg.router, cfg.router_renormalize, cfg.router_balance_bias, cfg.router_weight_scale) == (
        "sigmoid_topk",
        True,
        True,
        2.5,
    )
    assert (cfg.router_groups, cfg.router_groups_per_token, cfg.router_group_score_experts) == (4, 2, 2)
    bias = params["decoder"]["cycles"]["block_0"]["moe"]["balance_bias"]
    assert bias.shape == (2, 8) and np.abs(bias).min() > 0  # the two MoE layers' buffers, read
    unbiased = {
        **params,
        "decoder": {
            **params["decoder"],
            "cycles": {
                "block_0": {
                    **params["decoder"]["cycles"]["block_0"],
                    "moe": {**params["decoder"]["cycles"]["block_0"]["moe"], "balance_bias": 0 * bias},
                }
            },
        },
    }
    assert np.abs(_zoo_logits(cfg, unbiased, TOKENS) - ref).max() > 1e-3  # the bias moves choices
    for change in (
        dict(router="softmax_topk"),
        dict(router_renormalize=False),
        dict(router_group_score_experts=1),  # V2's group score, its best expert alone
        dict(router_groups=1, router_groups_per_token=1, router_group_score_experts=1),
        dict(router_weight_scale=1.0),
    ):
        assert _differs(cfg, params, ref, **change), change
    cfg_unrolled, unrolled = hf.load(tmp_path / "zoo", scan_layers=False)
    assert np.abs(_zoo_logits(cfg_unrolled, unrolled, TOKENS) - ref).max() < 1e-4


def test_the_released_mtp_layer_is_left_unread_as_transformers_leaves_it(tmp_path):
    """DeepSeek-V3's checkpoint stores its multi-token-prediction module as model.layers.61 (README_WEIGHTS.md),
    which DeepseekV3ForCausalLM neither builds nor reads: a checkpoint with such a tensor loads, to the same logits."""
    from safetensors.numpy import load_file, save_file

    model = _hf_deepseek_v3()
    model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.61.eh_proj.weight"] = np.ones((48, 96), np.float32)
    save_file(tensors, path, metadata={"format": "pt"})
    cfg, params = hf.load(tmp_path)
    assert np.abs(_zoo_logits(cfg, params, TOKENS) - _hf_logits(model, TOKENS)).max() < 1e-4


def test_deepseek_v3_rope_in_halves(tmp_path):
    """rope_interleave false: apply_rotary_pos_emb's halves, the zoo's rope_interleaved false."""
    cfg, params, ref = _roundtrip("deepseek_v3 (halves)", _hf_deepseek_v3(rope_interleave=False), TOKENS, tmp_path)
    assert not cfg.rope_interleaved and _differs(cfg, params, ref, rope_interleaved=True)


def test_tiny_preset_through_its_hf_class(tmp_path):
    preset = get_config("deepseek-v3-tiny")
    assert hf.family_of(preset).model_type == "deepseek_v3"
    values = hf.config_to_hf(preset, "deepseek_v3")
    config = transformers.AutoConfig.for_model(
        values.pop("model_type"), **{**values, "initializer_range": 0.1}, attn_implementation="eager"
    )
    torch.manual_seed(0)
    model = transformers.DeepseekV3ForCausalLM(config).eval()
    cfg, _, _ = _roundtrip("deepseek-v3-tiny", model, _tokens(512, 48), tmp_path, family="deepseek_v3")
    untracked = ("init_scheme", "init_std", "load_balancing_multiplier", "load_balancing_per_sequence")
    assert cfg.replace(**{f: getattr(preset, f) for f in untracked}) == preset.replace(scan_layers=True)


def test_exact_total_and_active_counts_are_the_transformers_counts():
    """Total: numel of DeepseekV3ForCausalLM's parameters on the meta device (e_score_correction_bias is a buffer)
    == zoo.count_params == published 671,026,404,352; active: the routed experts scaled by 8/256. Less the input
    embedding, 36.6B: DeepSeek's 37B."""
    cfg = get_config("deepseek-v3")
    values = hf.config_to_hf(cfg, "deepseek_v3")
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    active = total - routed + routed * cfg.experts_per_token // cfg.num_experts
    assert count_params(cfg) == total == published("deepseek-v3").params
    assert count_params(cfg, active=True) == active == published("deepseek-v3").active
    assert round((active - cfg.vocab_size * cfg.d_model) / 1e9) == 37
    buffers = sum(b.numel() for n, b in model.named_buffers() if n.endswith("e_score_correction_bias"))
    assert buffers == (61 - 3) * 256  # what count_params leaves out


@pytest.mark.parametrize(
    "change, field",
    [
        ({"n_group": 0}, "n_group"),
        ({"rms_norm_eps": 1e-5}, "rms_norm_eps"),
        ({"num_key_value_heads": 2}, "num_key_value_heads"),
        ({"n_routed_experts": 4, "num_experts_per_tok": 5, "n_group": 1}, "num_experts_per_tok"),
    ],
)
def test_inexpressible_hf_config_names_the_field(tmp_path, change, field):
    assert_refused(tmp_path, "deepseek_v3", change, field)
