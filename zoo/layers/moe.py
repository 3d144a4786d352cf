"""The mixture-of-experts MLP (Shazeer 2017; GShard, Lepikhin 2020; Switch Transformer, Fedus 2021): a router
sends each token to k of E expert MLPs and sums their outputs, weighted by its router scores.

Two ways to run the experts, both exact for the tokens they keep:
  dropless   (capacity_factor None) every assignment is computed: the (token, choice) pairs are sorted by
             expert and each expert's contiguous rows go through one grouped matmul, jax.lax.ragged_dot (the
             MegaBlocks formulation, Gale 2022), then unsorted and summed.
  capacity   GShard's dispatch/combine einsums: each expert takes at most C assignments per sequence, the
             rest are dropped (their routed output is zero; the residual stream carries the token on).

Which is cheaper depends on the backend: TPU runs ragged_dot as a grouped matmul, but on CPU jax lowers it to a
masked dense matmul per expert (jax-ml/jax jax/_src/lax/lax.py, _ragged_dot_general_impl), E times the FLOPs needed;
so on CPU the dropless path pads each expert's rows to whole blocks and multiplies the blocks instead
(block_matmul; ModelConfig.moe_matmul chooses).
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
from zoo.layers.init import dtype_of, initializer
from zoo.layers.mlp import ACTIVATION_FNS, Mlp


def route(logits, cfg: ModelConfig):
    """logits: [..., E] float32 -> (weights [..., k] float32, experts [..., k] int32), best first.
    Equal scores go to the lower expert index (jax.lax.top_k's order)."""
    k = cfg.experts_per_token
    if cfg.router == "topk_softmax":
        top_logits, experts = jax.lax.top_k(logits, k)
        return jax.nn.softmax(top_logits, axis=-1), experts
    weights, experts = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), k)
    if cfg.router_renormalize:
        weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return weights, experts


def capacity(tokens: int, cfg: ModelConfig, factor: float) -> int:
    """Assignments one expert takes from a sequence of `tokens`: ceil(tokens k / E * factor), at most `tokens`
    (a token picks an expert once), so a large enough factor drops nothing."""
    return min(tokens, math.ceil(tokens * cfg.experts_per_token * factor / cfg.num_experts))


