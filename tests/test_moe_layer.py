"""The mixture-of-experts MLP (zoo/layers/moe.py) against a per-token numpy reference: routers, ties, empty
experts, shared experts, capacity drops, the auxiliary statistics, jit/grad and a sharded apply."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.config import ModelConfig
from zoo.layers.moe import MoeMlp
from zoo.sharding import LOGICAL_RULES, batch_sharding, make_mesh, param_shardings, use_mesh

D_MODEL, NUM_EXPERTS = 8, 4
TOL = dict(rtol=1e-5, atol=1e-5)

NP_ACTIVATIONS = {
    "silu": lambda z: z / (1.0 + np.exp(-z)),
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "gelu_tanh": lambda z: 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3))),
}


def make_cfg(activations=("silu", "linear"), mlp_bias=False):
    return ModelConfig(
        vocab_size=32,
        d_model=D_MODEL,
        num_layers=1,
        num_heads=2,
        d_ff=16,
        max_seq_len=16,
        mlp_activations=activations,
        mlp_bias=mlp_bias,
    )


MOE_FIELDS = (
    "num_experts",
    "experts_per_token",
    "d_expert",
    "router",
    "router_renormalize",
    "router_balance_bias",
    "router_groups",
    "router_groups_per_token",
    "router_group_score_experts",
    "router_weight_scale",
    "router_weights_input",
    "load_balancing_per_sequence",
    "router_bias",
    "router_jitter",
    "shared_expert_d_ff",
    "shared_expert_gate",
    "capacity_factor",
    "eval_capacity_factor",
    "moe_matmul",
)


def make_spec(**kw):
    """The MoE knobs under test, as a ModelConfig (its other fields: make_cfg's)."""
    return make_cfg().replace(**{"num_experts": NUM_EXPERTS, "experts_per_token": 2, "d_expert": 6, **kw})


def moe(cfg, spec):
    """cfg (activations, bias, dtype) with spec's MoE knobs."""
    return cfg.replace(**{name: getattr(spec, name) for name in MOE_FIELDS})


def random_params(cfg, spec, seed=0, scale=0.5):
    """Every parameter redrawn N(0, scale^2), biases too (they initialise at zero), so each one matters."""
    x = jnp.zeros((1, 2, D_MODEL))
    shapes = nn.meta.unbox(MoeMlp(moe(cfg, spec)).init(jax.random.key(0), x))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: rng.normal(0.0, scale, p.shape).astype(np.float32), shapes)


def inputs(batch=2, length=7, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, length, D_MODEL)).astype(np.float32)


def apply(cfg, spec, params, x, mask=None, deterministic=True, rngs=None):
    """(output, {statistic: value}) from one apply."""
    module = MoeMlp(moe(cfg, spec), deterministic=deterministic)
    out, state = module.apply({"params": params}, jnp.asarray(x), mask, rngs=rngs, mutable=["intermediates"])
    return np.asarray(out), {name: np.asarray(v[0]) for name, v in state["intermediates"].items()}


# ------------------------------------------------------------------------------ the per-token reference
def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def top_k(scores, k):
    """The k best, best first; equal scores go to the lower index, as jax.lax.top_k orders them."""
    return np.argsort(-scores, kind="stable")[:k]


