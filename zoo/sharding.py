"""Device mesh and logical-axis rules for JAX SPMD (GSPMD, Xu et al. 2021).

Layers name the axes of their params and key activations (``embed``, ``mlp``, ``heads`` ...) and never
mention devices. This file owns the one table, LOGICAL_RULES, that maps those names onto a 4-D mesh:

  data    pure data parallelism: batch split, params replicated.
  fsdp    batch split *and* params split along `embed` (ZeRO-3 / fully sharded data parallel).
  expert  expert parallelism (GShard, Lepikhin 2020): a MoE layer's stacked expert kernels split along
          `expert` (E), each device group holding E / expert whole experts; everywhere else it is one more
          data-parallel axis (the batch is split over data x fsdp x expert), as in GShard and MaxText.
  tensor  Megatron-style tensor parallelism: `mlp`, `heads`, `kv_heads`, `vocab` split (innermost: the
          axis that talks most gets the nearest devices).

Typical use::

    mesh = make_mesh(data=-1, fsdp=4, tensor=2)                 # expert=N as well for a MoE model
    abstract = jax.eval_shape(model.init, rng, tokens)          # nn.LogicallyPartitioned boxes
    shardings = param_shardings(abstract, mesh)                  # same tree, unboxed, of NamedSharding
    params = jax.jit(lambda r: nn.meta.unbox(model.init(r, tokens)), out_shardings=shardings)(rng)
    with use_mesh(mesh):                                         # activates nn.with_logical_constraint
        loss = jax.jit(step)(params, jax.device_put(batch, batch_sharding(mesh, len(batch))))
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "expert", "tensor")
BATCH_AXES = ("data", "fsdp", "expert")
"""The mesh axes a batch is split over, major to minor (batch_sharding and the `batch` rule agree)."""

# Logical axis -> mesh axes, in priority order: a mesh axis is used at most once per array, so on an
# activation (batch, length, embed) `batch` takes fsdp first and `embed` stays replicated, while on a
# param (embed, mlp) `embed` gets fsdp. `expert` comes first: in a MoE layer's dispatched tokens
# (expert, batch, capacity, embed) it takes the expert axis, and `batch` then falls to its second rule,
# data x fsdp (flax skips a rule whose mesh axes are taken and tries the next one for the same name).
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("expert", "expert"),
    ("batch", BATCH_AXES),
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("embed", "fsdp"),
    ("head_dim", None),
    ("latent", None),  # latent attention's compressed keys and values (a few hundred wide), replicated
    ("layers", None),  # the scan axis: every device holds its slice of every layer
    ("length", None),
    ("relpos_buckets", None),
    ("positions", None),
)


def check_mesh_sizes(sizes: dict[str, int]) -> None:
    """Axis sizes are positive integers, and at most one is -1 (all the devices the others leave)."""
    for axis, size in sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or (size < 1 and size != -1):
            raise ValueError(f"mesh axis {axis!r}: size must be a positive integer or -1, got {size!r}")
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"mesh axes {free} are all -1; at most one axis may take the rest")


def make_mesh(
    data: int = -1,
    fsdp: int = 1,
    tensor: int = 1,
    *,
    expert: int = 1,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A ("data", "fsdp", "expert", "tensor") mesh over `devices` (default: all). One size may be -1: the rest.
    (`expert` comes after `tensor` in the arguments so that make_mesh(data, fsdp, tensor) keeps its meaning.)"""
    devices = list(jax.devices() if devices is None else devices)
    sizes = {"data": data, "fsdp": fsdp, "expert": expert, "tensor": tensor}
    check_mesh_sizes(sizes)
    free = [axis for axis, size in sizes.items() if size == -1]
    fixed = math.prod(size for size in sizes.values() if size != -1)
    shown = ", ".join(f"{a}={s}" for a, s in sizes.items())
    if free:
        if len(devices) % fixed:
            raise ValueError(
                f"mesh axis {free[0]!r} = -1 cannot take the rest: the other axes' product "
                f"{fixed} ({shown}) does not divide the {len(devices)} devices"
            )
        sizes[free[0]] = len(devices) // fixed
    elif fixed != len(devices):
        raise ValueError(
            f"mesh {shown} needs {fixed} devices but there are {len(devices)}; set one axis to -1 or pass devices="
        )
    shape = tuple(sizes[a] for a in MESH_AXES)
    # Auto axes: the compiler propagates shardings from the constraints we give it (flax's logical
    # constraints), instead of jax's explicit-sharding mode that jax.make_mesh now defaults to.
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def _fit(dim: int, axes, mesh: Mesh):
    """The longest prefix of `axes` whose mesh size divides `dim` (None: replicate this dimension)."""
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    while axes and dim % math.prod(mesh.shape[a] for a in axes):
        axes = axes[:-1]
    return None if not axes else axes[0] if len(axes) == 1 else axes


def logical_to_sharding(logical: P, shape: Sequence[int], mesh: Mesh, rules=LOGICAL_RULES) -> NamedSharding:
    """NamedSharding for one array with logical axis names `logical`.

    A dimension the mesh axes don't divide falls back to replication on that axis (e.g. multi-query
    attention's kv_heads = 1 on tensor = 2): always valid, at the cost of a copy per device.
    """
    known = {name for name, _ in rules}
    for name in logical:
        if name is not None and name not in known:  # a typo would otherwise silently replicate
            raise ValueError(f"logical axis {name!r} has no sharding rule; known: {', '.join(sorted(known))}")
    spec = nn.logical_to_mesh_axes(tuple(logical), rules)
    assert spec is not None  # None only for logical=None
    return NamedSharding(mesh, P(*(_fit(dim, axes, mesh) for dim, axes in zip(shape, spec, strict=True))))


def param_shardings(abstract_params, mesh: Mesh, rules=LOGICAL_RULES):
    """Tree of NamedSharding (the structure of the *unboxed* params) for a tree of nn.LogicallyPartitioned
    boxes, e.g. ``jax.eval_shape(model.init, ...)``. Unboxed leaves are replicated."""
    specs = nn.get_partition_spec(abstract_params)
    shapes = nn.meta.unbox(abstract_params)
    return jax.tree.map(
        lambda spec, leaf: logical_to_sharding(spec, np.shape(leaf), mesh, rules),
        specs,
        shapes,
        is_leaf=lambda x: isinstance(x, P),
    )


def data_parallelism(mesh: Mesh) -> int:
    """Ways the batch is split: data * fsdp * expert."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raise unless every device gets the same number of whole sequences."""
    ways = data_parallelism(mesh)
    if batch_size % ways:
        raise ValueError(
            f"batch size {batch_size} is not divisible by {' * '.join(BATCH_AXES)} = "
            f"{' * '.join(str(mesh.shape[a]) for a in BATCH_AXES)} = {ways}"
        )


def batch_sharding(mesh: Mesh, batch_size: int | None = None) -> NamedSharding:
    """Sharding of a (batch, ...) input array: batch split over data, fsdp and expert, the rest replicated.
    Pass the (micro-)batch size to check that it divides."""
    if batch_size is not None:
        check_batch_size(batch_size, mesh)
    return NamedSharding(mesh, P(BATCH_AXES))


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules=LOGICAL_RULES):
    """Make `mesh` current and `rules` active, so the model's nn.with_logical_constraint calls (and
    unboxing of LogicallyPartitioned params) turn into sharding constraints. Enter outside jax.jit."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield
