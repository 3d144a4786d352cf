"""The MoE terms of the training loss (zoo/train/router_losses.py): per-layer statistics in stack order, equal
scanned and unrolled, equal to each layer's own MoeMlp statistics; the loss adds exactly the multiplied means;
the balancing loss alone moves the router."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.config import ModelConfig
from zoo.model import unstack_layers
from zoo.train.objectives import CausalLM
from zoo.train.router_losses import LOGGED, RouterLosses

CFG = ModelConfig(
    vocab_size=64,
    d_model=16,
    num_layers=6,
    num_heads=2,
    d_ff=32,
    max_seq_len=16,
    num_experts=4,
    experts_per_token=2,
    d_expert=24,
    moe_pattern=("dense", "moe", "moe"),  # 4 MoE layers: 1, 2, 4, 5
    attention_pattern=("local", "global"),
    sliding_window_size=4,
    load_balancing_multiplier=0.5,
    router_z_loss_multiplier=0.25,
)
TOKENS = jax.random.randint(jax.random.key(1), (2, 12), 0, 64)


@pytest.fixture(scope="module")
def params():
    return zoo.init_params(CFG, jax.random.key(0))


def layer_stats(params, cfg):
    """Each MoE layer's statistics, read from the sown tree directly (cycles of 6 layers: one here)."""
    _, state = zoo.build(cfg).apply({"params": params}, TOKENS, mutable=["intermediates"])
    cycles = state["intermediates"]["decoder"]
    out = []
    for j in (1, 2, 4, 5):
        sown = cycles["cycles"][f"block_{j}"]["moe"] if cfg.scan_layers else cycles["cycle_0"][f"block_{j}"]["moe"]
        out.append({k: np.asarray(v[0]).reshape(-1, *np.shape(v[0])[cfg.scan_layers :]) for k, v in sown.items()})
    return out


def test_per_layer_statistics_are_each_layers_own_in_stack_order_scanned_and_unrolled(params):
    router = RouterLosses.of(CFG)
    assert CFG.cycle_length == 6 and CFG.mlp_kinds() == ("dense", "moe", "moe", "dense", "moe", "moe")
    _, scanned = router.apply(zoo.build(CFG), {"params": params}, TOKENS)
    unrolled_cfg = CFG.replace(scan_layers=False)
    _, unrolled = router.apply(zoo.build(unrolled_cfg), {"params": unstack_layers(params)}, TOKENS)
    own = layer_stats(params, CFG)
    for name in ("load_balancing_loss", "router_z_loss", "dropped_fraction", "router_entropy"):
        assert scanned[name].shape == (4,)
        np.testing.assert_allclose(scanned[name], [s[name][0] for s in own], rtol=1e-6)
        np.testing.assert_allclose(unrolled[name], scanned[name], rtol=1e-5)
    loads = np.stack([s["tokens_per_expert"][0] for s in own])  # [layers, E], 2 * 12 * k assignments each
    assert np.all(loads.sum(axis=1) == 2 * 12 * 2)
    np.testing.assert_allclose(scanned["expert_load_max"], loads.max(1) / loads.mean(1), rtol=1e-6)
    np.testing.assert_allclose(scanned["expert_load_min"], loads.min(1) / loads.mean(1), rtol=1e-6)
    assert len({round(float(v), 6) for v in scanned["router_z_loss"]}) == 4  # four different layers, not one


def test_the_loss_adds_the_multiplied_layer_means_and_logs_them(params):
    batch = {"inputs": TOKENS, "targets": jnp.roll(TOKENS, -1, axis=1)}
    with_router = CausalLM(seq_len=12, router=RouterLosses.of(CFG))
    without = CausalLM(seq_len=12, router=RouterLosses(moe=True))  # statistics, multipliers 0
    model = zoo.build(CFG)
    loss, metrics = with_router.loss(model, params, batch, None)
    plain, plain_metrics = without.loss(model, params, batch, None)
    expected = plain + 0.5 * metrics["moe/load_balancing_loss"] + 0.25 * metrics["moe/router_z_loss"]
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["nll"], plain_metrics["nll"], rtol=1e-6)
    for name in LOGGED:
        np.testing.assert_allclose(metrics[f"moe/{name}"], np.mean(metrics[f"moe/{name}_per_layer"]), rtol=1e-6)
    assert metrics["moe/dropped_fraction"] == 0.0  # dropless
    assert metrics["moe/load_balancing_loss"] >= CFG.experts_per_token * (1 - 1e-6)  # its minimum is k


