"""Parity with Hugging Face transformers for the mixture-of-experts families: Mixtral, Qwen2-MoE (Qwen1.5-MoE,
Qwen2-57B-A14B), Qwen3-MoE and OLMoE, with tests/test_hf.py's recipe: a tiny random HF model whose shapes make each
knob bind (5-7 experts, 2-3 per token, dense layers between MoE ones, a window shorter than the sequence, a gated
shared expert, q/k norms over the whole projection), every 1-D parameter perturbed, HF -> zoo -> HF logits to 1e-4;
a changed router detail (renormalisation, the shared expert's gate) changes the logits; each -tiny preset through
its HF class; one refused config per family; every named preset's exact total and active counts against the class
built on torch's meta device, and the published active counts."""

import numpy as np
import pytest
from safetensors import safe_open
from test_hf import _hf_logits, _random_model, _roundtrip, _tokens, _zoo_logits, torch, transformers
from test_hf_more import assert_refused

import zoo
from zoo import count_params, hf
from zoo.hf import families
from zoo.presets import family_presets, get_config, published
from zoo.semantics import semantic_differences

BASE = dict(
    vocab_size=128, num_hidden_layers=2, max_position_embeddings=64, initializer_range=0.1, attn_implementation="eager"
)
TOKENS = _tokens(128, 24)  # 24 positions: past Mixtral's window of 8; 48 tokens over 5-7 experts, every one used


def _hf_model(arch: str, **kw):
    """A random `{arch}ForCausalLM` on BASE + kw; its routers and experts drawn at initializer_range 0.1."""
    config = getattr(transformers, f"{arch}Config")(**{**BASE, **kw})
    model = _random_model(getattr(transformers, f"{arch}ForCausalLM"), config)
    for name, p in model.named_parameters():
        if "mlp.gate" in name or "experts" in name:  # not left at HF's zeros/empty: routing must be decided
            assert 0.05 < float(p.detach().std()) < 0.2, name
    return model


def _differs(cfg, params, ref, **change):
    """The zoo model with `change` gives other logits than HF's: the knob matters in this test."""
    return np.abs(_zoo_logits(cfg.replace(**change), params, TOKENS) - ref).max() > 1e-2


def _block(params, j=0):
    return params["decoder"]["cycles"][f"block_{j}"]


# ------------------------------------------------------------------------------------------------ mixtral
def test_mixtral_router_window_gqa(tmp_path):
    """5 experts, 3 per token, renormalised; window 8 on every layer; 6 query heads over 2 kv heads."""
    model = _hf_model(
        "Mixtral",
        hidden_size=48,
        intermediate_size=40,
        num_attention_heads=6,
        num_key_value_heads=2,
        num_local_experts=5,
        num_experts_per_tok=3,
        sliding_window=8,
    )
    cfg, params, ref = _roundtrip("mixtral", model, TOKENS, tmp_path)
    assert (cfg.num_experts, cfg.experts_per_token, cfg.d_expert, cfg.moe_pattern) == (5, 3, 40, ("moe",))
    assert (cfg.router, cfg.router_renormalize, cfg.attention_pattern) == ("softmax_topk", True, ("local",))
    assert _block(params)["moe"]["wi_0"]["kernel"].shape == (2, 5, 48, 40)
    assert _differs(cfg, params, ref, router_renormalize=False)
    assert _differs(cfg, params, ref, sliding_window_size=24)
    # The paper's router, a softmax over the k best logits, is the same function.
    paper = cfg.replace(router="topk_softmax", router_renormalize=False)
    np.testing.assert_allclose(_zoo_logits(paper, params, TOKENS), ref, atol=1e-4)


def test_mixtral_greedy_generation_equals_hf_generate(tmp_path):
    """zoo.generate through its KV cache (ring buffers for the window of 8) picks the tokens HF's generate picks:
    30 new tokens past the window, 2 prompts, 4 experts with 2 per token."""
    model = _hf_model(
        "Mixtral",
        hidden_size=32,
        intermediate_size=24,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=8,
    )
    model.save_pretrained(tmp_path / "hf")
    cfg, params = hf.load(tmp_path / "hf")
    prompt = TOKENS[0][:, :6]
    with torch.no_grad():
        ref = model.generate(
            torch.tensor(np.asarray(prompt)), max_new_tokens=30, do_sample=False, min_new_tokens=30, pad_token_id=0
        ).numpy()
    ours = np.asarray(zoo.generate(zoo.build(cfg), params, prompt, 30))
    np.testing.assert_array_equal(ours, ref)


