"""Parity with transformers' DbrxForCausalLM, with tests/test_hf.py's recipe: tiny random HF models with odd shapes
(6 heads over 2 kv heads of width 6, 5 experts choose 3 of width 20), every 1-D parameter (the LayerNorm gains)
perturbed, HF -> zoo -> HF logits to 1e-4 fp32, with clip_qkv and the router's renormalisation shown to bind;
dbrx-tiny through the HF class; the released config.json read as the dbrx preset; refused configs; dbrx's exact
total and active counts against the class on torch's meta device."""

import numpy as np
import pytest
from test_hf import _random_model, _roundtrip, _tokens, _zoo_logits, torch, transformers
from test_hf_more import assert_exact_count, assert_refused

from zoo import count_params, hf
from zoo.presets import get_config, published
from zoo.semantics import semantic_differences

# databricks/dbrx @ a320039, model/config.json, as released (auto_map and the attn/ffn model_type "" left out).
RELEASED = {
    "architectures": ["DbrxForCausalLM"],
    "attn_config": {"clip_qkv": 8, "kv_n_heads": 8, "rope_theta": 500000},
    "d_model": 6144,
    "emb_pdrop": 0.0,
    "ffn_config": {
        "ffn_hidden_size": 10752,
        "moe_jitter_eps": 0,
        "moe_loss_weight": 0.05,
        "moe_num_experts": 16,
        "moe_top_k": 4,
    },
    "initializer_range": 0.02,
    "max_seq_len": 32768,
    "model_type": "dbrx",
    "n_heads": 48,
    "n_layers": 40,
    "output_router_logits": False,
    "resid_pdrop": 0.0,
    "router_aux_loss_coef": 0.05,
    "tie_word_embeddings": False,
    "use_cache": True,
    "vocab_size": 100352,
}


def _differs(cfg, params, tokens, ref, **change):
    """The zoo model with `change` gives other logits than HF's: the knob matters in this test."""
    return np.abs(_zoo_logits(cfg.replace(**change), params, tokens) - ref).max() > 1e-2


def _dbrx(normalize=1.0, clip=0.5):
    """d_model 36 = 6 heads of 6 over 2 kv heads, 3 layers of 5 experts choose 3 (width 20), RoPE base 500. clip 0.5
    binds on most q/k/v entries at initializer_range 0.3. transformers 5.25's DbrxAttention reads
    attn_config.rope_theta (and fails without it) while its rotary embedding reads rope_parameters: both given."""
    config = transformers.DbrxConfig(
        vocab_size=96,
        d_model=36,
        n_heads=6,
        n_layers=3,
        max_seq_len=64,
        initializer_range=0.3,
        attn_config={"kv_n_heads": 2, "clip_qkv": clip, "rope_theta": 500.0},
        ffn_config={
            "ffn_hidden_size": 20,
            "moe_num_experts": 5,
            "moe_top_k": 3,
            "moe_normalize_expert_weights": normalize,
        },
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        attn_implementation="eager",
    )
    return _random_model(transformers.DbrxForCausalLM, config)


@pytest.mark.parametrize("normalize", [1.0, None])
def test_dbrx_odd_shapes(tmp_path, normalize):
    tokens = _tokens(96, 24)
    cfg, params, ref = _roundtrip(f"dbrx (normalize {normalize})", _dbrx(normalize), tokens, tmp_path)
    assert (cfg.norm_type, cfg.norm_use_bias, cfg.tie_word_embeddings) == ("layernorm", False, False)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rope_theta, cfg.clip_qkv) == (6, 2, 6, 500.0, 0.5)
    assert (cfg.num_experts, cfg.experts_per_token, cfg.d_expert, cfg.router) == (5, 3, 20, "softmax_topk")
    assert cfg.router_renormalize == (normalize is not None)
    assert _differs(cfg, params, tokens, ref, clip_qkv=None)
    assert _differs(cfg, params, tokens, ref, router_renormalize=not cfg.router_renormalize)
    # The experts are saved fused, as DBRX stores them.
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "zoo")
    assert tuple(model.transformer.blocks[0].ffn.experts.mlp.w2.shape) == (5 * 20, 36)
    assert tuple(model.transformer.blocks[0].norm_attn_norm.attn.Wqkv.weight.shape) == ((6 + 2 * 2) * 6, 36)


