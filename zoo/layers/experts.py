"""The routed experts' computation for the dropless path (zoo/layers/moe.py routes; this runs the experts): each
(token, choice) assignment is sorted by expert and each expert's contiguous rows go through one grouped matmul,
jax.lax.ragged_dot (the MegaBlocks formulation, Gale 2022), then unsorted and summed with the router weights.

On CPU jax lowers ragged_dot to a masked dense matmul per expert (jax-ml/jax jax/_src/lax/lax.py,
_ragged_dot_general_impl), E times the FLOPs needed, so there the rows are padded to whole blocks of one expert
each and the blocks multiplied in one batched matmul instead (block_matmul; ModelConfig.moe_matmul chooses).

Under a device mesh (zoo.sharding.use_mesh) the sort must not span the global batch: GSPMD then gathers every
token onto every device (measured, 8 emulated CPU devices, 8-way data parallel, before this module: the jitted
MoE MLP compiled to the same FLOPs per device as on one device, 1.64e9, behind an all-gather of the tokens). So
the computation runs in jax.shard_map, each device on its own sequences:
  expert axis  each device keeps E / n whole experts. The tokens of the devices along the expert axis are
               all-gathered, each device computes the assignments to its own experts, and a reduce-scatter
               hands each device the sums for its own tokens (MoEAllGatherTokenDispatcher in NVIDIA/Megatron-LM
               megatron/core/transformer/moe/token_dispatcher.py). An all-to-all dispatcher (GShard's) moves
               about k / n of these bytes: not built yet, so a wide expert axis pays n / k times the traffic and holds
               n devices' tokens per device. An
               expert axis the batch is not split over needs no gather: the sums are all-reduced.
  tensor axis  each device holds a slice of every expert's hidden units; the output projection's partial sums
               are all-reduced (Megatron's row-parallel linear layer).
  fsdp         expert kernels split along `embed` are gathered whole for the layer, as FSDP does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from zoo.config import ModelConfig
from zoo.layers.mlp import hidden


def grouped_matmul_impl(cfg: ModelConfig, platform: str | None = None) -> str:
    """moe_matmul resolved for `platform` (default: jax.default_backend()): auto is blocks on CPU (where ragged_dot
    runs every row through every expert), else ragged_dot."""
    if cfg.moe_matmul != "auto":
        return cfg.moe_matmul
    return "blocks" if (platform or jax.default_backend()) == "cpu" else "ragged_dot"


def block_matmul(sorted_groups, group_sizes):
    """A grouped matmul for rows sorted by group, as (h [M, in], kernel [G, in, out]) -> [M, out]: each group's rows
    are placed in whole blocks of `block` rows (its last block padded with zeros), every block is multiplied by its
    own group's kernel in one batched matmul, and the rows are read back. Rows of group G or more (sorted last, as
    ragged_dot leaves the rows past sum(group_sizes)) come back as zeros. The MegaBlocks layout (Gale 2022) with
    dense blocks: at most G (block - 1) padding rows, against ragged_dot's CPU lowering, which multiplies all M
    rows by every kernel."""
    rows, num_groups = sorted_groups.shape[0], group_sizes.shape[0]
    block = max(8, min(128, 1 << max(0, (rows // (2 * num_groups)).bit_length() - 1)))  # ~ half a group
    padded = -(-(rows + num_groups * (block - 1)) // block) * block  # a static bound on the padded rows
    padded_sizes = -(-group_sizes // block) * block
    padded_ends = jnp.cumsum(padded_sizes)
    group = jnp.minimum(sorted_groups, num_groups - 1)
    rank = jnp.arange(rows) - (jnp.cumsum(group_sizes) - group_sizes)[group]
    # Each row's place in the padded layout; `padded` (out of bounds: dropped, read as zeros) past the groups.
    position = jnp.where(sorted_groups < num_groups, (padded_ends - padded_sizes)[group] + rank, padded)
    # Blocks past the last group's hold only zeros; any kernel will do for them.
    block_group = jnp.minimum(jnp.searchsorted(padded_ends, jnp.arange(0, padded, block), side="right"), num_groups - 1)

    def matmul(h, kernel):
        blocks = jnp.zeros((padded, h.shape[1]), h.dtype).at[position].set(h, mode="drop")
        out = jnp.einsum("bri,bio->bro", blocks.reshape(padded // block, block, -1), kernel[block_group])
        return out.reshape(padded, -1).at[position].get(mode="fill", fill_value=0)

    return matmul


def expert_mlp(cfg: ModelConfig, h, params: dict, matmul: Callable, bias_of: Callable, dropout: Callable, reduce=None):
    """The expert MLPs on rows h: matmul(h, kernel [E, in, out]) applies each row's expert's kernel, bias_of(bias
    [E, out]) gives each row's expert's bias; the hidden units as Mlp's (zoo.layers.mlp.hidden). params: {wi | wi_0,
    wi_1, wo: {kernel[, bias]}}. `reduce` sums the output projection's partial sums before its bias."""
    pre = []
    for i in range(len(cfg.mlp_activations)):
        layer = params[f"wi_{i}" if cfg.is_gated else "wi"]
        z = matmul(h, layer["kernel"])
        pre.append(z + bias_of(layer["bias"]) if "bias" in layer else z)
    h = dropout(hidden(cfg, pre))
    out = matmul(h, params["wo"]["kernel"])
    if reduce is not None:
        out = reduce(out)
    return out + bias_of(params["wo"]["bias"]) if "bias" in params["wo"] else out


