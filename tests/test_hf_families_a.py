"""Parity with Hugging Face transformers for GPT-NeoX/Pythia (gpt_neox), GPT-J (gptj), Gemma 3's text model
(gemma3_text) and Nemotron-4 (nemotron), with tests/test_hf.py's recipe: a tiny random HF model whose shapes make
every knob bind (partial rotary in both pair layouts, sequences longer than the sliding window, global-only RoPE
scaling, perturbed norm gains and nonzero biases), HF -> zoo -> HF logits to 1e-4; each -tiny preset through its
HF class; one refused config per family; and every named preset's exact parameter count against the
transformers class built on torch's meta device."""

import numpy as np
import pytest
from test_hf import _random_model, _roundtrip, _tokens, _zoo_logits, transformers
from test_hf_more import assert_exact_count, assert_refused, assert_tiny_preset_round_trips

from zoo.presets import family_presets

# Preset name prefix -> HF model_type.
MODEL_TYPES = {"gpt": "gpt_neox", "pythia": "gpt_neox", "gptj": "gptj", "gemma3": "gemma3_text", "nemotron": "nemotron"}


def _model_type(preset: str) -> str:
    return "gptj" if preset.startswith("gpt-j") else MODEL_TYPES[preset.split("-")[0]]


def _hf_model(config_cls, model_cls, **kw):
    config = getattr(transformers, config_cls)(
        **{"vocab_size": 128, "initializer_range": 0.1, "attn_implementation": "eager", **kw}
    )
    return _random_model(getattr(transformers, model_cls), config)


def _assert_zoo_binds(cfg, params, tokens, ref, **change):
    """The zoo with `change` gives other logits than HF: the knob matters in this test."""
    other = _zoo_logits(cfg.replace(**change), params, tokens)
    assert np.abs(other - ref).max() > 1e-2, f"{change} does not change the logits"


# -------------------------------------------------------------------------------------------- gpt_neox
@pytest.mark.parametrize("parallel, bias", [(True, True), (False, False)])
def test_gpt_neox(tmp_path, parallel, bias):
    """Two perturbed LayerNorms feeding a parallel residual (or the serial block); 4 of 16 head dims rotate in
    rotate-half pairs; q/k/v fused per head with nonzero biases; untied embed_out."""
    model = _hf_model(
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=96,
        num_hidden_layers=2,
        max_position_embeddings=64,
        rotary_pct=0.25,
        use_parallel_residual=parallel,
        attention_bias=bias,
    )
    tokens = _tokens(128, 24)
    cfg, params, ref = _roundtrip(f"gpt_neox (parallel={parallel})", model, tokens, tmp_path)
    # Two norms in the parallel block; the serial block leaves parallel_shared_norm unset (it does not apply).
    assert cfg.parallel_layers == parallel and cfg.parallel_shared_norm == (not parallel) and cfg.rope_fraction == 0.25
    assert cfg.attention_bias == bias and not cfg.tie_word_embeddings and cfg.norm_type == "layernorm"
    _assert_zoo_binds(cfg, params, tokens, ref, rope_fraction=0.5)
    _assert_zoo_binds(cfg, params, tokens, ref, rope_interleaved=True)
    if parallel:
        _assert_zoo_binds(cfg, params, tokens, ref, parallel_layers=False, parallel_shared_norm=True)


# ------------------------------------------------------------------------------------------------ gptj
def test_gptj(tmp_path):
    """One LayerNorm feeding both branches; interleaved RoPE on 6 of 16 head dims; biases on fc_in/fc_out and
    lm_head but not on q/k/v/out_proj."""
    model = _hf_model(
        "GPTJConfig", "GPTJForCausalLM", n_embd=64, n_head=4, n_layer=2, n_positions=64, n_inner=96, rotary_dim=6
    )
    assert model.lm_head.bias.abs().min() > 0 and model.transformer.h[0].attn.q_proj.bias is None
    tokens = _tokens(128, 24)
    cfg, params, ref = _roundtrip("gptj", model, tokens, tmp_path)
    assert cfg.rope_interleaved and cfg.rope_fraction == 6 / 16 and cfg.lm_head_bias and not cfg.attention_bias
    assert cfg.parallel_layers and cfg.parallel_shared_norm and cfg.mlp_bias
    _assert_zoo_binds(cfg, params, tokens, ref, rope_interleaved=False)
    _assert_zoo_binds(cfg, params, tokens, ref, rope_fraction=0.5)