def test_dbrx_tiny_through_its_hf_class(tmp_path):
    """dbrx-tiny as a random DbrxForCausalLM, the value rows of Wqkv scaled up so that the preset's clip_qkv of 8
    binds (on v: q and k that large would saturate the softmax, where fp32 rounding alone moves logits by 1e-3);
    HF -> zoo -> HF, the same config back."""
    preset = get_config("dbrx-tiny")
    values = hf.config_to_hf(preset, "dbrx")
    config = transformers.AutoConfig.for_model(
        values.pop("model_type"), **{**values, "initializer_range": 0.1}, attn_implementation="eager"
    )
    model = _random_model(transformers.DbrxForCausalLM, config)
    values_from = (preset.num_heads + preset.num_kv_heads) * preset.head_dim  # Wqkv rows: q, k, then v
    with torch.no_grad():
        for block in model.transformer.blocks:
            block.norm_attn_norm.attn.Wqkv.weight[values_from:].mul_(8.0)
    tokens = _tokens(512, 48)
    cfg, params, ref = _roundtrip("dbrx-tiny", model, tokens, tmp_path, family="dbrx")
    assert cfg.replace(init_std=preset.init_std) == preset.replace(scan_layers=True)
    assert _differs(cfg, params, tokens, ref, clip_qkv=None)


def test_released_config_is_the_dbrx_preset():
    """config.json's RoPE base is attn_config.rope_theta (500000), as DBRX's own code and transformers 4.x read it
    (transformers 5.25 builds this file with its default base, 10000: it reads only rope_parameters)."""
    cfg = hf.config_from_hf(RELEASED)
    assert semantic_differences(cfg, get_config("dbrx")) == []
    assert (cfg.rope_theta, cfg.clip_qkv, cfg.load_balancing_multiplier, cfg.router_jitter) == (5e5, 8.0, 0.05, 0.0)


def test_dbrx_exact_counts():
    """Total: zoo == DbrxForCausalLM on the meta device, built both from the released config.json and from the
    preset's export; active: the routed experts' share k / E of the meta model's expert tensors, the rest whole."""
    assert_exact_count("dbrx", "dbrx")
    values = {k: v for k, v in RELEASED.items() if k not in ("architectures", "model_type")}
    with torch.device("meta"):
        model = transformers.DbrxForCausalLM(transformers.DbrxConfig(**values))
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for name, p in model.named_parameters() if ".ffn.experts." in name)
    active = total - experts + experts * 4 // 16
    cfg, record = get_config("dbrx"), published("dbrx")
    assert (total, active) == (record.params, record.active) == (count_params(cfg), count_params(cfg, active=True))
    assert (total, active) == (131_596_523_520, 36_469_708_800)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"ffn_config": {"moe_normalize_expert_weights": 2.0}}, "ffn_config.moe_normalize_expert_weights"),
        (
            {"attn_config": {"rope_theta": 500000}, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}},
            "attn_config.rope_theta",
        ),
        ({"ffn_config": {"uniform_expert_assignment": True}}, "ffn_config.uniform_expert_assignment"),
        ({"tie_word_embeddings": True}, "tie_word_embeddings"),
    ],
)
def test_inexpressible_dbrx_config_names_the_field(tmp_path, change, field):
    assert_refused(tmp_path, "dbrx", change, field)


def test_clip_qkv_is_saved_only_as_dbrx():
    """No other family clamps q, k and v: a LLaMA config with clip_qkv has no HF family, and the error names it."""
    with pytest.raises(ValueError, match="clip_qkv"):
        hf.config_to_hf(get_config("llama-tiny").replace(clip_qkv=4.0))