# ---------------------------------------------------------------------------------------------- qwen2_moe
def test_qwen2_moe_shared_expert_dense_layers_biases(tmp_path):
    """6 experts, 3 per token, not renormalised, beside a gated shared expert of width 28; layers 1 and 3 dense
    (mlp_only_layers) of width 40, so moe_pattern is (moe, dense); q/k/v biases; 6 query heads over 2 kv heads."""
    model = _hf_model(
        "Qwen2Moe",
        hidden_size=48,
        intermediate_size=40,
        num_attention_heads=6,
        num_key_value_heads=2,
        num_hidden_layers=4,
        num_experts=6,
        num_experts_per_tok=3,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=28,
        mlp_only_layers=[1, 3],
    )
    cfg, params, ref = _roundtrip("qwen2_moe", model, TOKENS, tmp_path)
    assert cfg.moe_pattern == ("moe", "dense") and (cfg.d_ff, cfg.d_expert, cfg.shared_expert_d_ff) == (40, 24, 28)
    assert cfg.shared_expert_gate and not cfg.router_renormalize and cfg.attention_bias and not cfg.attention_out_bias
    assert set(_block(params, 0)) >= {"moe"} and "mlp" not in _block(params, 0) and "moe" not in _block(params, 1)
    assert _block(params, 1)["mlp"]["wi_0"]["kernel"].shape == (2, 48, 40)
    assert _differs(cfg, params, ref, router_renormalize=True)
    assert _differs(cfg, params, ref, shared_expert_gate=False)
    saved = hf.config_to_hf(cfg, "qwen2_moe")
    assert (saved["decoder_sparse_step"], saved["mlp_only_layers"]) == (1, [1, 3])


@pytest.mark.parametrize(
    "fields, prefix, pattern, back",
    [
        ({"decoder_sparse_step": 2}, 0, ("dense", "moe"), (2, [])),
        ({"decoder_sparse_step": 3}, 0, ("dense", "dense", "moe"), (3, [])),
        ({"mlp_only_layers": [0]}, 1, ("moe",), (1, [0])),
        ({"mlp_only_layers": [0, 1]}, 2, ("moe",), (1, [0, 1])),
        ({"decoder_sparse_step": 2, "mlp_only_layers": [1]}, 2, ("dense", "moe"), (1, [0, 1, 2, 4])),
        ({"mlp_only_layers": [1]}, 0, ("moe", "dense", "moe", "moe", "moe", "moe"), (1, [1])),  # no shorter period
        (
            {"decoder_sparse_step": 2, "mlp_only_layers": [3]},
            0,
            ("dense", "moe", "dense", "dense", "dense", "moe"),
            None,
        ),
    ],
)
def test_sparse_layers_as_moe_pattern(fields, prefix, pattern, back):
    """HF's rule (layer i has experts unless listed in mlp_only_layers or (i + 1) % decoder_sparse_step) over 6
    layers as dense_prefix_layers and moe_pattern (the shortest pattern, after the shortest dense prefix that
    allows it), and back: a step where the pattern is one, else the dense layers listed."""
    cfg = hf.config_from_hf({"model_type": "qwen2_moe", "num_hidden_layers": 6, **fields})
    assert (cfg.dense_prefix_layers, cfg.moe_pattern) == (prefix, pattern)
    saved = hf.config_to_hf(cfg, "qwen2_moe")
    if back is not None:
        assert (saved["decoder_sparse_step"], saved["mlp_only_layers"]) == back
    again = hf.config_from_hf(saved)
    assert (again.dense_prefix_layers, again.moe_pattern) == (prefix, pattern)