def naive_route(logits, spec, balance_bias=None, bias_weights=False):
    """(experts, weights) of one token. balance_bias: added to the scores to choose (router_balance_bias); with
    bias_weights (the mistake it must not make) to weight them as well."""
    k = spec.experts_per_token
    if spec.router == "topk_softmax":
        experts = top_k(logits, k)
        return experts, softmax(logits[experts])
    scores = 1.0 / (1.0 + np.exp(-logits)) if spec.router == "sigmoid_topk" else softmax(logits)
    choice = scores + (0.0 if balance_bias is None else balance_bias)
    if spec.router_groups > 1:
        grouped = choice.reshape(spec.router_groups, -1)
        group_scores = np.sort(grouped, axis=-1)[:, ::-1][:, : spec.router_group_score_experts].sum(-1)
        allowed = np.zeros(spec.router_groups, bool)
        allowed[top_k(group_scores, spec.router_groups_per_token)] = True
        choice = np.where(np.repeat(allowed, spec.num_experts // spec.router_groups), choice, -np.inf)
    experts = top_k(choice, k)
    weights = (choice if bias_weights else scores)[experts]
    weights = weights / weights.sum() if spec.router_renormalize else weights
    return experts, weights * spec.router_weight_scale


def naive_mlp(p, cfg, v, pick=lambda a: a):
    """act(v wi) wo for one token v; pick selects one expert's slice of a stacked parameter."""
    branches = []
    for i, act in enumerate(cfg.mlp_activations):
        w = p[f"wi_{i}" if cfg.is_gated else "wi"]
        z = v @ pick(w["kernel"]) + (pick(w["bias"]) if cfg.mlp_bias else 0.0)
        branches.append(NP_ACTIVATIONS[act](z))
    h = branches[0] * branches[1] if cfg.is_gated else branches[0]
    return h @ pick(p["wo"]["kernel"]) + (pick(p["wo"]["bias"]) if cfg.mlp_bias else 0.0)


def naive_logits(params, x):
    router = params["router"]
    return x.astype(np.float64) @ router["kernel"] + router.get("bias", 0.0)


def naive_moe(params, x, cfg, spec, factor=None, mask=None, first_choices_first=True, bias_weights=False):
    """Token by token in float64. With a capacity factor, each sequence fills each expert's C slots in
    priority order (every first choice in sequence order, then every second choice ...; or token by token
    when first_choices_first is False) and drops the rest. Returns (output, kept assignments, all assignments)."""
    batch, length, _ = x.shape
    k = spec.experts_per_token
    real = np.ones((batch, length), bool) if mask is None else np.asarray(mask, bool)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    logits = naive_logits(params, x)
    out = np.zeros((batch, length, D_MODEL))
    kept_total = 0
    for b in range(batch):
        bias = params.get("balance_bias")
        choices = [naive_route(logits[b, t], spec, bias, bias_weights) for t in range(length)]
        kept = np.ones((length, k), bool)
        if factor is not None:
            slots = min(length, math.ceil(length * k * factor / spec.num_experts))
            order = [(t, j) for j in range(k) for t in range(length)]
            if not first_choices_first:
                order.sort()
            taken = np.zeros(spec.num_experts, int)
            for t, j in order:
                e = choices[t][0][j]
                kept[t, j] = real[b, t] and taken[e] < slots
                taken[e] += kept[t, j]
        for t in range(length):
            v = x[b, t].astype(np.float64)
            if spec.shared_expert_d_ff:
                gate = 1.0
                if spec.shared_expert_gate:
                    gate = 1.0 / (1.0 + np.exp(-(v @ params["shared_gate"]["kernel"][:, 0])))
                out[b, t] += gate * naive_mlp(params["shared"], cfg, v)
            if not real[b, t]:
                continue
            for j, (e, w) in enumerate(zip(*choices[t], strict=True)):
                if kept[t, j] and spec.router_weights_input:  # Llama 4: the weight scales the expert's input
                    out[b, t] += naive_mlp(params, cfg, w * v, pick=lambda a, e=e: a[e])
                elif kept[t, j]:
                    out[b, t] += w * naive_mlp(params, cfg, v, pick=lambda a, e=e: a[e])
        kept_total += int(kept[real[b]].sum())
    return out, kept_total, int(real.sum()) * k


# ------------------------------------------------------------------------------------------------ dropless
DROPLESS_CASES = {
    "softmax_topk": (dict(), {}),
    "softmax_topk_renormalized": (dict(router_renormalize=True), {}),
    "topk_softmax": (dict(router="topk_softmax"), {}),
    "k1": (dict(experts_per_token=1), {}),
    "k_all_experts": (dict(experts_per_token=NUM_EXPERTS), {}),
    "not_gated_with_bias": (dict(), dict(activations=("gelu_tanh",), mlp_bias=True)),
    "relu_k1": (dict(experts_per_token=1, router="topk_softmax"), dict(activations=("relu",))),
    "router_bias": (dict(router_bias=True), {}),
    "shared_expert": (dict(shared_expert_d_ff=5), {}),
    "shared_expert_gated": (dict(shared_expert_d_ff=5, shared_expert_gate=True), {}),
    "sigmoid_topk": (dict(router="sigmoid_topk"), {}),
    "sigmoid_renormalized_scaled": (dict(router="sigmoid_topk", router_renormalize=True, router_weight_scale=2.5), {}),
    "balance_bias": (dict(router="sigmoid_topk", router_renormalize=True, router_balance_bias=True), {}),
    "weights_on_the_input": (dict(router="sigmoid_topk", experts_per_token=1, router_weights_input=True), {}),
    "weights_on_the_input_biased_k2": (dict(router_weights_input=True), dict(mlp_bias=True)),
    "groups_scored_by_their_best": (dict(router_groups=2, router_groups_per_token=1, experts_per_token=1), {}),
    "groups_scored_by_their_best_two": (
        dict(
            router="sigmoid_topk",
            router_balance_bias=True,
            router_groups=2,
            router_groups_per_token=1,
            router_group_score_experts=2,
            experts_per_token=1,
        ),
        {},
    ),
}


@pytest.mark.parametrize("matmul", ["blocks", "ragged_dot"])
@pytest.mark.parametrize("case", DROPLESS_CASES)
def test_dropless_matches_per_token_reference(case, matmul):
    """Both grouped matmuls: ragged_dot (TPU, GPU) and the padded blocks (CPU's default)."""
    spec_kw, cfg_kw = DROPLESS_CASES[case]
    cfg, spec = make_cfg(**cfg_kw), make_spec(**spec_kw, moe_matmul=matmul)
    params, x = random_params(cfg, spec), inputs()
    out, stats = apply(cfg, spec, params, x)
    np.testing.assert_allclose(out, naive_moe(params, x, cfg, spec)[0], **TOL)
    assert stats["dropped_fraction"] == 0.0
    assert stats["tokens_per_expert"].sum() == x.shape[0] * x.shape[1] * spec.experts_per_token


def test_the_balance_bias_chooses_experts_but_does_not_weight_them():
    """DeepSeek-V3 §2.1.2: the bias enters the top k, not the gating weights. The reference that (wrongly) weights
    with the biased scores is far from the layer, and a zero bias chooses other experts."""
    cfg = make_cfg()
    spec = make_spec(router="sigmoid_topk", router_renormalize=False, router_balance_bias=True)
    params, x = random_params(cfg, spec), inputs()
    out, stats = apply(cfg, spec, params, x)
    np.testing.assert_allclose(out, naive_moe(params, x, cfg, spec)[0], **TOL)
    assert np.max(np.abs(out - naive_moe(params, x, cfg, spec, bias_weights=True)[0])) > 0.05
    _, unbiased = apply(cfg, spec, {**params, "balance_bias": np.zeros(NUM_EXPERTS, np.float32)}, x)
    assert not np.array_equal(stats["tokens_per_expert"], unbiased["tokens_per_expert"])


@pytest.mark.parametrize("best", [1, 2])
def test_a_group_scores_the_sum_of_its_best_experts(best):
    """8 sigmoid-scored experts in 4 groups, a token keeping 2 groups and 3 experts: the layer equals the reference
    whose groups score their best `best` (DeepSeek-V2: 1, V3: 2), and not the one scoring the other way."""
    cfg = make_cfg()
    kw = dict(num_experts=8, experts_per_token=3, router="sigmoid_topk", router_groups=4, router_groups_per_token=2)
    spec, other = make_spec(**kw, router_group_score_experts=best), make_spec(**kw, router_group_score_experts=3 - best)
    params, x = random_params(cfg, spec), inputs(length=14)
    out, _ = apply(cfg, spec, params, x)
    np.testing.assert_allclose(out, naive_moe(params, x, cfg, spec)[0], **TOL)
    assert np.max(np.abs(out - naive_moe(params, x, cfg, other)[0])) > 0.05


# Each pair differs in one router detail; on these inputs the outputs must differ by far more than the
# tolerance, so the reference comparisons above catch that detail being wrong.
DIFFERENT = {
    "renormalize": (dict(router_renormalize=False), dict(router_renormalize=True)),
    "softmax_before_or_after_top_k": (dict(router="softmax_topk"), dict(router="topk_softmax")),
    "top_k": (dict(experts_per_token=1), dict(experts_per_token=2)),
    "shared_gate": (
        dict(shared_expert_d_ff=5, shared_expert_gate=True),
        dict(shared_expert_d_ff=5, shared_expert_gate=False),
    ),
    "router_bias": (dict(router_bias=True), dict(router_bias=False)),
    "sigmoid_or_softmax": (dict(router="sigmoid_topk"), dict(router="softmax_topk")),
    "weights_on_input_or_output": (dict(router_weights_input=True), dict(router_weights_input=False)),
}


def only_what_it_uses(params, spec):
    """Parameters drawn for a spec with every optional part, less those `spec` lacks."""
    kept = {name: p for name, p in params.items() if name != "shared_gate" or spec.shared_expert_gate}
    kept = {name: p for name, p in kept.items() if name != "shared" or spec.shared_expert_d_ff}
    kept["router"] = {name: p for name, p in params["router"].items() if name == "kernel" or spec.router_bias}
    return kept


@pytest.mark.parametrize("detail", DIFFERENT)
def test_each_router_detail_changes_the_output(detail):
    cfg, x = make_cfg(), inputs()
    params = random_params(cfg, make_spec(router_bias=True, shared_expert_d_ff=5, shared_expert_gate=True))
    a, b = (make_spec(**kw) for kw in DIFFERENT[detail])
    out_a, out_b = (apply(cfg, spec, only_what_it_uses(params, spec), x)[0] for spec in (a, b))
    assert np.max(np.abs(out_a - out_b)) > 0.05


def test_topk_softmax_equals_renormalized_softmax_topk():
    cfg = make_cfg()
    params, x = random_params(cfg, make_spec()), inputs()
    renormalized = apply(cfg, make_spec(router_renormalize=True), params, x)[0]
    np.testing.assert_allclose(apply(cfg, make_spec(router="topk_softmax"), params, x)[0], renormalized, **TOL)


@pytest.mark.parametrize("matmul", ["blocks", "ragged_dot"])
def test_an_expert_without_tokens(matmul):
    cfg, spec = make_cfg(), make_spec(router_bias=True, moe_matmul=matmul)
    params, x = random_params(cfg, spec), inputs()
    params["router"]["bias"] = np.array([0.0, 0.0, -40.0, 0.0], np.float32)  # expert 2 is never in the top 2
    out, stats = apply(cfg, spec, params, x)
    assert stats["tokens_per_expert"][2] == 0 and stats["tokens_per_expert"].sum() == 2 * 14
    np.testing.assert_allclose(out, naive_moe(params, x, cfg, spec)[0], **TOL)


@pytest.mark.parametrize(
    "router_bias, k, router, counts",
    [
        ([0.0, 1.0, 1.0, 0.0], 1, "softmax_topk", [0, 14, 0, 0]),  # experts 1 and 2 tie: 1 wins
        ([0.0, 1.0, 1.0, 1.0], 2, "topk_softmax", [0, 14, 14, 0]),  # three tie for two places: 1 and 2
        ([0.0, 0.0, 0.0, 0.0], 2, "softmax_topk", [14, 14, 0, 0]),  # all equal: the first two
    ],
)
def test_ties_go_to_the_lowest_expert_index(router_bias, k, router, counts):
    cfg, spec = make_cfg(), make_spec(experts_per_token=k, router=router, router_bias=True)
    params, x = random_params(cfg, spec), inputs()
    # A zero kernel makes every token's logits the bias itself, so the ties are exact.
    params["router"] = {
        "kernel": np.zeros((D_MODEL, NUM_EXPERTS), np.float32),
        "bias": np.array(router_bias, np.float32),
    }
    out, stats = apply(cfg, spec, params, x)
    np.testing.assert_array_equal(stats["tokens_per_expert"], counts)
    np.testing.assert_allclose(out, naive_moe(params, x, cfg, spec)[0], **TOL)


# ------------------------------------------------------------------------------------------------ capacity
def test_capacity_drops_match_the_reference_and_first_choices_go_first():
    cfg, spec = make_cfg(), make_spec(capacity_factor=0.75, eval_capacity_factor=0.75)
    params, x = random_params(cfg, spec), inputs(length=12)
    out, stats = apply(cfg, spec, params, x)  # C = ceil(12 * 2 / 4 * 0.75) = 5 of each sequence's 24
    expected, kept, total = naive_moe(params, x, cfg, spec, factor=0.75)
    np.testing.assert_allclose(out, expected, **TOL)
    assert kept < total
    assert stats["dropped_fraction"] == pytest.approx(1 - kept / total, abs=1e-6)
    # The priority rule matters on these inputs: token-by-token queueing would drop other assignments.
    token_order = naive_moe(params, x, cfg, spec, factor=0.75, first_choices_first=False)[0]
    assert np.max(np.abs(token_order - expected)) > 0.05
    assert np.max(np.abs(out - apply(cfg, make_spec(), params, x)[0])) > 0.05  # differs from dropless


@pytest.mark.parametrize("weights_input", [False, True])
def test_capacity_with_padding_and_k1(weights_input):
    spec = make_spec(experts_per_token=1, eval_capacity_factor=1.0, router_weights_input=weights_input)
    cfg = make_cfg(mlp_bias=weights_input)  # biased experts: padding would get expert(0) = a bias if not masked
    params, x = random_params(cfg, spec), inputs(length=12)
    mask = np.ones(x.shape[:2], bool)
    mask[1, :6] = False  # left padding: it must not use up the capacity of the tokens after it
    out, stats = apply(cfg, spec, params, x, mask=mask)
    expected, kept, total = naive_moe(params, x, cfg, spec, factor=1.0, mask=mask)
    np.testing.assert_allclose(out, expected, **TOL)
    assert stats["dropped_fraction"] == pytest.approx(1 - kept / total, abs=1e-6)


def test_a_large_capacity_factor_drops_nothing_and_equals_dropless():
    cfg = make_cfg(mlp_bias=True)
    spec = make_spec(eval_capacity_factor=NUM_EXPERTS / 2, shared_expert_d_ff=5)  # C = T: room for every token
    params, x = random_params(cfg, spec), inputs()
    out, stats = apply(cfg, spec, params, x)
    assert stats["dropped_fraction"] == 0.0
    np.testing.assert_allclose(out, apply(cfg, make_spec(shared_expert_d_ff=5), params, x)[0], **TOL)


def test_training_and_evaluation_use_their_own_capacity_factor():
    cfg, spec = make_cfg(), make_spec(capacity_factor=0.5)  # evaluation: dropless
    params, x = random_params(cfg, spec), inputs(length=12)
    train_out, train_stats = apply(cfg, spec, params, x, deterministic=False)
    np.testing.assert_allclose(train_out, naive_moe(params, x, cfg, spec, factor=0.5)[0], **TOL)
    assert train_stats["dropped_fraction"] > 0
    eval_out, eval_stats = apply(cfg, spec, params, x)
    np.testing.assert_allclose(eval_out, naive_moe(params, x, cfg, spec)[0], **TOL)
    assert eval_stats["dropped_fraction"] == 0


# ------------------------------------------------------------------------------------ auxiliary statistics
def naive_stats(logits, spec):
    """The statistics over the rows of logits [n, E] (float64), one token at a time."""
    n, num_experts = logits.shape
    assigned, mean_prob, z_loss, entropy = np.zeros(num_experts), np.zeros(num_experts), 0.0, 0.0
    for row in logits:
        probs = softmax(row)
        for e in naive_route(row, spec)[0]:
            assigned[e] += 1
        mean_prob += probs / n
        z_loss += np.log(np.sum(np.exp(row))) ** 2 / n
        entropy -= np.sum(probs * np.log(probs)) / n
    return {
        "load_balancing_loss": num_experts * np.sum(assigned / n * mean_prob),
        "router_z_loss": z_loss,
        "router_entropy": entropy,
        "tokens_per_expert": assigned,
    }


@pytest.mark.parametrize("k", [1, 2])
def test_padding_is_left_out_and_statistics_match_their_formulas(k):
    cfg, spec = make_cfg(), make_spec(experts_per_token=k, router_bias=True)
    params, x = random_params(cfg, spec), inputs()
    mask = np.ones(x.shape[:2], bool)
    mask[0, 4:] = False
    out, stats = apply(cfg, spec, params, x, mask=mask)
    np.testing.assert_array_equal(out[0, 4:], 0.0)  # padding: no routed output
    np.testing.assert_allclose(out, naive_moe(params, x, cfg, spec, mask=mask)[0], **TOL)
    expected = naive_stats(naive_logits(jax.tree.map(np.float64, params), x)[mask], spec)
    for name, value in expected.items():
        np.testing.assert_allclose(stats[name], value, rtol=1e-5, err_msg=name)
    unmasked = apply(cfg, spec, params, x)[1]
    assert abs(unmasked["router_z_loss"] - stats["router_z_loss"]) > 1e-3


@pytest.mark.parametrize("matmul", ["blocks", "ragged_dot"])
def test_input_weighted_padding_gets_no_routed_output(matmul):
    """router_weights_input with biased experts: a padding token's expert would return its bias from a zero input,
    so the mask must apply to the output (dropless: both grouped matmuls)."""
    cfg, spec = make_cfg(mlp_bias=True), make_spec(router_weights_input=True, moe_matmul=matmul)
    params, x = random_params(cfg, spec), inputs()
    mask = np.ones(x.shape[:2], bool)
    mask[1, :3] = False
    out, _ = apply(cfg, spec, params, x, mask=mask)
    np.testing.assert_array_equal(out[1, :3], 0.0)
    np.testing.assert_allclose(out, naive_moe(params, x, cfg, spec, mask=mask)[0], **TOL)


def test_the_sequence_wise_balance_loss_is_deepseek_v3s_equations():
    """DeepSeek-V3 eqs. 17-20 per sequence, in numpy: f_i = E / (k T) * the sequence's choices of i (chosen with the
    balance bias), P_i = the mean over its T tokens of s_i / sum_j s_j (unbiased sigmoid scores), L = sum_i f_i P_i,
    averaged over the sequences; the layer's statistic is k L (its minimum k, as the batch-wise one). Padding is left
    out, and the batch-wise loss of the same tokens differs."""
    cfg = make_cfg()
    kw = dict(router="sigmoid_topk", router_renormalize=True, router_balance_bias=True)
    spec = make_spec(**kw, load_balancing_per_sequence=True)
    params, x = random_params(cfg, spec), inputs(batch=3)
    mask = np.ones(x.shape[:2], bool)
    mask[1, 3:] = False
    stats = apply(cfg, spec, params, x, mask=mask)[1]
    logits = naive_logits(jax.tree.map(np.float64, params), x)
    k, num_experts, losses = spec.experts_per_token, spec.num_experts, []
    for b in range(x.shape[0]):
        rows = logits[b][mask[b]]
        chosen = np.zeros(num_experts)
        for row in rows:
            chosen[naive_route(row, spec, params["balance_bias"])[0]] += 1
        f = num_experts / (k * len(rows)) * chosen
        scores = 1.0 / (1.0 + np.exp(-rows))
        p = np.mean(scores / scores.sum(-1, keepdims=True), axis=0)
        losses.append(np.sum(f * p))
    assert stats["load_balancing_loss"] == pytest.approx(k * np.mean(losses), rel=1e-5)
    batch_wise = apply(cfg, make_spec(**kw), params, x, mask=mask)[1]
    assert abs(batch_wise["load_balancing_loss"] - stats["load_balancing_loss"]) > 1e-3


@pytest.mark.parametrize("k", [1, 2])
def test_load_balancing_loss_is_k_under_uniform_routing(k):
    """Token i is a basis vector whose logits are 3 on expert i, 1.5 on expert i + 1 (mod E), 0 elsewhere:
    each token's probabilities are a rotation of the next one's, so every expert is chosen as often and has
    the same mean probability, the loss's minimum (1 for top-1; k in HF's Mixtral form)."""
    cfg, spec = make_cfg(), make_spec(experts_per_token=k)
    params = random_params(cfg, spec)
    first = np.eye(D_MODEL, NUM_EXPERTS, dtype=np.float32)
    params["router"]["kernel"] = 3.0 * first + 1.5 * np.roll(first, 1, axis=1)
    x = np.eye(D_MODEL, dtype=np.float32)[None, :NUM_EXPERTS].repeat(2, axis=0)
    stats = apply(cfg, spec, params, x)[1]
    assert stats["load_balancing_loss"] == pytest.approx(k, rel=1e-6)
    np.testing.assert_array_equal(stats["tokens_per_expert"], 2 * k)
    skewed = apply(cfg, spec, params, x[:, [0, 0, 0, 1]])[1]
    assert skewed["load_balancing_loss"] > k + 0.1


# ------------------------------------------------------------------------------ jit, grad, jitter, sharding
def test_jitted_gradients_are_finite_and_agree_between_ragged_dot_and_capacity():
    cfg, x = make_cfg(), jnp.asarray(inputs())
    dropless, capacity = (
        make_spec(shared_expert_d_ff=5, shared_expert_gate=True),
        make_spec(shared_expert_d_ff=5, shared_expert_gate=True, eval_capacity_factor=NUM_EXPERTS / 2),
    )
    params = random_params(cfg, dropless)

    def loss(spec):
        def value(p):
            out, state = MoeMlp(moe(cfg, spec)).apply({"params": p}, x, mutable=["intermediates"])
            lb = state["intermediates"]["load_balancing_loss"][0]
            return jnp.sum(jnp.sin(out)) + lb + state["intermediates"]["router_z_loss"][0]

        return jax.jit(jax.value_and_grad(value))(params)

    (value, grads), (value_c, grads_c) = loss(dropless), loss(capacity)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert np.all(np.abs(grads["wi_0"]["kernel"]).sum(axis=(1, 2)) > 0)  # every expert got tokens and gradient
    assert np.abs(grads["router"]["kernel"]).sum() > 0
    np.testing.assert_allclose(value, value_c, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads, grads_c)


@pytest.mark.parametrize("factor", [None, 1.0])
def test_bfloat16_compute_follows_float32(factor):
    spec = make_spec(eval_capacity_factor=factor, shared_expert_d_ff=5)
    params, x = random_params(make_cfg(), spec), inputs()
    full = apply(make_cfg(), spec, params, x)[0]
    half = apply(make_cfg().replace(dtype="bfloat16"), spec, params, x)[0]
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(half.astype(np.float32), full, rtol=0.05, atol=0.05)


def test_jitter_moves_only_the_router_input():
    cfg, spec = make_cfg(), make_spec(router_jitter=0.5, router_bias=True)
    params, x = random_params(cfg, spec), inputs()
    rngs = {"dropout": jax.random.key(3)}
    clean = apply(cfg, spec, params, x)[0]  # deterministic: no noise and no rng needed
    noisy = apply(cfg, spec, params, x, deterministic=False, rngs=rngs)[0]
    assert np.max(np.abs(noisy - clean)) > 0.05
    np.testing.assert_array_equal(noisy, apply(cfg, spec, params, x, deterministic=False, rngs=rngs)[0])
    # With a zero router kernel the logits are the bias whatever the input: the noise then changes nothing,
    # so it never reached the experts' input.
    params["router"]["kernel"] = np.zeros_like(params["router"]["kernel"])
    np.testing.assert_array_equal(
        apply(cfg, spec, params, x, deterministic=False, rngs=rngs)[0], apply(cfg, spec, params, x)[0]
    )


@pytest.mark.parametrize("factor", [None, 1.0])
def test_sharded_apply_matches_single_device(factor):
    """Under a mesh, with an "expert" rule added ahead of the others (the expert axis takes tensor, which
    `mlp` would otherwise take), the logical constraints apply and the result is unchanged."""
    cfg, spec = make_cfg(), make_spec(eval_capacity_factor=factor, shared_expert_d_ff=4)
    cpus = jax.devices("cpu")
    module, x = MoeMlp(moe(cfg, spec)), jnp.asarray(inputs(batch=4, length=8))
    rules = (("expert", "tensor"), *LOGICAL_RULES)
    mesh = make_mesh(2, 2, 2, devices=cpus)
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
    params = jax.jit(
        lambda: nn.meta.unbox(module.init(jax.random.key(0), x)), out_shardings=param_shardings(abstract, mesh, rules)
    )()
    assert params["params"]["wi_0"]["kernel"].sharding.spec[0] == "tensor"
    with jax.default_device(cpus[0]):
        expected = jax.jit(module.apply)(jax.device_get(params), x)
    with use_mesh(mesh, rules):
        got = jax.jit(module.apply)(params, jax.device_put(x, batch_sharding(mesh, 4)))
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(router="sigmoid"), "ModelConfig.router: got 'sigmoid'; allowed: softmax_topk, topk_softmax"),
        (dict(experts_per_token=5), "ModelConfig.experts_per_token: must be in 1..num_experts=4, got 5"),
        (
            dict(router_renormalize=True, router="topk_softmax"),
            "ModelConfig.router_renormalize: only applies with num_experts > 0 and router: softmax_topk",
        ),
        (dict(shared_expert_gate=True), "ModelConfig.shared_expert_gate: only applies with shared_expert_d_ff > 0"),
        (dict(capacity_factor=0.0), "ModelConfig.capacity_factor: must be > 0, or null for dropless"),
        (dict(num_experts=0), "ModelConfig.d_expert: only applies with num_experts > 0; here num_experts: 0"),
        (dict(moe_pattern=("dense",)), "ModelConfig.moe_pattern: .* with at least one moe"),
        (dict(dense_prefix_layers=1), "ModelConfig.dense_prefix_layers: must leave MoE layers: it is 1, num_layers=1"),
        (
            dict(dense_prefix_layers=1, num_layers=4, moe_pattern=("dense", "moe")),
            "ModelConfig.dense_prefix_layers: must be a multiple of the cycle, 2 layers, got 1",
        ),
        (dict(dense_prefix_layers=-1), "ModelConfig.dense_prefix_layers: must be a multiple of the cycle, 1 layers"),
    ],
)
def test_config_rejects_what_it_cannot_compute(kw, message):
    with pytest.raises(ValueError, match=message):
        make_spec(**kw)


