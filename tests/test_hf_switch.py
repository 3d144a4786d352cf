"""Parity with Hugging Face transformers for the Switch Transformer (switch_transformers), with tests/test_hf.py's
recipe: a tiny random SwitchTransformersForConditionalGeneration whose shapes make each knob bind (5-6 experts, top-1,
a router bias, experts in every other layer of a 4-layer encoder and a 6-layer decoder, heads x d_kv != d_model,
T5 buckets reaching past 16 positions), every 1-D parameter perturbed, HF -> zoo -> HF logits to 1e-4; the router's
details and the sparse-layer placement change the logits; switch-tiny through its HF class; refused configs; every
named preset's exact total and active counts against the class built on torch's meta device.

Capacity: HF drops a sequence's tokens past `expert_capacity` per expert, the zoo import is dropless, so parity holds
while no expert receives more than expert_capacity tokens of a sequence: expert_capacity 64 here, sequences of 24."""

import numpy as np
import pytest
from test_hf import _hf_logits, _random_model, _roundtrip, _tokens, _zoo_logits, torch, transformers
from test_hf_more import assert_refused

from zoo import count_params, hf
from zoo.presets import family_presets, get_config, published
from zoo.semantics import semantic_differences

TOKENS = _tokens(128, 24, 20)  # encoder 24, decoder 20 positions: past the 16 of the buckets; 48 tokens over 5 experts


