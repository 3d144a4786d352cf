"""The mixture-of-experts MLP (Shazeer 2017; GShard, Lepikhin 2020; Switch Transformer, Fedus 2021): a router
sends each token to k of E expert MLPs and sums their outputs, weighted by its router scores (or, Llama 4, its
inputs weighted: router_weights_input).

Two ways to run the experts, both exact for the tokens they keep:
  dropless   (capacity_factor None) every assignment is computed: the (token, choice) pairs are sorted by
             expert and each expert's contiguous rows go through one grouped matmul (zoo/layers/experts.py,
             which also splits the work over a device mesh), then unsorted and summed.
  capacity   GShard's dispatch/combine einsums: each expert takes at most C assignments per sequence, the
             rest are dropped (their routed output is zero; the residual stream carries the token on).

Measured with jax 0.10.2 on a 2-core CPU (`nproc` = 2, shared with other jobs), jitted forward+backward, 4096
tokens, d_model 512, d_expert 1024, E=8, k=2 (SwiGLU): ragged_dot 8.6 s (620 GFLOP by XLA's count), a dense
one-hot einsum over every expert 5.1 s (310 G), a per-expert gather loop with its token lists fixed in advance
0.86 s (78 G); this module's capacity path at factor 1.25, 2.3 s (151 G).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from zoo.config import ModelConfig
from zoo.layers.dense import dense
from zoo.layers.experts import expert_mlp, per_shard, sharded_dropless
from zoo.layers.init import dtype_of, initializer
from zoo.layers.mlp import Mlp

BALANCE_BIAS = "balance_bias"
"""The param name of router_balance_bias's per-expert bias (a buffer: zoo.model.BUFFERS)."""


def route(logits, cfg: ModelConfig, selection_bias=None):
    """logits: [..., E] float32 -> (weights [..., k] float32, experts [..., k] int32), best first, the weights
    times router_weight_scale. `selection_bias` ([..., E], router_balance_bias) shifts the scores that choose the
    experts, not the weights. Equal scores go to the lower expert index (jax.lax.top_k's order)."""
    scores = router_scores(logits, cfg)
    choice = scores if selection_bias is None else scores + selection_bias
    _, experts = jax.lax.top_k(_within_groups(choice, cfg) if cfg.router_groups > 1 else choice, cfg.experts_per_token)
    weights = jnp.take_along_axis(scores, experts, axis=-1)
    if cfg.router == "topk_softmax":
        weights = jax.nn.softmax(weights, axis=-1)
    elif cfg.router_renormalize:
        weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return weights * cfg.router_weight_scale, experts


def router_scores(logits, cfg: ModelConfig):
    """What the top k is taken of: the logits (topk_softmax), their softmax, or each one's sigmoid."""
    if cfg.router == "topk_softmax":
        return logits
    return jax.nn.sigmoid(logits) if cfg.router == "sigmoid_topk" else jax.nn.softmax(logits, axis=-1)


def router_probs(logits, cfg: ModelConfig):
    """The router's distribution over experts and its log, for the balancing loss and the entropy: the softmax, or
    for sigmoid scores those divided by their sum (DeepSeek-V3 eq. 19's s')."""
    if cfg.router != "sigmoid_topk":
        return jax.nn.softmax(logits, axis=-1), jax.nn.log_softmax(logits, axis=-1)
    log_scores = jax.nn.log_sigmoid(logits)
    log_probs = log_scores - jax.nn.logsumexp(log_scores, axis=-1, keepdims=True)
    return jnp.exp(log_probs), log_probs


