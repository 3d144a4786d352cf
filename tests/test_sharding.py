"""Mesh construction and logical-axis sharding on 8 emulated CPU devices (see tests/conftest.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from zoo.sharding import (
    LOGICAL_RULES,
    batch_sharding,
    check_batch_size,
    data_parallelism,
    logical_to_sharding,
    make_mesh,
    param_shardings,
    use_mesh,
)

CPUS = jax.devices("cpu")  # explicit, so the tests also run on a machine with one accelerator


def test_eight_emulated_devices():
    assert len(CPUS) == 8, "tests/conftest.py must set XLA_FLAGS before jax is imported"


@pytest.mark.parametrize(
    "sizes, expert, shape",
    [
        ((-1, 1, 1), 1, (8, 1, 1, 1)),
        ((2, 4, 1), 1, (2, 4, 1, 1)),
        ((1, 4, 2), 1, (1, 4, 1, 2)),
        ((-1, 4, 2), 1, (1, 4, 1, 2)),
        ((2, -1, 2), 1, (2, 2, 1, 2)),
        ((1, 2, 1), 4, (1, 2, 4, 1)),
        ((2, 1, 2), -1, (2, 1, 2, 2)),
    ],
)
def test_mesh_shapes(sizes, expert, shape):
    mesh = make_mesh(*sizes, expert=expert, devices=CPUS)
    assert mesh.axis_names == ("data", "fsdp", "expert", "tensor")
    assert tuple(mesh.shape.values()) == shape
    assert len(set(mesh.devices.flat)) == 8


def test_single_device_mesh():
    mesh = make_mesh(1, 1, 1, devices=CPUS[:1])
    assert tuple(mesh.shape.values()) == (1, 1, 1, 1)


@pytest.mark.parametrize(
    "sizes, message",
    [
        ((3, 1, 1), r"data=3, fsdp=1, expert=1, tensor=1 needs 3 devices but there are 8"),
        ((-1, 3, 1), r"'data' = -1 .* product 3 .* does not divide the 8 devices"),
        ((-1, -1, 1), r"\['data', 'fsdp'\] are all -1"),
        ((0, 1, 1), r"mesh axis 'data': size must be a positive integer or -1, got 0"),
        ((-1, 1, 1, -1), r"\['data', 'expert'\] are all -1"),
        ((1, 1, 1, 3), r"data=1, fsdp=1, expert=3, tensor=1 needs 3 devices but there are 8"),
    ],
)
def test_invalid_mesh(sizes, message):
    data, fsdp, tensor, *expert = sizes
    with pytest.raises(ValueError, match=message):
        make_mesh(data, fsdp, tensor, expert=expert[0] if expert else 1, devices=CPUS)


class Tiny(nn.Module):
    """Params named like the model's: an embedding, an MLP, a multi-query K/V projection, a norm scale."""

    @nn.compact
    def __call__(self, x):  # x: (batch, embed)
        def param(name, shape, names):
            init = nn.with_logical_partitioning(nn.initializers.normal(1.0), names)
            return self.param(name, init, shape)

        param("embedding", (64, 32), ("vocab", "embed"))
        wi = param("wi", (32, 128), ("embed", "mlp"))
        wo = param("wo", (128, 32), ("mlp", "embed"))
        param("kv", (32, 1, 16), ("embed", "kv_heads", "head_dim"))
        scale = param("scale", (32,), ("embed",))
        h = nn.with_logical_constraint(jax.nn.relu(x @ wi), ("batch", "mlp"))
        return h, (h @ wo) * scale


def _abstract():
    return jax.eval_shape(Tiny().init, jax.random.key(0), jnp.ones((16, 32)))


def test_param_shardings_follow_rules():
    mesh = make_mesh(2, 2, 2, devices=CPUS)
    specs = {k: s.spec for k, s in param_shardings(_abstract(), mesh)["params"].items()}
    assert specs["wi"] == P("fsdp", "tensor")
    assert specs["wo"] == P("tensor", "fsdp")
    assert specs["embedding"] == P("tensor", "fsdp")
    assert specs["scale"] == P("fsdp")
    # kv_heads = 1 cannot be split over tensor = 2: that axis falls back to replication.
    assert specs["kv"] == P("fsdp", None, None)


def test_unknown_logical_axis_is_an_error():
    boxed = {"w": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((4, 4), jnp.float32), ("embd", "mlp"))}
    with pytest.raises(ValueError, match=r"logical axis 'embd' has no sharding rule"):
        param_shardings(boxed, make_mesh(devices=CPUS))