def _hf_model(seed=0, **kw):
    """A random SwitchTransformersForConditionalGeneration; its routers drawn at std 0.1 (HF's 1.0 saturates the
    softmax, hiding how the chosen expert's probability scales its output), every 1-D parameter perturbed."""
    base = dict(
        vocab_size=128,
        d_model=40,
        d_kv=12,
        num_heads=3,
        d_ff=56,
        num_layers=4,
        num_decoder_layers=6,
        num_sparse_encoder_layers=2,
        num_sparse_decoder_layers=3,
        num_experts=5,
        expert_capacity=64,  # >= every sequence here: HF drops nothing
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        attn_implementation="eager",
    )
    config = transformers.SwitchTransformersConfig(**{**base, **kw})
    torch.manual_seed(seed)
    model = transformers.SwitchTransformersForConditionalGeneration(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "router.classifier.weight" in name:
                p.mul_(0.1)
    return _random_model(lambda c: model, config, seed)


def _differs(cfg, params, ref, **change):
    return np.abs(_zoo_logits(cfg.replace(**change), params, TOKENS) - ref).max() > 1e-2


def test_switch_every_other_layer_router_bias(tmp_path):
    """5 experts, top-1 with a router bias, in layers 1, 3 of the encoder and 1, 3, 5 of the decoder: (dense, moe)."""
    model = _hf_model(router_bias=True)
    cfg, params, ref = _roundtrip("switch_transformers", model, TOKENS, tmp_path)
    assert (cfg.num_experts, cfg.experts_per_token, cfg.d_expert, cfg.moe_pattern) == (5, 1, 56, ("dense", "moe"))
    assert cfg.router_bias and not cfg.router_renormalize and cfg.capacity_factor is cfg.eval_capacity_factor is None
    assert cfg.tie_word_embeddings and cfg.scale_logits_by_inv_sqrt_d_model and cfg.num_decoder_layers == 6
    block = params["decoder"]["cycles"]
    assert block["block_1"]["moe"]["wi"]["kernel"].shape == (3, 5, 40, 56) and "moe" not in block["block_0"]
    assert block["block_1"]["moe"]["router"]["bias"].shape == (3, 5)
    # The chosen expert's output is scaled by its probability: renormalising (to 1) changes the logits.
    assert _differs(cfg, params, ref, router_renormalize=True)
    # The placement binds: the same experts in the even layers instead (HF cannot express it: save refuses).
    shifted = {stack: dict(params[stack]) for stack in ("encoder", "decoder")}
    for stack in shifted:
        cycles = {j: dict(b) for j, b in params[stack]["cycles"].items()}
        cycles["block_0"]["moe"], cycles["block_1"]["mlp"] = cycles["block_1"].pop("moe"), cycles["block_0"].pop("mlp")
        shifted[stack]["cycles"] = cycles
    moved = cfg.replace(moe_pattern=("moe", "dense"))
    assert np.abs(_zoo_logits(moved, {**params, **shifted}, TOKENS) - ref).max() > 1e-2
    with pytest.raises(ValueError, match="ModelConfig.moe_pattern="):
        hf.config_to_hf(moved, "switch_transformers")


def test_switch_untied_every_layer(tmp_path):
    """Switch-C's layout: experts in every layer (step 1), a separate output head and no d_model**-0.5 rescale; the
    transformers 5 untied model's two input embeddings made equal, as the zoo has one."""
    model = _hf_model(
        seed=1,
        num_experts=6,
        num_layers=2,
        num_decoder_layers=2,
        num_sparse_encoder_layers=2,
        num_sparse_decoder_layers=2,
        tie_word_embeddings=False,
    )
    with torch.no_grad():
        model.decoder.embed_tokens.weight.copy_(model.encoder.embed_tokens.weight)
    cfg, params, ref = _roundtrip("switch_transformers untied", model, TOKENS, tmp_path)
    assert cfg.moe_pattern == ("moe",) and not cfg.tie_word_embeddings and not cfg.scale_logits_by_inv_sqrt_d_model
    with torch.no_grad():
        model.decoder.embed_tokens.weight.mul_(2.0)
    model.save_pretrained(tmp_path / "two")
    with pytest.raises(ValueError, match="one input embedding"):
        hf.load(tmp_path / "two")


def test_capacity_binds_where_hf_drops():
    """What the import does not claim: with expert_capacity 2, HF drops tokens the dropless zoo model keeps."""
    model = _hf_model()
    ref = _hf_logits(model, TOKENS)
    model.config.expert_capacity = 2
    for module in model.modules():
        if isinstance(
            module, transformers.models.switch_transformers.modeling_switch_transformers.SwitchTransformersTop1Router
        ):
            module.expert_capacity = 2
    assert np.abs(_hf_logits(model, TOKENS) - ref).max() > 1e-2


@pytest.mark.parametrize(
    "layers, sparse, pattern",
    [
        (12, 6, ("dense", "moe")),  # switch-base, switch-large
        (15, 15, ("moe",)),  # switch-c
        (12, 3, ("dense", "moe", "dense", "dense")),  # step 4: layers 1, 5, 9
        (6, 2, ("dense", "moe", "dense")),  # step 3
        (4, 0, ("dense", "moe", "dense", "dense")),  # HF's 0: step = num_layers, and still layer 1
    ],
)
def test_sparse_layers_as_moe_pattern(layers, sparse, pattern):
    """SwitchTransformersStack's rule, layer i sparse when i % (layers // sparse) == 1 (or step 1), as moe_pattern,
    and back to a count that builds the same layers."""
    values = {"model_type": "switch_transformers", "num_layers": layers, "num_decoder_layers": layers}
    values |= {"num_sparse_encoder_layers": sparse, "num_sparse_decoder_layers": sparse}
    cfg = hf.config_from_hf(values)
    assert cfg.moe_pattern == pattern
    saved = hf.config_to_hf(cfg, "switch_transformers")
    assert hf.config_from_hf(saved).moe_pattern == pattern


def test_absent_fields_take_the_class_defaults():
    written = transformers.AutoConfig.for_model("switch_transformers").to_dict()
    default = hf.config_from_hf({"model_type": "switch_transformers"})
    assert semantic_differences(default, hf.config_from_hf(written)) == []


@pytest.mark.parametrize(
    "change, field",
    [
        (
            {"num_layers": 4, "num_decoder_layers": 4, "num_sparse_encoder_layers": 2, "num_sparse_decoder_layers": 4},
            "num_sparse_decoder_layers",
        ),
        ({"num_layers": 2, "num_sparse_encoder_layers": 3}, "num_sparse_encoder_layers"),  # step 0: dense
        ({"dense_act_fn": "gated-gelu"}, "dense_act_fn"),
        ({"router_dtype": "bfloat16"}, "router_dtype"),
    ],
)
def test_inexpressible_hf_config_names_the_field(tmp_path, change, field):
    assert_refused(tmp_path, "switch_transformers", change, field)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"moe_pattern": ("moe", "dense")}, "moe_pattern"),
        ({"d_expert": 128}, "d_expert"),
        ({"mlp_activations": ("gelu", "linear")}, "mlp_activations"),
        ({"capacity_factor": 1.25}, "capacity_factor"),  # HF's capacity is a token count
    ],
)
def test_save_refuses_what_the_family_cannot_express(change, field):
    with pytest.raises(ValueError, match=f"ModelConfig.{field}="):
        hf.config_to_hf(get_config("switch-tiny", **change), "switch_transformers")