def router_stats(logits, experts, real, kept) -> dict[str, jax.Array]:
    """What a trainer reads per MoE layer, averaged over the real tokens.

    logits [N, E] float32; experts [N, k]; real [N] (1 = a token, 0 = padding); kept [N, k] (1 = the
    assignment was computed, 0 = dropped by capacity).
      load_balancing_loss  E * sum_e f_e P_e (Switch eq. 4-6), f_e = assignments to e per token over all k
                           choices and P_e = mean router probability, as in huggingface/transformers
                           src/transformers/models/mixtral/modeling_mixtral.py, load_balancing_loss_func: its
                           minimum, under uniform routing, is k. HF pools the layers before this product; here it
                           is per layer.
      router_z_loss        mean logsumexp(logits)^2 (ST-MoE, Zoph 2022, eq. 5).
      tokens_per_expert    [E] assignments each expert was sent, before capacity drops.
      dropped_fraction     dropped assignments / all assignments.
      router_entropy       mean entropy of the softmax over all experts (nats).
    """
    num_experts = logits.shape[-1]
    count = jnp.maximum(jnp.sum(real), 1.0)
    probs = jax.nn.softmax(logits, axis=-1)
    tokens_per_expert = jnp.sum(jax.nn.one_hot(experts, num_experts) * real[:, None, None], axis=(0, 1))
    mean_prob = jnp.sum(probs * real[:, None], axis=0) / count
    entropy = -jnp.sum(probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return {
        "load_balancing_loss": num_experts * jnp.sum(tokens_per_expert / count * mean_prob),
        "router_z_loss": jnp.sum(jnp.square(jax.nn.logsumexp(logits, axis=-1)) * real) / count,
        "tokens_per_expert": tokens_per_expert,
        "dropped_fraction": 1.0 - jnp.sum(kept * real[:, None]) / (count * experts.shape[-1]),
        "router_entropy": jnp.sum(entropy * real) / count,
    }


def grouped_matmul_impl(cfg: ModelConfig) -> str:
    """moe_matmul resolved: auto is blocks on CPU (where ragged_dot runs every row through every expert), else
    ragged_dot."""
    if cfg.moe_matmul != "auto":
        return cfg.moe_matmul
    return "blocks" if jax.default_backend() == "cpu" else "ragged_dot"


def block_matmul(sorted_experts, group_sizes, num_experts: int):
    """A grouped matmul for rows sorted by expert, as (h [M, in], kernel [E, in, out]) -> [M, out]: each
    expert's rows are placed in whole blocks of `block` rows (its last block padded with zeros), every block
    is multiplied by its own expert's kernel in one batched matmul, and the rows are read back. The MegaBlocks
    layout (Gale 2022) with dense blocks: at most E (block - 1) padding rows, against ragged_dot's CPU lowering,
    which multiplies all M rows by every kernel."""
    rows = sorted_experts.shape[0]
    block = max(8, min(128, 1 << max(0, (rows // (2 * num_experts)).bit_length() - 1)))  # ~ half a group
    padded = -(-(rows + num_experts * (block - 1)) // block) * block  # a static bound on the padded rows
    padded_sizes = -(-group_sizes // block) * block
    padded_ends = jnp.cumsum(padded_sizes)
    rank = jnp.arange(rows) - (jnp.cumsum(group_sizes) - group_sizes)[sorted_experts]
    position = (padded_ends - padded_sizes)[sorted_experts] + rank  # each row's place in the padded layout
    # Blocks past the last expert's hold only zeros; any kernel will do for them.
    block_expert = jnp.searchsorted(padded_ends, jnp.arange(0, padded, block), side="right")
    block_expert = jnp.minimum(block_expert, num_experts - 1)

    def matmul(h, kernel):
        blocks = jnp.zeros((padded, h.shape[1]), h.dtype).at[position].set(h).reshape(padded // block, block, -1)
        out = jnp.einsum("bri,bio->bro", blocks, kernel[block_expert])
        return out.reshape(padded, -1)[position]

    return matmul


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
        weights, experts = route(logits, cfg)
        weights = weights * real[..., None]
        factor = cfg.eval_capacity_factor if self.deterministic else cfg.capacity_factor
        if factor is None:
            k = cfg.experts_per_token
            out = self._dropless(x.reshape(-1, d_model), weights.reshape(-1, k), experts.reshape(-1, k))
            out, kept = out.reshape(x.shape), jnp.ones(experts.shape, jnp.float32)
        else:
            out, kept = self._with_capacity(x, weights, experts, real, capacity(length, cfg, factor))
        stats = router_stats(
            logits.reshape(-1, cfg.num_experts),
            experts.reshape(-1, cfg.experts_per_token),
            real.reshape(-1),
            kept.reshape(-1, cfg.experts_per_token),
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

    def _experts(self, h, matmul, bias_of):
        """The expert MLPs on rows h: matmul(h, kernel [E, in, out]) applies each row's expert's kernel and
        bias_of(bias [E, out]) gives each row's expert's bias. Gated as in Mlp when mlp_activations has two."""
        cfg = self.cfg
        num_experts, d_model = cfg.num_experts, cfg.d_model
        branches = []
        for i, act in enumerate(cfg.mlp_activations):
            name = f"wi_{i}" if cfg.is_gated else "wi"
            shape = (num_experts, d_model, cfg.d_expert)
            kernel, bias = ExpertDense(cfg, shape, ("expert", "embed", "mlp"), "mlp_in", name=name)()
            z = matmul(h, kernel)
            branches.append(ACTIVATION_FNS[act](z if bias is None else z + bias_of(bias)))
        h = branches[0] * branches[1] if cfg.is_gated else branches[0]
        h = nn.Dropout(cfg.mlp_hidden_dropout, deterministic=self.deterministic)(h)
        shape = (num_experts, cfg.d_expert, d_model)
        kernel, bias = ExpertDense(cfg, shape, ("expert", "mlp", "embed"), "mlp_out", name="wo")()
        out = matmul(h, kernel)
        return out if bias is None else out + bias_of(bias)

    def _dropless(self, x, weights, experts):
        """x [N, d_model], weights [N, k], experts [N, k] -> [N, d_model]: the N k assignments sorted by
        expert, so each expert's rows are contiguous; no row meets an expert it did not pick."""
        cfg, k = self.cfg, self.cfg.experts_per_token
        flat_experts = experts.reshape(-1)
        order = jnp.argsort(flat_experts, stable=True)
        group_sizes = jnp.bincount(flat_experts, length=cfg.num_experts).astype(jnp.int32)
        sorted_experts = flat_experts[order]
        if grouped_matmul_impl(cfg) == "blocks":
            matmul = block_matmul(sorted_experts, group_sizes, cfg.num_experts)
        else:
            matmul = lambda h, kernel: jax.lax.ragged_dot(h, kernel, group_sizes)  # noqa: E731
        y = self._experts(
            x[order // k].astype(dtype_of(cfg.dtype)), matmul=matmul, bias_of=lambda bias: bias[sorted_experts]
        )
        y = y[jnp.argsort(order)].reshape(x.shape[0], k, -1)
        return jnp.einsum("nkd,nk->nd", y.astype(jnp.float32), weights).astype(y.dtype)

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
        dispatch = jnp.sum(slot, axis=2)
        combine = jnp.einsum("btkec,btk->btec", slot, weights)
        expert_in = jnp.einsum("btec,btd->ebcd", dispatch.astype(dtype), x.astype(dtype))
        expert_in = nn.with_logical_constraint(expert_in, ("expert", "batch", None, "embed"))
        expert_out = self._experts(
            expert_in,
            matmul=lambda h, kernel: jnp.einsum("ebcd,edf->ebcf", h, kernel),
            bias_of=lambda bias: bias[:, None, None, :],
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