@pytest.mark.parametrize("sizes", [(8, 1, 1), (2, 4, 1), (1, 4, 2), (1, 1, 8)])
def test_per_device_bytes(sizes):
    mesh = make_mesh(*sizes, devices=CPUS)
    shardings = param_shardings(_abstract(), mesh)
    init = jax.jit(lambda key: nn.meta.unbox(Tiny().init(key, jnp.ones((16, 32)))), out_shardings=shardings)
    params = init(jax.random.key(0))
    total = sum(x.nbytes for x in jax.tree.leaves(params))
    split = mesh.shape["fsdp"] * mesh.shape["tensor"]
    for device in CPUS:
        held = sum(s.data.nbytes for x in jax.tree.leaves(params) for s in x.addressable_shards if s.device == device)
        # Everything is split fsdp * tensor ways except the small leaves that fall back to replication.
        assert total / split <= held <= 1.1 * total / split + 512 * 4


def test_sharded_forward_matches_single_device():
    x = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
    with jax.default_device(CPUS[0]):
        params = nn.meta.unbox(Tiny().init(jax.random.key(0), x))
        expected = Tiny().apply(params, x)[1]
    mesh = make_mesh(2, 2, 2, devices=CPUS)
    sharded = jax.device_put(params, param_shardings(_abstract(), mesh))
    with use_mesh(mesh):
        h, y = jax.jit(Tiny().apply)(sharded, jax.device_put(x, batch_sharding(mesh, 16)))
    # use_mesh turned nn.with_logical_constraint(("batch", "mlp")) into a real constraint.
    assert h.sharding.spec == P(("data", "fsdp"), "tensor")
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_batch_sharding_and_size_check():
    mesh = make_mesh(2, 4, 1, devices=CPUS)
    batch = jax.device_put(jnp.zeros((16, 8), jnp.int32), batch_sharding(mesh, 16))
    assert {s.data.shape for s in batch.addressable_shards} == {(2, 8)}  # 16 / (data 2 * fsdp 4)
    with pytest.raises(ValueError, match=r"batch size 12 is not divisible by data \* fsdp \* expert = 2 \* 4 \* 1 = 8"):
        batch_sharding(mesh, 12)
    check_batch_size(24, mesh)


def test_expert_axis_splits_the_batch_and_the_experts():
    """Outside a MoE layer the expert axis is data parallelism: the batch is split over data x fsdp x expert.
    A stacked expert kernel (expert, embed, mlp) splits E over it; in the dispatched tokens (expert, batch, ...)
    `expert` takes the expert axis and `batch` falls back to data x fsdp."""
    mesh = make_mesh(2, 1, 1, expert=4, devices=CPUS)
    assert data_parallelism(mesh) == 8
    batch = jax.device_put(jnp.zeros((16, 8), jnp.int32), batch_sharding(mesh, 16))
    assert {s.data.shape for s in batch.addressable_shards} == {(2, 8)}
    with pytest.raises(ValueError, match=r"batch size 4 is not divisible by data \* fsdp \* expert = 2 \* 1 \* 4 = 8"):
        check_batch_size(4, mesh)
    mesh = make_mesh(1, 2, 2, expert=2, devices=CPUS)
    assert logical_to_sharding(P("expert", "embed", "mlp"), (4, 8, 16), mesh).spec == P("expert", "fsdp", "tensor")
    assert logical_to_sharding(P("layers", "expert", "mlp", "embed"), (2, 4, 16, 8), mesh).spec == P(
        None, "expert", "tensor", "fsdp"
    )
    assert logical_to_sharding(P("batch", "length", "embed"), (8, 4, 8), mesh).spec == P(
        ("data", "fsdp", "expert"), None, None
    )
    assert logical_to_sharding(P("expert", "batch", None, "embed"), (4, 8, 3, 8), mesh).spec == P(
        "expert", ("data", "fsdp"), None, None
    )
    # Three experts do not split two ways: replicated along E (zoo/train/config.py refuses such a run).
    assert logical_to_sharding(P("expert", "embed", "mlp"), (3, 8, 16), mesh).spec == P(None, "fsdp", "tensor")


def test_rules_cover_the_model_vocabulary():
    names = {name for name, _ in LOGICAL_RULES}
    assert {
        "vocab",
        "embed",
        "mlp",
        "heads",
        "kv_heads",
        "head_dim",
        "layers",
        "relpos_buckets",
        "positions",
        "batch",
        "length",
        "expert",
    } <= names


@pytest.mark.parametrize("name", ["palm-tiny"])  # multi-query: kv_heads = 1 falls back to replication
def test_real_model_sharded_matches_single_device(name):
    from zoo import model, presets

    cfg = presets.get_config(name)
    module, inputs = model.build(cfg), model.dummy_inputs(cfg, batch=8, length=16)
    mesh = make_mesh(1, 4, 2, devices=CPUS)
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))
    init = jax.jit(
        lambda: nn.meta.unbox(module.init(jax.random.key(0), *inputs)), out_shardings=param_shardings(abstract, mesh)
    )
    params = init()
    with jax.default_device(CPUS[0]):
        expected = jax.jit(module.apply)(jax.device_get(params), *inputs)
    with use_mesh(mesh):
        got = jax.jit(module.apply)(params, *[jax.device_put(x, batch_sharding(mesh, 8)) for x in inputs])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