@pytest.mark.parametrize(
    "preset, overrides, message",
    [
        (
            "llama-tiny",
            ["model.experts_per_token=3"],
            "ModelConfig.experts_per_token: only applies with num_experts > 0; here num_experts: 0 "
            "(model.experts_per_token=3 from the command line; model.num_experts=0 by default)",
        ),
        (
            "grok-tiny",
            ["model.experts_per_token=5"],
            "ModelConfig.experts_per_token: must be in 1..num_experts=4, got 5 (model.experts_per_token=5 from the "
            "command line; model.num_experts=4 from configs/grok.yaml preset 'grok-tiny')",
        ),
        (
            "grok-tiny",
            ["model.num_experts=0"],
            "ModelConfig.load_balancing_multiplier: only applies with num_experts > 0; here num_experts: 0 "
            "(model.load_balancing_multiplier=0.01 from configs/grok.yaml preset 'grok-tiny'; model.num_experts=0 "
            "from the command line)",
        ),
    ],
)
def test_a_bad_moe_field_names_where_each_value_came_from(preset, overrides, message):
    from zoo.train.config import UserError, resolve

    with pytest.raises(UserError) as e:
        resolve(preset, overrides)
    assert str(e.value) == message


def test_padded_blocks_over_many_rows_equal_ragged_dot():
    """Enough rows (2 x 256 tokens, k = 2: 1024) for blocks of 128 over 4 experts, one of them empty and one
    taking most rows; forward and gradients agree."""
    spec = make_spec(router_bias=True, moe_matmul="blocks")
    cfg, x = make_cfg(), jnp.asarray(inputs(length=256))
    params = random_params(cfg, spec)
    params["router"]["bias"] = np.array([3.0, 0.0, -40.0, 0.5], np.float32)

    def run(matmul):
        module = MoeMlp(moe(cfg, make_spec(router_bias=True, moe_matmul=matmul)))
        return jax.jit(jax.value_and_grad(lambda p: jnp.sum(jnp.sin(module.apply({"params": p}, x)))))(params)

    (blocks, g_blocks), (ragged, g_ragged) = run("blocks"), run("ragged_dot")
    np.testing.assert_allclose(blocks, ragged, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_blocks, g_ragged)