def test_dense_prefix_layers_both_ways_scanned_and_unrolled(tmp_path):
    """mlp_only_layers [0, 1] of 4 layers: dense_prefix_layers 2 and every later layer MoE, the prefix scanned as
    a group of its own (prefix_cycles); HF -> zoo -> HF logits to 1e-4, and the unrolled layout loads equal."""
    model = _hf_model(
        "Qwen2Moe",
        hidden_size=32,
        intermediate_size=40,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=4,
        num_experts=5,
        num_experts_per_tok=2,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=20,
        mlp_only_layers=[0, 1],
    )
    cfg, params, ref = _roundtrip("qwen2_moe", model, TOKENS, tmp_path)
    assert (cfg.dense_prefix_layers, cfg.moe_pattern, cfg.cycle_length) == (2, ("moe",), 1)
    prefix, rest = params["decoder"]["prefix_cycles"]["block_0"], _block(params)
    assert prefix["mlp"]["wi_0"]["kernel"].shape == (2, 32, 40) and "moe" not in prefix
    assert rest["moe"]["wi_0"]["kernel"].shape == (2, 5, 32, 24) and "mlp" not in rest
    cfg_unrolled, unrolled = hf.load(tmp_path / "zoo", scan_layers=False)
    assert {"prefix_cycle_0", "prefix_cycle_1", "cycle_0", "cycle_1"} <= set(unrolled["decoder"])
    assert np.abs(_zoo_logits(cfg_unrolled, unrolled, TOKENS) - ref).max() < 1e-4
    hf.save(cfg_unrolled, unrolled, tmp_path / "unrolled")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "unrolled", attn_implementation="eager")
    assert np.abs(_hf_logits(back.eval(), TOKENS) - ref).max() < 1e-4


# ---------------------------------------------------------------------------------------------- qwen3_moe
def test_qwen3_moe_every_other_layer_renormalised(tmp_path):
    """7 experts, 2 per token, renormalised (norm_topk_prob); decoder_sparse_step 2 over 4 layers (dense, moe);
    per-head q/k norms with head_dim 16 over 5 heads != d_model 32; one kv head."""
    model = _hf_model(
        "Qwen3Moe",
        hidden_size=32,
        intermediate_size=40,
        num_attention_heads=5,
        num_key_value_heads=1,
        head_dim=16,
        num_hidden_layers=4,
        num_experts=7,
        num_experts_per_tok=2,
        moe_intermediate_size=24,
        norm_topk_prob=True,
        decoder_sparse_step=2,
    )
    cfg, params, ref = _roundtrip("qwen3_moe", model, TOKENS, tmp_path)
    assert cfg.moe_pattern == ("dense", "moe") and cfg.router_renormalize and cfg.shared_expert_d_ff == 0
    assert cfg.qk_norm == "per_head" and _block(params, 1)["attention"]["key_norm"]["scale"].shape == (2, 16)
    assert _differs(cfg, params, ref, router_renormalize=False)
    assert hf.config_to_hf(cfg, "qwen3_moe")["num_experts"] == 7


# -------------------------------------------------------------------------------------------------- olmoe
def test_olmoe_full_qk_norm(tmp_path):
    """6 experts, 3 per token, not renormalised; q/k RMSNorms over the whole projection, k's narrower (GQA 3:1)."""
    model = _hf_model(
        "Olmoe",
        hidden_size=48,
        intermediate_size=24,
        num_attention_heads=6,
        num_key_value_heads=2,
        num_experts=6,
        num_experts_per_tok=3,
        pad_token_id=None,
        eos_token_id=None,
    )
    cfg, params, ref = _roundtrip("olmoe", model, TOKENS, tmp_path)
    assert (cfg.qk_norm, cfg.router_renormalize, cfg.d_expert) == ("full", False, 24)
    assert _block(params)["attention"]["key_norm"]["scale"].shape == (2, 2, 8)
    assert _differs(cfg, params, ref, router_renormalize=True)