def test_tiny_preset_through_its_hf_class(tmp_path):
    """switch-tiny as a random SwitchTransformersForConditionalGeneration, sequences of 48 (expert_capacity is
    written as max_seq_len, 256); the same config back but for what HF configs do not carry."""
    preset = get_config("switch-tiny")
    assert hf.family_of(preset).model_type == "switch_transformers"
    values = hf.config_to_hf(preset, "switch_transformers")
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values, attn_implementation="eager")
    model = _random_model(transformers.SwitchTransformersForConditionalGeneration, config)
    cfg, _, _ = _roundtrip("switch-tiny", model, _tokens(512, 48, 48), tmp_path)
    untracked = ("init_scheme", "init_std", "z_loss_multiplier")  # not in HF configs (the output z-loss: training)
    back = cfg.replace(**{field: getattr(preset, field) for field in untracked})
    assert back == preset.replace(scan_layers=True)


# -------------------------------------------------------------------------------------------- parameter counts
NAMED = [n for n in family_presets("switch") if not n.endswith("-tiny") and n != "switch-xxl-128"]
ACTIVE = {
    "switch-base-8": 222_977_280,
    "switch-base-16": 223_051_008,
    "switch-base-32": 223_198_464,
    "switch-base-64": 223_493_376,
    "switch-base-128": 224_083_200,
    "switch-base-256": 225_262_848,
    "switch-large-128": 740_813_824,
    "switch-c-2048": 1_747_228_960,
}


def test_every_named_preset_is_counted():
    assert sorted(NAMED) == sorted(ACTIVE)


def test_switch_xxl_gated_experts_are_refused_by_save():
    """Switch-XXL's GEGLU experts have no HF form (tests/test_presets.py checks its count against the paper)."""
    with pytest.raises(ValueError, match="mlp_activations=.*cannot be expressed as HF switch_transformers"):
        hf.config_to_hf(get_config("switch-xxl-128"), "switch_transformers")


def _meta_counts(values: dict) -> tuple[int, int]:
    """(numel, routed-expert numel) of the HF class built from config `values` on torch's meta device."""
    values = dict(values)
    config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        model = transformers.AutoModelForSeq2SeqLM.from_config(config)
    assert type(model).__name__ == values["architectures"][0]
    routed = sum(p.numel() for n, p in model.named_parameters() if "experts." in n)
    return sum(p.numel() for p in model.parameters()), routed


@pytest.mark.parametrize("name", NAMED)
def test_exact_total_and_active_counts_are_the_transformers_counts(name):
    """Total: numel of SwitchTransformersForConditionalGeneration on the meta device == zoo.count_params ==
    published; untied (switch-c), transformers 5 builds separate encoder and decoder input embeddings beside the
    unused `shared`, two vocab x d_model matrices the model (one input embedding, one head) does not have. Active:
    every routed expert's parameters scaled by 1/E. Past 256 experts (switch-c's 2048: 30 s of module
    construction) the class is built with 1 and 2 experts and the counts taken exactly from that line: each expert
    adds its wi, wo and a router row in every sparse layer, nothing else depends on E."""
    cfg = get_config(name)
    values = hf.config_to_hf(cfg, "switch_transformers")
    experts = cfg.num_experts
    if experts <= 256:
        total, routed = _meta_counts(values)
    else:
        (t1, r1), (t2, r2) = (_meta_counts({**values, "num_experts": e}) for e in (1, 2))
        total, routed = t1 + (t2 - t1) * (experts - 1), r1 + (r2 - r1) * (experts - 1)
    total -= 0 if cfg.tie_word_embeddings else 2 * cfg.vocab_size * cfg.d_model
    active = total - routed + routed // experts
    print(f"count {name:18s} total {total:,} active {active:,}")  # shown with -s
    assert count_params(cfg) == total == published(name).params
    assert count_params(cfg, active=True) == active == published(name).active == ACTIVE[name]