def _within_groups(scores, cfg: ModelConfig):
    """scores [..., E] with every expert outside the token's router_groups_per_token best groups at -inf, a group
    scoring the sum of its router_group_score_experts best scores: DeepSeek-V2's group-limited greedy routing
    (its best one, transformers' DeepseekV2TopkRouter) and V3's (its best two, DeepseekV3TopkRouter)."""
    groups = cfg.router_groups
    grouped = scores.reshape(*scores.shape[:-1], groups, -1)
    best = jnp.sum(jax.lax.top_k(grouped, cfg.router_group_score_experts)[0], axis=-1)  # [..., groups]
    _, kept = jax.lax.top_k(best, cfg.router_groups_per_token)
    allowed = jnp.any(jax.nn.one_hot(kept, groups, dtype=jnp.bool_), axis=-2)  # [..., groups]
    return jnp.where(jnp.repeat(allowed, cfg.num_experts // groups, axis=-1), scores, -jnp.inf)


def capacity(tokens: int, cfg: ModelConfig, factor: float) -> int:
    """Assignments one expert takes from a sequence of `tokens`: ceil(tokens k / E * factor), at most `tokens`
    (a token picks an expert once), so a large enough factor drops nothing."""
    return min(tokens, math.ceil(tokens * cfg.experts_per_token * factor / cfg.num_experts))


def router_stats(logits, probs, log_probs, experts, real, kept, sequences: int = 1) -> dict[str, jax.Array]:
    """What a trainer reads per MoE layer, averaged over the real tokens.

    logits [N, E] float32; probs and log_probs [N, E] (router_probs); experts [N, k]; real [N] (1 = a token,
    0 = padding); kept [N, k] (1 = the assignment was computed, 0 = dropped by capacity).
      load_balancing_loss  E * sum_e f_e P_e (Switch eq. 4-6), f_e = assignments to e per token over all k
                           choices and P_e = mean router probability, as in huggingface/transformers
                           src/transformers/models/mixtral/modeling_mixtral.py, load_balancing_loss_func: its
                           minimum, under uniform routing, is k. HF pools the layers before this product; here it
                           is per layer. With `sequences` > 1 (the N rows are that many sequences in order), per
                           sequence and then averaged over the sequences with a real token (DeepSeek-V3's
                           sequence-wise balance loss, arXiv:2412.19437 eqs. 17-20: k times its L_Bal / alpha).
      router_z_loss        mean logsumexp(logits)^2 (ST-MoE, Zoph 2022, eq. 5).
      tokens_per_expert    [E] assignments each expert was sent, before capacity drops.
      dropped_fraction     dropped assignments / all assignments.
      router_entropy       mean entropy of probs (nats).
    """
    num_experts = logits.shape[-1]
    count = jnp.maximum(jnp.sum(real), 1.0)
    chosen = jnp.sum(jax.nn.one_hot(experts, num_experts) * real[:, None, None], axis=1)  # [N, E]
    tokens_per_expert = jnp.sum(chosen, axis=0)
    entropy = -jnp.sum(probs * log_probs, axis=-1)
    return {
        "load_balancing_loss": _balancing_loss(chosen, probs, real, sequences),
        "router_z_loss": jnp.sum(jnp.square(jax.nn.logsumexp(logits, axis=-1)) * real) / count,
        "tokens_per_expert": tokens_per_expert,
        "dropped_fraction": 1.0 - jnp.sum(kept * real[:, None]) / (count * experts.shape[-1]),
        "router_entropy": jnp.sum(entropy * real) / count,
    }


def _balancing_loss(chosen, probs, real, sequences: int):
    """E * sum_e f_e P_e within each of `sequences` equal groups of rows, averaged over the groups with a token."""
    num_experts = chosen.shape[-1]
    chosen, probs = (a.reshape(sequences, -1, num_experts) for a in (chosen, probs))
    real = real.reshape(sequences, -1)
    tokens = jnp.sum(real, axis=-1)  # [S]
    per_token = jnp.sum(chosen, axis=1) / jnp.maximum(tokens, 1.0)[:, None]
    mean_prob = jnp.sum(probs * real[..., None], axis=1) / jnp.maximum(tokens, 1.0)[:, None]
    losses = num_experts * jnp.sum(per_token * mean_prob, axis=-1)
    has_tokens = (tokens > 0).astype(losses.dtype)
    return jnp.sum(losses * has_tokens) / jnp.maximum(jnp.sum(has_tokens), 1.0)


def _per_expert(init):
    """An initialiser for stacked [E, fan_in, fan_out] kernels that draws each expert's kernel as the dense
    layer's would be drawn: the initialisers read fan-in from axis 0 of a 2-D shape (zoo.layers.init)."""

    def init_stacked(key, shape, dtype=jnp.float32):
        return jax.vmap(lambda k: init(k, shape[1:], dtype))(jax.random.split(key, shape[0]))

    return init_stacked


class ExpertDense(nn.Module):
    """E stacked kernels [E, in, out] (and biases [E, out]), returned in the compute dtype for the caller's
    grouped matmul."""

    cfg: ModelConfig
    shape: tuple[int, int, int]
    axes: tuple[str, str, str]
    role: str

    @nn.compact
    def __call__(self):
        cfg, dtype = self.cfg, dtype_of(self.cfg.dtype)
        kernel_init = nn.with_logical_partitioning(_per_expert(initializer(cfg, self.role)), self.axes, rules=())
        kernel = self.param("kernel", kernel_init, self.shape, dtype_of(cfg.param_dtype))
        if not cfg.mlp_bias:
            return kernel.astype(dtype), None
        bias_init = nn.with_logical_partitioning(nn.initializers.zeros, (self.axes[0], self.axes[2]), rules=())
        bias = self.param("bias", bias_init, (self.shape[0], self.shape[2]), dtype_of(cfg.param_dtype))
        return kernel.astype(dtype), bias.astype(dtype)


class MoeMlp(nn.Module):
    """x: [B, T, d_model] -> [B, T, d_model], in place of Mlp. mask: [B, T], True = a real token; padding
    gets no routed output, takes no expert capacity and is left out of the statistics.

    Sows router_stats' entries in "intermediates" (apply with mutable=["intermediates"]). The router runs in
    float32 ("selective precision", Switch §2.4). Jitter draws from the "dropout" rng, the stream the trainer
    already passes and splits per layer."""

    cfg: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, mask=None):
        cfg = self.cfg
        batch, length, d_model = x.shape
        real = jnp.ones((batch, length), jnp.float32) if mask is None else mask.astype(jnp.float32)
        logits = self._router_logits(x)
        if cfg.router_balance_bias:  # a float32 buffer: the trainer moves it (zoo.train.router_losses.rebalance)
            init = nn.with_logical_partitioning(nn.initializers.zeros, (None,), rules=())
            bias = jax.lax.stop_gradient(self.param(BALANCE_BIAS, init, (cfg.num_experts,), jnp.float32))
            bias = jnp.broadcast_to(bias, logits.shape)  # per_shard splits every argument's batch axis
            weights, experts = per_shard(lambda scores, b: route(scores, cfg, b), logits, bias)
        else:
            weights, experts = per_shard(lambda scores: route(scores, cfg), logits)
        if not cfg.router_weights_input:  # padding is no expert's input (below) and has no routed output
            weights = weights * real[..., None]
        factor = cfg.eval_capacity_factor if self.deterministic else cfg.capacity_factor
        if factor is None:
            keep = None
            if cfg.mlp_hidden_dropout and not self.deterministic:  # drawn in token order: the same on any mesh
                shape = (*experts.shape, cfg.d_expert)
                keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - cfg.mlp_hidden_dropout, shape)
            out = sharded_dropless(cfg, x, weights, experts, self._expert_params(), keep)
            kept = jnp.ones(experts.shape, jnp.float32)
        else:
            out, kept = self._with_capacity(x, weights, experts, real, capacity(length, cfg, factor))
        if cfg.router_weights_input:
            out = out * real[..., None].astype(out.dtype)
        flat_logits = logits.reshape(-1, cfg.num_experts)
        stats = router_stats(
            flat_logits,
            *router_probs(flat_logits, cfg),
            experts.reshape(-1, cfg.experts_per_token),
            real.reshape(-1),
            kept.reshape(-1, cfg.experts_per_token),
            sequences=batch if cfg.load_balancing_per_sequence else 1,
        )
        for name, value in stats.items():
            self.sow("intermediates", name, value)
        if cfg.shared_expert_d_ff:
            out = out + self._shared(x)
        out = nn.with_logical_constraint(out, ("batch", "length", "embed"))
        return checkpoint_name(out, "mlp_out")

    def _router_logits(self, x):
        """[B, T, E] float32."""
        h = x.astype(jnp.float32)
        if self.cfg.router_jitter and not self.deterministic:
            eps = self.cfg.router_jitter
            h = h * jax.random.uniform(self.make_rng("dropout"), h.shape, minval=1.0 - eps, maxval=1.0 + eps)
        router = dense(
            self.cfg.replace(dtype="float32"),
            features=self.cfg.num_experts,
            axes=("embed", None),
            role="mlp_in",
            use_bias=self.cfg.router_bias,
            name="router",
        )
        return router(h)

    def _expert_params(self) -> dict:
        """{wi | wi_0, wi_1, wo: {kernel[, bias]}}: the E stacked expert kernels, in the compute dtype."""
        cfg = self.cfg
        e, d, f = cfg.num_experts, cfg.d_model, cfg.d_expert
        names = [f"wi_{i}" for i in range(len(cfg.mlp_activations))] if cfg.is_gated else ["wi"]
        layers = {n: ExpertDense(cfg, (e, d, f), ("expert", "embed", "mlp"), "mlp_in", name=n)() for n in names}
        layers["wo"] = ExpertDense(cfg, (e, f, d), ("expert", "mlp", "embed"), "mlp_out", name="wo")()
        return {name: {"kernel": w, **({} if b is None else {"bias": b})} for name, (w, b) in layers.items()}

    def _with_capacity(self, x, weights, experts, real, expert_capacity):
        """GShard's dispatch and combine (Lepikhin 2020, Algorithm 1, less its random dispatch of second
        choices), per sequence. An expert's queue is filled by every token's first choice in sequence order, then
        every second choice, and so on (first choices before second, as TokensChooseMaskedRouter in
        google/flaxformer flaxformer/architectures/moe/routing.py); an assignment past `expert_capacity` in its
        queue is dropped, and padding queues nowhere. Returns ([B, T, d_model], kept [B, T, k])."""
        batch, length, k = experts.shape
        dtype = dtype_of(self.cfg.dtype)
        real_token = real.astype(jnp.int32)[..., None, None]
        chosen = jax.nn.one_hot(experts, self.cfg.num_experts, dtype=jnp.int32) * real_token  # [B, T, k, E]
        queue = chosen.transpose(0, 2, 1, 3).reshape(batch, k * length, -1)  # choice-major, then position
        position = jnp.cumsum(queue, axis=1).reshape(batch, k, length, -1).transpose(0, 2, 1, 3) - 1
        # one_hot is all-zero for a position >= capacity: the dropped assignments vanish here.
        slot = jax.nn.one_hot(position, expert_capacity, dtype=jnp.float32) * chosen[..., None]  # [B, T, k, E, C]
        ones = jnp.ones_like(weights)
        weights_in, weights_out = (weights, ones) if self.cfg.router_weights_input else (ones, weights)
        dispatch = jnp.einsum("btkec,btk->btec", slot, weights_in)
        combine = jnp.einsum("btkec,btk->btec", slot, weights_out)
        expert_in = jnp.einsum("btec,btd->ebcd", dispatch.astype(dtype), x.astype(dtype))
        expert_in = nn.with_logical_constraint(expert_in, ("expert", "batch", None, "embed"))
        expert_out = expert_mlp(
            self.cfg,
            expert_in,
            self._expert_params(),
            matmul=lambda h, kernel: jnp.einsum("ebcd,edf->ebcf", h, kernel),
            bias_of=lambda bias: bias[:, None, None, :],
            dropout=nn.Dropout(self.cfg.mlp_hidden_dropout, deterministic=self.deterministic),
        )
        out = jnp.einsum("ebcd,btec->btd", expert_out.astype(jnp.float32), combine).astype(dtype)
        return out, jnp.sum(slot, axis=(-2, -1))

    def _shared(self, x):
        """The always-on dense expert; with shared_gate, Qwen2-MoE's sigmoid gate on its output (huggingface/
        transformers src/transformers/models/qwen2_moe/modeling_qwen2_moe.py, Qwen2MoeSparseMoeBlock.forward)."""
        cfg = self.cfg
        out = Mlp(cfg.replace(d_ff=self.cfg.shared_expert_d_ff), deterministic=self.deterministic, name="shared")(x)
        if not self.cfg.shared_expert_gate:
            return out
        gate = dense(cfg, features=1, axes=("embed", None), role="mlp_in", use_bias=False, name="shared_gate")(x)
        return jax.nn.sigmoid(gate) * out