# ------------------------------------------------------------------------------------------ fused checkpoints
@pytest.mark.parametrize(
    "arch, kw",
    [
        ("Mixtral", dict(num_local_experts=4, num_experts_per_tok=2)),  # per expert: block_sparse_moe, fused: mlp
        (
            "Qwen2Moe",
            dict(num_experts=4, num_experts_per_tok=2, decoder_sparse_step=2, shared_expert_intermediate_size=24),
        ),
    ],
)
def test_fused_expert_checkpoints_load(tmp_path, arch, kw):
    """transformers 5's own layout, save_pretrained(save_original_format=False): experts.gate_up_proj [E, 2f, d] and
    experts.down_proj [E, d, f] load as well (Qwen2-MoE: its first MoE layer is layer 1)."""
    model = _hf_model(arch, hidden_size=32, intermediate_size=40, num_attention_heads=4, num_key_value_heads=2, **kw)
    model.save_pretrained(tmp_path, save_original_format=False)
    assert any(name.endswith("mlp.experts.gate_up_proj") for name in _safetensors_names(tmp_path))
    cfg, params = hf.load(tmp_path)
    np.testing.assert_allclose(_zoo_logits(cfg, params, TOKENS), _hf_logits(model, TOKENS), atol=1e-4)


def _safetensors_names(directory):
    with safe_open(directory / "model.safetensors", "np") as f:
        return list(f.keys())


# ------------------------------------------------------------------------------------------ configs, both ways
@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"])
def test_absent_fields_take_the_class_defaults(model_type):
    """A config.json that leaves every field out means what transformers' class defaults say."""
    written = transformers.AutoConfig.for_model(model_type).to_dict()
    assert semantic_differences(hf.config_from_hf({"model_type": model_type}), hf.config_from_hf(written)) == []


@pytest.mark.parametrize(
    "model_type, change, field",
    [
        ("mixtral", {"num_local_experts": 4, "num_experts_per_tok": 5}, "num_experts_per_tok"),
        ("qwen2_moe", {"num_hidden_layers": 2, "mlp_only_layers": [0, 1]}, "mlp_only_layers"),
        ("qwen2_moe", {"num_experts": 0}, "num_experts"),
        # transformers 5 puts the window on every layer, 4.x only from max_window_layers on.
        ("qwen3_moe", {"use_sliding_window": True, "sliding_window": 4096}, "use_sliding_window"),
        ("qwen3_moe", {"decoder_sparse_step": 0}, "decoder_sparse_step"),
        ("olmoe", {"clip_qkv": 8.0}, "clip_qkv"),
        ("olmoe", {"head_dim": 64}, "head_dim"),
    ],
)
def test_inexpressible_hf_config_names_the_field(tmp_path, model_type, change, field):
    assert_refused(tmp_path, model_type, change, field)


@pytest.mark.parametrize(
    "name, change, family, field",
    [
        ("mixtral-tiny", {"moe_pattern": ("moe", "dense")}, "mixtral", "moe_pattern"),
        ("mixtral-tiny", {"router_renormalize": False}, "mixtral", "router_renormalize"),
        ("mixtral-tiny", {"d_expert": 96}, "mixtral", "d_ff"),  # HF has one width
        ("qwen3-moe-tiny", {"shared_expert_d_ff": 32}, "qwen3_moe", "shared_expert_d_ff"),
        ("qwen2-moe-tiny", {"shared_expert_gate": False}, "qwen2_moe", "shared_expert_gate"),
        ("olmoe-tiny", {"capacity_factor": 1.25}, "olmoe", "capacity_factor"),  # HF is dropless
    ],
)
def test_save_refuses_what_the_family_cannot_express(name, change, family, field):
    with pytest.raises(ValueError, match=f"ModelConfig.{field}="):
        hf.config_to_hf(get_config(name, **change), family)


# ------------------------------------------------------------------------------------------ the -tiny presets
TINY = {"mixtral-tiny": "mixtral", "qwen2-moe-tiny": "qwen2_moe", "qwen3-moe-tiny": "qwen3_moe", "olmoe-tiny": "olmoe"}


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_through_its_hf_class(tmp_path, name):
    """Each -tiny preset as a random model of its HF class, sequences of 48; the same config back, but for what HF
    configs do not carry: the init scheme and the router z-loss weight (OLMoE's)."""
    preset = get_config(name)
    assert hf.family_of(preset).model_type == TINY[name]
    values = hf.config_to_hf(preset, TINY[name])
    config = transformers.AutoConfig.for_model(
        values.pop("model_type"), **{**values, "initializer_range": 0.1}, attn_implementation="eager"
    )
    model = _random_model(getattr(transformers, values["architectures"][0]), config)
    cfg, _, _ = _roundtrip(name, model, _tokens(512, 48), tmp_path, family=TINY[name])
    untracked = ("init_scheme", "init_std", "router_z_loss_multiplier")
    back = cfg.replace(**{field: getattr(preset, field) for field in untracked})
    assert back == preset.replace(scan_layers=True)


