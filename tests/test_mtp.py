"""Multi-token prediction (DeepSeek-V3 §2.2; zoo.layers.mtp): the module against a reference built from its parts in
numpy (the released weights' join order [embedding; state], the main model's normalised output as the first
state), the model's logits untouched, causality, the exact counts (DeepSeek-V3's module: 11,610,067,968), the batch
and the loss (eq. 25, only positions whose target is in the row), gradients into both the modules and the model,
and an export that leaves the modules out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import count_params, hf
from zoo.layers.block import Block
from zoo.presets import get_config
from zoo.train.objectives import CausalLM

CFG = get_config("llama-tiny").replace(mtp_depth=1)
TOKENS = np.random.default_rng(0).integers(0, CFG.vocab_size, (2, 17)).astype(np.int32)


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(1)  # norm gains away from 1, so a norm read in the wrong place shows
    init = zoo.init_params(CFG, jax.random.key(0))
    return jax.tree.map(lambda p: p + rng.normal(0, 0.1, p.shape).astype(p.dtype), init)


def _rms(x, gain, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * gain


def test_the_module_is_its_parts(params):
    inputs, ahead = TOKENS[:, :-1], TOKENS[:, 1:]
    model = zoo.build(CFG)
    logits, predicted = model.apply({"params": params}, inputs, ahead=ahead[:, None])
    _, state = model.apply({"params": params}, inputs, capture_intermediates=lambda m, _: m.name == "decoder")
    h = np.asarray(state["intermediates"]["decoder"]["__call__"][0])  # the stack's output, final norm included
    p, eps = params["mtp_0"], CFG.norm_eps
    embedded = np.asarray(params["token_embed"]["embedding"])[ahead]
    joined = np.concatenate([_rms(embedded, p["embed_norm"]["scale"], eps), _rms(h, p["state_norm"]["scale"], eps)], -1)
    x = joined @ np.asarray(p["join"]["kernel"])
    block = Block(CFG, kind=CFG.layer_kinds()[-1], mlp_kind="dense")
    x = np.asarray(block.apply({"params": p["block"]}, jnp.asarray(x), jnp.arange(16)[None]))
    want = _rms(x, p["head_norm"]["scale"], eps) @ np.asarray(params["lm_head"]["kernel"])
    np.testing.assert_allclose(predicted[:, 0], want, rtol=1e-4, atol=1e-4)
    swapped = np.concatenate([joined[..., CFG.d_model :], joined[..., : CFG.d_model]], -1) @ np.asarray(
        p["join"]["kernel"]
    )
    assert np.abs(swapped - joined @ np.asarray(p["join"]["kernel"])).max() > 1e-2  # the order is not symmetric
    without = {k: v for k, v in params.items() if k != "mtp_0"}
    np.testing.assert_array_equal(logits, zoo.build(CFG.replace(mtp_depth=0)).apply({"params": without}, inputs))


def test_module_k_at_position_i_reads_nothing_past_token_i_plus_k(params):
    model = zoo.build(CFG)
    changed = TOKENS.copy()
    changed[:, 10:] = (changed[:, 10:] + 1) % CFG.vocab_size
    a, b = (model.apply({"params": params}, t[:, :-1], ahead=t[:, None, 1:])[1] for t in (TOKENS, changed))
    np.testing.assert_array_equal(a[:, :, :9], b[:, :, :9])  # position 8 reads tokens up to 9
    assert np.abs(a[:, :, 9:] - b[:, :, 9:]).max() > 1e-3


def test_deepseek_v3s_module_is_one_moe_layer_two_input_norms_a_join_and_a_head_norm():
    cfg = get_config("deepseek-v3")
    d, main = cfg.d_model, count_params(cfg)
    layer = count_params(cfg.replace(num_layers=62)) - main
    assert count_params(cfg.replace(mtp_depth=1)) - main == layer + 3 * d + 2 * d * d == 11_610_067_968
    assert main + 11_610_067_968 == 682_636_472_320  # the 671B model and its module (685B with the hub's copies)


def test_the_batch_and_the_loss_are_eq_25(params):
    objective = CausalLM(seq_len=16, mtp_depth=2, mtp_weight=0.3)
    batch = objective.make_batch(TOKENS, 0)
    assert batch["ahead"].shape == batch["ahead_targets"].shape == (2, 2, 16)
    for k in (1, 2):
        np.testing.assert_array_equal(batch["ahead"][:, k - 1, : 17 - k], TOKENS[:, k:])
        np.testing.assert_array_equal(batch["ahead_targets"][:, k - 1, : 16 - k], TOKENS[:, k + 1 :])
    cfg = CFG.replace(mtp_depth=2)
    model, deep = zoo.build(cfg), zoo.init_params(cfg, jax.random.key(2))
    loss, metrics = objective.loss(model, deep, batch, rngs={})
    _, predicted = model.apply({"params": deep}, batch["inputs"], ahead=batch["ahead"])
    nll = []
    for k in range(2):  # module k + 1: positions 0 .. 15 - (k + 1), whose target token i + k + 2 is in the row
        logp = jax.nn.log_softmax(predicted[:, k, : 15 - k])
        nll.append(-np.mean(np.take_along_axis(logp, batch["ahead_targets"][:, k, : 15 - k, None], -1)))
    np.testing.assert_allclose(metrics["mtp_loss"], np.mean(nll), rtol=1e-5)
    np.testing.assert_allclose(loss, metrics["nll"] + 0.3 * np.mean(nll), rtol=1e-5)
    grads = jax.grad(lambda p: objective.loss(model, p, batch, rngs={})[0])(deep)
    for part in ("mtp_0", "mtp_1", "decoder", "token_embed"):
        assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads[part])) > 0, part


def test_an_export_leaves_the_modules_out(params, tmp_path):
    hf.save(CFG, params, tmp_path)
    cfg, loaded = hf.load(tmp_path)
    assert cfg.mtp_depth == 0 and "mtp_0" not in loaded
    inputs = TOKENS[:, :-1]
    np.testing.assert_allclose(
        zoo.build(cfg).apply({"params": loaded}, inputs), zoo.build(CFG).apply({"params": params}, inputs), atol=1e-5
    )


def test_an_moe_module_joins_the_router_statistics_and_its_bias_moves():
    """DeepSeek-V3's MTP block is an MoE layer: its router statistics follow the stack's MoE layers, and the train
    step's rebalance moves its balance bias by its own load."""
    from zoo.train.router_losses import LOADS, RouterLosses, rebalance

    cfg = get_config("deepseek-v3-tiny").replace(mtp_depth=1)
    model, params = zoo.build(cfg), zoo.init_params(cfg, jax.random.key(0))
    objective = CausalLM(seq_len=16, router=RouterLosses.of(cfg), mtp_depth=1, mtp_weight=0.3)
    batch = objective.make_batch(np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 17)).astype(np.int32), 0)
    _, metrics = objective.loss(model, params, batch, rngs={})
    moe_layers = cfg.mlp_kinds().count("moe")
    assert metrics["moe/load_balancing_loss_per_layer"].shape == (moe_layers + 1,)
    load = metrics[LOADS]["mtp_0/block/moe"]
    assert load.shape == (cfg.num_experts,) and float(load.sum()) == 2 * 16 * cfg.experts_per_token
    moved = rebalance(params, metrics[LOADS], 0.01)["mtp_0"]["block"]["moe"]["balance_bias"]
    np.testing.assert_allclose(moved, 0.01 * np.sign(np.mean(load) - load), atol=1e-7)