# ---------------------------------------------------------------------------------------------- gemma3
def test_gemma3(tmp_path):
    """Five sliding layers (window 8, sequences of 24) to one global; RoPE base 100 on sliding layers, 1e4 with
    linear x8 on the global one only; perturbed per-head q/k norms; query_pre_attn_scalar 24 != head_dim."""
    rope = {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e4},
        "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
    }
    model = _hf_model(
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=40,
        num_hidden_layers=6,
        max_position_embeddings=64,
        sliding_window=8,
        query_pre_attn_scalar=24,
        rope_parameters=rope,
    )
    tokens = _tokens(128, 24)
    cfg, params, ref = _roundtrip("gemma3_text", model, tokens, tmp_path)
    assert cfg.attention_pattern == ("local",) * 5 + ("global",) and cfg.qk_norm == "per_head"
    assert (cfg.rope_theta, cfg.rope_local_theta, cfg.rope_scaling, cfg.rope_scaling_local) == (
        1e4,
        100.0,
        "linear",
        False,
    )
    _assert_zoo_binds(cfg, params, tokens, ref, rope_scaling_local=True)
    _assert_zoo_binds(cfg, params, tokens, ref, rope_scaling="none", rope_scaling_factor=1.0, rope_scaling_local=True)
    _assert_zoo_binds(cfg, params, tokens, ref, rope_local_theta=None)
    _assert_zoo_binds(cfg, params, tokens, ref, sliding_window_size=24)  # a window the sequence fits in


# -------------------------------------------------------------------------------------------- nemotron
@pytest.mark.parametrize("bias", [False, True])
def test_nemotron(tmp_path, bias):
    """LayerNorm1P (1 + w, with a bias; both perturbed); squared-ReLU MLP; 4 of 8 head dims rotate; 6 query heads
    over 2 kv heads; attention_bias and mlp_bias (false in the releases) put nonzero biases on every Linear."""
    model = _hf_model(
        "NemotronConfig",
        "NemotronForCausalLM",
        hidden_size=48,
        num_attention_heads=6,
        num_key_value_heads=2,
        intermediate_size=96,
        num_hidden_layers=2,
        max_position_embeddings=64,
        attention_bias=bias,
        mlp_bias=bias,
    )
    tokens = _tokens(128, 24)
    cfg, params, ref = _roundtrip(f"nemotron (bias={bias})", model, tokens, tmp_path)
    assert cfg.norm_type == "layernorm" and cfg.norm_scale_plus_one and cfg.norm_use_bias
    assert cfg.mlp_activations == ("squared_relu",) and cfg.rope_fraction == 0.5 and cfg.num_kv_heads == 2
    assert cfg.attention_bias == cfg.mlp_bias == bias
    _assert_zoo_binds(cfg, params, tokens, ref, norm_scale_plus_one=False)
    _assert_zoo_binds(cfg, params, tokens, ref, rope_fraction=1.0)


# ----------------------------------------------------------------------------------- the -tiny presets
@pytest.mark.parametrize("name", ["pythia-tiny", "gptj-tiny", "gemma3-tiny", "nemotron-tiny"])
def test_tiny_preset_through_its_hf_class(tmp_path, name):
    """Each family's -tiny preset as its HF class, sequences of 48 past Gemma 3's window of 32."""
    assert_tiny_preset_round_trips(tmp_path, name, _model_type(name))


# --------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "model_type, change, field",
    [
        # 96-dim heads (the 20B default) cannot rotate 30% of their dims: HF would truncate to 28.
        ("gpt_neox", {"rotary_pct": 0.3}, "rotary_pct"),
        # rotary_dim null rotates n_embd dims per head-sized slice in HF, which only works with one head.
        ("gptj", {"rotary_dim": None}, "rotary_dim"),
        (
            "gemma3_text",
            {
                "rope_parameters": {
                    "full_attention": {"rope_type": "longrope", "factor": 8.0, "rope_theta": 1e6},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                }
            },
            "rope_parameters.full_attention.rope_type",
        ),
        ("nemotron", {"partial_rotary_factor": 0.3}, "partial_rotary_factor"),
    ],
)
def test_inexpressible_hf_config_names_the_field(tmp_path, model_type, change, field):
    assert_refused(tmp_path, model_type, change, field)


# ------------------------------------------------------------------------------------ parameter counts
NAMED = [n for f in ("gpt_neox", "gptj", "gemma3", "nemotron") for n in family_presets(f) if not n.endswith("-tiny")]


@pytest.mark.parametrize("name", NAMED)
def test_exact_count_is_the_transformers_count(name):
    """zoo.count_params == numel of the HF class on the meta device == published (test_hf_more's check)."""
    assert_exact_count(name, _model_type(name))