def test_the_balancing_loss_alone_moves_the_routers_and_what_feeds_them(params):
    batch = {"inputs": TOKENS, "targets": jnp.roll(TOKENS, -1, axis=1)}
    only_balance = CausalLM(seq_len=12, router=RouterLosses(moe=True, load_balancing=1.0))
    no_aux = CausalLM(seq_len=12, router=RouterLosses(moe=True))
    model = zoo.build(CFG)

    def grads(objective):
        return jax.grad(lambda p: objective.loss(model, p, batch, None)[0])(params)

    diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), grads(only_balance), grads(no_aux))
    moe = diff["decoder"]["cycles"]["block_1"]["moe"]
    assert moe["router"]["kernel"] > 1e-4  # the balancing loss reaches the router ...
    assert max(jax.tree.leaves(diff["token_embed"])) > 0  # ... and, through the router's input, the stream
    # The last MoE layer's experts feed no later router: the balancing loss gives them no gradient.
    last = diff["decoder"]["cycles"]["block_5"]["moe"]
    assert last["router"]["kernel"] > 1e-4 and last["wi_0"]["kernel"] == 0 and last["wo"]["kernel"] == 0


def test_a_dense_model_is_applied_as_before():
    cfg = ModelConfig(vocab_size=64, d_model=16, num_layers=2, num_heads=2, d_ff=32, max_seq_len=16)
    params = zoo.init_params(cfg, jax.random.key(0))
    logits, layers = RouterLosses.of(cfg).apply(zoo.build(cfg), {"params": params}, TOKENS)
    assert layers == {}
    np.testing.assert_array_equal(logits, zoo.build(cfg).apply({"params": params}, TOKENS))


def test_the_training_step_drops_by_the_training_capacity_and_evaluation_by_its_own():
    """The trainer's step runs the model as training (a dropout rng) when capacity_factor differs from
    eval_capacity_factor, though nothing else is random: 0.5 drops about half the assignments while training,
    and evaluation (dropless here) drops none."""
    from zoo.recipe import TrainConfig
    from zoo.sharding import make_mesh
    from zoo.train.state import programs

    cfg = CFG.replace(capacity_factor=0.5)
    tc = TrainConfig(batch_size=2, seq_len=12, total_steps=2, warmup_steps=1)
    prog = programs(cfg, tc, CausalLM(seq_len=12, router=RouterLosses.of(cfg)), make_mesh(devices=jax.devices()[:1]))
    batch = {"inputs": TOKENS, "targets": jnp.roll(TOKENS, -1, axis=1)}
    _, metrics = prog.step(prog.init(0), batch)
    assert 0.4 < float(metrics["moe/dropped_fraction"]) < 0.6
    assert float(prog.evaluate(prog.init(0)["params"], batch)["moe/dropped_fraction"]) == 0.0


def test_the_train_step_moves_each_balance_bias_by_the_sign_of_its_layers_load(params):
    """DeepSeek-V3 §2.1.2 in the compiled step: after each update each MoE layer's bias is the old one plus rate *
    sign(mean load - load), the loads those of the step's batch under the step's params; the optimizer leaves it
    alone (two steps with weight decay and a nonzero bias: exact); it is not counted; the loads stay inside."""
    from zoo.recipe import TrainConfig
    from zoo.sharding import make_mesh
    from zoo.train.router_losses import LOADS
    from zoo.train.state import programs

    cfg = CFG.replace(router="sigmoid_topk", router_balance_bias=True)
    assert zoo.count_params(cfg) == zoo.count_params(CFG)
    batch = {"inputs": TOKENS, "targets": jnp.roll(TOKENS, -1, axis=1)}
    tc = TrainConfig(batch_size=2, seq_len=12, total_steps=2, warmup_steps=1, weight_decay=0.5, learning_rate=0.1)
    prog = programs(cfg, tc, CausalLM(seq_len=12, router=RouterLosses.of(cfg)), make_mesh(devices=jax.devices()[:1]))

    def biases(state):
        blocks = state["params"]["decoder"]["cycles"]
        return np.stack([np.asarray(blocks[f"block_{j}"]["moe"]["balance_bias"][0]) for j in (1, 2, 4, 5)])

    state = prog.init(0)
    for _ in range(2):
        loads = np.stack([s["tokens_per_expert"][0] for s in layer_stats(state["params"], cfg)])  # [4 layers, E]
        step = np.float32(tc.router_bias_update_rate) * np.sign(loads.mean(-1, keepdims=True) - loads)
        expected = biases(state) + step
        state, metrics = prog.step(state, batch)
        assert LOADS not in metrics
        np.testing.assert_array_equal(biases(state), expected.astype(np.float32))
    assert np.abs(biases(state)).max() == np.float32(2 * tc.router_bias_update_rate)
    assert LOADS not in prog.evaluate(state["params"], batch)
