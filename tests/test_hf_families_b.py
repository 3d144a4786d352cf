"""Parity with Hugging Face transformers for OPT, BLOOM, Falcon and Cohere (Command R / R+ / A), with tests/test_hf.py's
recipe: a tiny random HF model whose shapes make each knob bind (OPT's position offset and opt-350m's projections
and post-norm, ALiBi over head counts that are not powers of two, Falcon's three query_key_value layouts, Cohere's
interleaved RoPE, logit scale and per-head q/k LayerNorms, Command A's windows shorter than the sequence), every
1-D parameter (norm gains, biases) perturbed, HF -> zoo -> HF logits to 1e-4; each -tiny preset through its HF
class; one refused config per family; every named preset's exact count against the class on torch's meta device."""

import numpy as np
import pytest
from test_hf import _random_model, _roundtrip, _tokens, _zoo_logits, transformers
from test_hf_more import assert_exact_count, assert_refused, assert_tiny_preset_round_trips

from zoo import hf
from zoo.presets import family_presets, get_config

# Preset name prefix -> HF model_type.
MODEL_TYPES = {
    "opt": "opt",
    "bloom": "bloom",
    "falcon": "falcon",
    "falcon2": "falcon",
    "command-r": "cohere",
    "command-r-plus": "cohere",
    "command-a": "cohere2",
}


def _model_type(preset: str) -> str:
    stem = preset.removesuffix("-tiny")
    return next(
        t
        for prefix, t in sorted(MODEL_TYPES.items(), key=lambda kv: -len(kv[0]))
        if stem == prefix or stem.startswith(prefix + "-")
    )


def _hf_model(arch: str, **kw):
    """A random `{arch}ForCausalLM` with vocabulary 128, initializer_range 0.1 and eager attention."""
    config = getattr(transformers, f"{arch}Config")(
        vocab_size=128, initializer_range=0.1, attn_implementation="eager", **kw
    )
    return _random_model(getattr(transformers, f"{arch}ForCausalLM"), config)


def _differs(cfg, params, tokens, ref, **change):
    """The zoo model with `change` gives other logits than HF's: the knob matters in this test."""
    return np.abs(_zoo_logits(cfg.replace(**change), params, tokens) - ref).max() > 1e-2


# -------------------------------------------------------------------------------------------------- opt
def test_opt_positions_at_offset_two(tmp_path):
    """Pre-norm OPT (125m's layout); position p reads row p + 2 of a 66-row table."""
    model, tokens = (
        _hf_model(
            "OPT",
            hidden_size=48,
            num_attention_heads=6,
            ffn_dim=40,
            num_hidden_layers=2,
            max_position_embeddings=64,
            init_std=0.1,
        ),
        _tokens(128, 24),
    )
    cfg, params, ref = _roundtrip("opt (pre-norm)", model, tokens, tmp_path)
    assert cfg.position_offset == 2 and params["position_embed"]["embedding"].shape == (66, 48)
    shifted = {**params, "position_embed": {"embedding": params["position_embed"]["embedding"][2:]}}
    np.testing.assert_allclose(_zoo_logits(cfg.replace(position_offset=0), shifted, tokens), ref, atol=1e-4)
    assert _differs(cfg.replace(max_seq_len=66), params, tokens, ref, position_offset=0)


def test_opt_350m_post_norm_and_projections(tmp_path):
    """opt-350m's layout: a 24-wide tied embedding, project_in/out to and from the 48-wide stream, norms after
    each sublayer and no final norm."""
    model, tokens = (
        _hf_model(
            "OPT",
            hidden_size=48,
            word_embed_proj_dim=24,
            do_layer_norm_before=False,
            num_attention_heads=6,
            ffn_dim=40,
            num_hidden_layers=2,
            max_position_embeddings=64,
            init_std=0.1,
        ),
        _tokens(128, 24),
    )
    cfg, params, _ = _roundtrip("opt (350m layout)", model, tokens, tmp_path)
    assert (cfg.embedding_dim, cfg.norm_position, cfg.final_norm) == (24, "post", False)
    assert params["project_in"]["kernel"].shape == (24, 48) and params["project_out"]["kernel"].shape == (48, 24)


# ------------------------------------------------------------------------------------------------ bloom
@pytest.mark.parametrize("heads", [6, 5])
def test_bloom_alibi_embedding_norm(tmp_path, heads):
    """ALiBi with 6 and 5 heads (not powers of two: the interleaved extra slopes), the embedding LayerNorm,
    query_key_value fused per head with nonzero biases."""
    model, tokens = _hf_model("Bloom", hidden_size=heads * 8, n_head=heads, n_layer=2), _tokens(128, 24)
    cfg, params, ref = _roundtrip(f"bloom ({heads} heads)", model, tokens, tmp_path)
    assert cfg.position_embedding == "alibi" and cfg.embedding_norm and cfg.num_heads == heads
    assert _differs(cfg, params, tokens, ref, position_embedding="none")
    assert _differs(cfg, {k: v for k, v in params.items() if k != "embed_norm"}, tokens, ref, embedding_norm=False)