@pytest.mark.parametrize(
    "matmul, mesh_shape", [("ragged_dot", (8, 1, 1, 1)), ("blocks", (8, 1, 1, 1)), ("ragged_dot", (2, 1, 1, 4))]
)
def test_dropless_work_is_split_over_the_mesh(matmul, mesh_shape):
    """Each device computes its share of the assignments, not the whole batch's: 8-way data parallelism (and data 2
    x expert 4, whose devices each take the assignments to their 2 of 8 experts among 4 devices' tokens) compiles
    to at most 1/8 of one device's FLOPs, plus a little for the shared router. GSPMD alone sorted the global batch
    on every device (the same FLOPs per device as on one)."""
    data, fsdp, tensor, expert = mesh_shape
    cfg = make_cfg().replace(max_seq_len=64, **{"num_experts": 8, "experts_per_token": 2, "d_expert": 16})
    module, x = MoeMlp(cfg.replace(moe_matmul=matmul)), jnp.ones((16, 64, D_MODEL))
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
    params = nn.meta.unbox(abstract)
    one = jax.jit(module.apply).lower(params, x).compile().cost_analysis()["flops"]
    mesh = make_mesh(data, fsdp, tensor, expert=expert, devices=jax.devices("cpu"))
    shardings = param_shardings(abstract, mesh)
    with use_mesh(mesh):
        lowered = jax.jit(module.apply, in_shardings=(shardings, batch_sharding(mesh, 16))).lower(params, x)
        per_device = lowered.compile().cost_analysis()["flops"]
    assert per_device < one / 8 * 1.1, (per_device, one)