def dropless(cfg: ModelConfig, x, weights, experts, params: dict, keep=None, *, gather=(), reduce=(), tensor=()):
    """x [B, T, d], weights and experts [B, T, k], params (expert_mlp's, E_local experts) -> [B, T, d]; `keep`
    [B, T, k, d_expert]: the hidden-unit dropout mask (True = kept), None = no dropout. In jax.shard_map: the
    tokens are all-gathered over the mesh axes `gather` and the result reduce-scattered over them; partial sums
    are all-reduced over `reduce` (an expert axis the batch is not split over) and `tensor` (hidden units)."""
    experts_axes = (*gather, *reduce)
    if gather:
        x, weights, experts = (jax.lax.all_gather(a, gather, axis=0, tiled=True) for a in (x, weights, experts))
        keep = None if keep is None else jax.lax.all_gather(keep, gather, axis=0, tiled=True)
    batch, length, d_model = x.shape
    k, num_local = cfg.experts_per_token, params["wo"]["kernel"].shape[0]
    first = jax.lax.axis_index(experts_axes) * num_local if experts_axes else 0
    groups = experts.reshape(-1) - first
    local = (groups >= 0) & (groups < num_local)
    groups = jnp.where(local, groups, num_local)  # other devices' experts: sorted last, in no group
    order = jnp.argsort(groups, stable=True)
    sorted_groups = groups[order]
    group_sizes = jnp.bincount(groups, length=num_local + 1)[:num_local].astype(jnp.int32)
    if grouped_matmul_impl(cfg) == "blocks":
        matmul = block_matmul(sorted_groups, group_sizes)
    else:
        matmul = lambda h, kernel: jax.lax.ragged_dot(h, kernel, group_sizes)  # noqa: E731
    rate = cfg.mlp_hidden_dropout

    def dropout(h):
        return h if keep is None else jnp.where(keep.reshape(-1, h.shape[-1])[order], h / (1.0 - rate), 0.0)

    rows = x.reshape(-1, d_model)[order // k]
    if cfg.router_weights_input:  # Llama 4: each expert gets its weighted token, the outputs are summed as they are
        rows = rows * weights.reshape(-1)[order][:, None].astype(rows.dtype)
        weights = jnp.ones_like(weights)
    y = expert_mlp(
        cfg,
        rows.astype(params["wo"]["kernel"].dtype),  # the compute dtype
        params,
        matmul,
        bias_of=lambda bias: bias[jnp.minimum(sorted_groups, num_local - 1)],
        dropout=dropout,
        reduce=(lambda out: jax.lax.psum(out, tensor)) if tensor else None,
    )
    y = jnp.where(local[:, None], y[jnp.argsort(order)], 0.0).reshape(-1, k, d_model)
    out = jnp.einsum("nkd,nk->nd", y.astype(jnp.float32), weights.reshape(-1, k)).reshape(batch, length, d_model)
    if gather:
        out = jax.lax.psum_scatter(out, gather, scatter_dimension=0, tiled=True)
    if reduce:
        out = jax.lax.psum(out, reduce)
    return out.astype(y.dtype)


def _mesh_axes(mesh, logical: str, size: int, taken=()) -> tuple[str, ...]:
    """The mesh axes the active logical rules give `logical`, less `taken` and those of size 1, cut to the longest
    prefix whose sizes divide `size` (the fallback zoo.sharding uses for params)."""
    spec = nn.logical_to_mesh_axes((logical,))
    axes = spec[0] if spec is not None else None
    axes = tuple(a for a in ((axes,) if isinstance(axes, str) else axes or ()) if a not in taken and mesh.shape[a] > 1)
    while axes and size % math.prod(mesh.shape[a] for a in axes):
        axes = axes[:-1]
    return axes


def per_shard(fn: Callable, *arrays):
    """fn(*arrays) on each device's own rows, where the active logical rules split the leading `batch` axis over
    the current mesh: for row-wise functions GSPMD would gather (the router's top_k, lowered on CPU as a 2-D
    custom call over the flattened batch). Without a mesh, fn(*arrays)."""
    mesh = jax.sharding.get_abstract_mesh()
    batch = () if mesh.empty else _mesh_axes(mesh, "batch", arrays[0].shape[0])
    if not batch:
        return fn(*arrays)
    spec = P(batch[0] if len(batch) == 1 else batch)
    return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec)(*arrays)


def sharded_dropless(cfg: ModelConfig, x, weights, experts, params: dict, keep=None):
    """dropless over the current mesh (jax.set_mesh), per device as the module docstring says; without one, or on
    one device, dropless itself."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return dropless(cfg, x, weights, experts, params, keep)
    batch = _mesh_axes(mesh, "batch", x.shape[0])
    expert = _mesh_axes(mesh, "expert", cfg.num_experts)
    tensor = _mesh_axes(mesh, "mlp", cfg.d_expert, taken=(*batch, *expert))
    gather = tuple(a for a in expert if a in batch)
    reduce = tuple(a for a in expert if a not in batch)

    def spec(*dims):
        return P(*(None if not d else d[0] if len(d) == 1 else d for d in dims))

    kernel_specs = {
        name: {"kernel": spec(expert, (), tensor) if name != "wo" else spec(expert, tensor, ()), "bias": None}
        for name in params
    }
    for name, layer in params.items():
        if "bias" in layer:
            kernel_specs[name]["bias"] = spec(expert, tensor) if name != "wo" else spec(expert, ())
        else:
            del kernel_specs[name]["bias"]
    tokens = spec(batch, (), ())
    args, specs = [x, weights, experts, params], [tokens, tokens, tokens, kernel_specs]
    if keep is not None:
        args.append(keep)
        specs.append(spec(batch, (), (), tensor))

    def run(x, weights, experts, params, keep=None):
        return dropless(cfg, x, weights, experts, params, keep, gather=gather, reduce=reduce, tensor=tensor)

    return jax.shard_map(run, mesh=mesh, in_specs=tuple(specs), out_specs=tokens)(*args)