# ----------------------------------------------------------------------------------------------- falcon
FALCON = {  # layout -> (HF fields, the zoo's num_kv_heads and parallel_shared_norm)
    "7b (MQA, one norm)": (dict(new_decoder_architecture=False, multi_query=True), (1, True)),
    "rw-style (MHA, one norm)": (dict(new_decoder_architecture=False, multi_query=False), (6, True)),
    "40b (GQA, two norms)": (dict(new_decoder_architecture=True, num_kv_heads=2), (2, False)),
    "11b (GQA, one norm, untied)": (
        dict(new_decoder_architecture=True, num_kv_heads=2, num_ln_in_parallel_attn=1, tie_word_embeddings=False),
        (2, True),
    ),
}


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layout", FALCON)
def test_falcon_layouts(tmp_path, layout, bias):
    """The three query_key_value layouts (per head, multi-query, per key/value group) with 6 query heads, one
    norm or two, RoPE at theta 500042; `bias` (false in every release) puts biases on every projection."""
    fields, (kv, shared) = FALCON[layout]
    model = _hf_model(
        "Falcon",
        hidden_size=48,
        num_attention_heads=6,
        num_hidden_layers=2,
        ffn_hidden_size=40,
        max_position_embeddings=64,
        bias=bias,
        rope_theta=500042.0,
        **fields,
    )
    cfg, _, _ = _roundtrip(f"falcon {layout} bias={bias}", model, _tokens(128, 24), tmp_path)
    assert (cfg.num_kv_heads, cfg.parallel_shared_norm, cfg.attention_bias) == (kv, shared, bias)
    assert cfg.parallel_layers and cfg.rope_theta == 500042.0


# ----------------------------------------------------------------------------------------------- cohere
@pytest.mark.parametrize("qk_norm", [False, True])
def test_cohere(tmp_path, qk_norm):
    """Command R (qk_norm false) and R+ (per-head q/k LayerNorms with [heads, head_dim] gains): 6 query heads over
    2 kv heads, interleaved RoPE and logit_scale both binding."""
    model, tokens = (
        _hf_model(
            "Cohere",
            hidden_size=48,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=40,
            num_hidden_layers=2,
            max_position_embeddings=64,
            logit_scale=0.25,
            use_qk_norm=qk_norm,
        ),
        _tokens(128, 24),
    )
    cfg, params, ref = _roundtrip(f"cohere (qk_norm={qk_norm})", model, tokens, tmp_path)
    assert cfg.rope_interleaved and cfg.logits_scale == 0.25 and cfg.parallel_layers and not cfg.norm_use_bias
    assert cfg.qk_norm == ("per_head_untied" if qk_norm else "none")
    if qk_norm:
        assert params["decoder"]["cycles"]["block_0"]["attention"]["key_norm"]["scale"].shape == (2, 2, 8)
    assert _differs(cfg, params, tokens, ref, rope_interleaved=False)
    assert _differs(cfg, params, tokens, ref, logits_scale=None)


def test_cohere2_windows_and_nope_layers(tmp_path):
    """Command A: layers 0-2 slide (window 8, RoPE) and layer 3 attends globally without positions, sequences
    of 24; 8 layers, so the cycle of 4 repeats."""
    model, tokens = (
        _hf_model(
            "Cohere2",
            hidden_size=48,
            num_attention_heads=6,
            num_key_value_heads=2,
            intermediate_size=40,
            num_hidden_layers=8,
            max_position_embeddings=64,
            sliding_window=8,
            logit_scale=0.5,
        ),
        _tokens(128, 24),
    )
    cfg, params, ref = _roundtrip("cohere2", model, tokens, tmp_path)
    assert cfg.attention_pattern == ("local", "local", "local", "global_nope") and cfg.sliding_window_size == 8
    assert _differs(cfg, params, tokens, ref, attention_pattern=("local", "local", "local", "global"))
    assert _differs(cfg, params, tokens, ref, sliding_window_size=24)


# ----------------------------------------------------------------------------------- the -tiny presets
TINY = ["opt-tiny", "bloom-tiny", "falcon-tiny", "command-r-plus-tiny", "command-a-tiny"]


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_through_its_hf_class(tmp_path, name):
    """Each -tiny preset as its HF class, sequences of 48 past Command A's window of 32."""
    assert_tiny_preset_round_trips(tmp_path, name, _model_type(name))


# --------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "model_type, change, field",
    [
        ("opt", {"layer_norm_elementwise_affine": False}, "layer_norm_elementwise_affine"),
        ("bloom", {"apply_residual_connection_post_layernorm": True}, "apply_residual_connection_post_layernorm"),
        # Falcon-RW: ALiBi scaled by 1/sqrt(head_dim), a serial block.
        ("falcon", {"alibi": True}, "alibi"),
        ("falcon", {"new_decoder_architecture": True, "num_ln_in_parallel_attn": 3}, "num_ln_in_parallel_attn"),
        (
            "cohere",
            {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4, "factor": 4.0}},
            "rope_parameters.rope_type",
        ),
        ("cohere2", {"num_hidden_layers": 2, "layer_types": ["sliding_attention", "chunked_attention"]}, "layer_types"),
    ],
)
def test_inexpressible_hf_config_names_the_field(tmp_path, model_type, change, field):
    assert_refused(tmp_path, model_type, change, field)


def test_cohere2_cannot_save_global_layers_with_positions():
    cfg = get_config("command-a-tiny", attention_pattern=("local", "local", "local", "global"))
    with pytest.raises(ValueError, match="attention_pattern"):
        hf.config_to_hf(cfg, "cohere2")


# ------------------------------------------------------------------------------------ parameter counts
NAMED = [n for f in ("opt", "bloom", "falcon", "cohere") for n in family_presets(f) if not n.endswith("-tiny")]


@pytest.mark.parametrize("name", NAMED)
def test_exact_count_is_the_transformers_count(name):
    """zoo.count_params == numel of the HF class on the meta device == published (test_hf_more's check)."""
    assert_exact_count(name, _model_type(name))