# -------------------------------------------------------------------------------------------- parameter counts
# Active parameters per token: total - routed experts x (1 - k/E), embedding, head, shared experts included.
ACTIVE = {
    "mixtral-8x7b": 12_879_925_248,
    "mixtral-8x22b": 39_161_468_928,
    "qwen1.5-moe-a2.7b": 2_689_173_504,
    "qwen2-57b-a14b": 14_249_270_784,
    "qwen3-30b-a3b": 3_353_032_704,
    "qwen3-235b-a22b": 22_190_763_520,
    "olmoe-1b-7b": 1_282_017_280,
}
MODEL_TYPES = {
    "mixtral": "mixtral",
    "qwen1.5": "qwen2_moe",
    "qwen2": "qwen2_moe",
    "qwen3": "qwen3_moe",
    "olmoe": "olmoe",
}
NAMED = [n for f in ("mixtral", "qwen_moe", "olmoe") for n in family_presets(f) if not n.endswith("-tiny")]


def test_every_named_preset_is_counted():
    assert sorted(NAMED) == sorted(ACTIVE)


@pytest.mark.parametrize("name", NAMED)
def test_exact_total_and_active_counts_are_the_transformers_counts(name):
    """Total: numel of the HF class on the meta device == zoo.count_params == published. Active: the same model's
    parameters with every routed expert's (names with `experts.`, not the shared expert) scaled by k/E."""
    cfg = get_config(name)
    values = hf.config_to_hf(cfg, MODEL_TYPES[name.split("-")[0]])
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == values["architectures"][0]
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if "experts." in n and "shared" not in n)
    active = total - routed + routed * cfg.experts_per_token // cfg.num_experts
    print(f"count {name:18s} total {total:,} active {active:,}")  # shown with -s
    assert count_params(cfg) == total == published(name).params
    assert count_params(cfg, active=True) == active == published(name).active == ACTIVE[name]


# ------------------------------------------------------------------------------------------------ fine-tuning
def test_init_hf_takes_the_family_recipe_and_router_losses(tmp_path):
    """init.hf of an OLMoE checkpoint whose config says router_aux_loss_coef 0.01 (as the released one): the model
    is the checkpoint's, the recipe and the router-loss weights configs/olmoe.yaml's (tests/test_finetune.py trains
    every family)."""
    from zoo.train.init import resolve_from_weights
    from zoo.train.tokenizer import ByteTokenizer

    values = {**hf.config_to_hf(get_config("olmoe-tiny", d_ff=48), "olmoe"), "router_aux_loss_coef": 0.01}
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "hf")
    ByteTokenizer(0).save(tmp_path / "hf")
    checkpoint, _ = hf.load_config(tmp_path / "hf")
    assert checkpoint.load_balancing_multiplier == 0.01
    run = resolve_from_weights([f"init.hf={tmp_path / 'hf'}", f"run.dir={tmp_path / 'run'}"])
    assert semantic_differences(run.model, checkpoint) == [] and run.model.d_expert == 48
    assert (run.model.load_balancing_multiplier, run.model.router_z_loss_multiplier) == (0.00125, 0.000125)
    assert (run.train.learning_rate, run.train.warmup_steps) == (4.0e-4, 2500)


def test_families_are_registered_after_their_dense_relatives():
    order = list(families.FAMILIES)
    for dense, moe in (("mistral", "mixtral"), ("qwen2", "qwen2_moe"), ("qwen3", "qwen3_moe"), ("olmo2", "olmoe")):
        assert order.index(moe) == order.index(dense) + 1
