"""Expert parallelism (zoo/sharding.py's `expert` mesh axis): a MoE model trained on 8 emulated CPU devices with
its experts split over `expert` makes the same updates as on one device, for the dropless (ragged_dot) and the
capacity (GShard dispatch) paths and for DeepSeek-V3's balance bias (moved alike, saved and resumed); a
checkpoint moves between meshes; the expert kernels really are split; the mesh is validated against the model
and the batch; --compile-only takes mesh.expert (and ragged_dot, as a TPU does).

Speed: every run with the same (model, recipe, objective, mesh) reuses one compiled step (zoo.train.state.programs
is cached), so the resume of (c) compiles nothing new; the runs are module fixtures shared by the tests.
"""

from __future__ import annotations

import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_compile_only import ROOT, _libtpu_env

from zoo.train.config import UserError, resolve
from zoo.train.loop import train
from zoo.train.setup import build_mesh

CPUS = jax.devices("cpu")
# A llama-like MoE small enough to compile in seconds: 2 layers, 4 experts of which each token takes 2.
MOE = [
    "model.num_layers=2",
    "model.d_model=64",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.d_ff=128",
    "model.num_experts=4",
    "model.experts_per_token=2",
    "model.d_expert=64",
]
# Training without dropout applies the model deterministically (zoo/train/state.py passes no rng), which reads
# eval_capacity_factor: both factors are set so the capacity path runs whichever the trainer reads. At 1.0 an
# expert takes at most ceil(32 tokens x 2 / 4 experts) = 16 assignments per sequence, so some are dropped.
CAPACITY = ["model.capacity_factor=1.0", "model.eval_capacity_factor=1.0"]
FAST = [
    "train.batch_size=8",
    "train.seq_len=32",
    "train.total_steps=30",
    "train.warmup_steps=2",
    "data.max_documents=40",
    "run.eval_interval=-1",
    "run.sample_tokens=0",
    "run.checkpoint_interval=100",
    "run.seed=0",
    "run.steps=5",
]
# (data, fsdp, tensor, expert)
MESH_A = (1, 2, 1, 4)  # expert 4 x fsdp 2
MESH_B = (2, 1, 2, 2)  # expert 2 x tensor 2 x data 2
ONE = (1, 1, 1, 1)
# DeepSeek-V3's routing: sigmoid scores, the balance bias the step moves from the whole batch's loads, and the
# sequence-wise balancing loss.
BALANCE = [
    "model.router=sigmoid_topk",
    "model.router_renormalize=true",
    "model.router_balance_bias=true",
    "model.load_balancing_per_sequence=true",
    "model.load_balancing_multiplier=0.01",
    "train.router_bias_update_rate=0.01",
]
PATHS = {"dropless": [], "capacity": CAPACITY, "balance_bias": BALANCE}


def mesh_overrides(mesh) -> list[str]:
    return [f"mesh.{axis}={size}" for axis, size in zip(("data", "fsdp", "tensor", "expert"), mesh, strict=True)]


def run(directory, path: str, mesh, *overrides):
    config = resolve(
        "llama-tiny", [*MOE, *PATHS[path], *FAST, f"run.dir={directory}", *mesh_overrides(mesh), *overrides]
    )
    return train(config, devices=CPUS[:1] if mesh == ONE else CPUS, echo=lambda _: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """5 steps of each path on one device and on meshes A and B: {(path, mesh): TrainResult}."""
    out = {}
    for path in PATHS:
        for mesh in (ONE, MESH_A, MESH_B):
            directory = tmp_path_factory.mktemp(f"{path}_" + "x".join(map(str, mesh)))
            out[path, mesh] = run(directory, path, mesh)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("mesh", [MESH_A, MESH_B], ids=["expert4xfsdp2", "expert2xtensor2xdata2"])
def test_sharded_losses_match_single_device(runs, path, mesh):
    reference, sharded = runs[path, ONE], runs[path, mesh]
    assert len(sharded.losses) == 5 and np.isfinite(sharded.losses).all()
    np.testing.assert_allclose(sharded.losses, reference.losses, atol=1e-5, rtol=0, err_msg=f"{path} on {mesh}")


@pytest.mark.slow
def test_the_two_paths_differ(runs):
    """The capacity runs really drop assignments (else they would equal the dropless ones and prove nothing)."""
    dropless, capacity = runs["dropless", ONE].losses, runs["capacity", ONE].losses
    assert dropless[0] == pytest.approx(capacity[0], abs=0.05)  # same init, same batch
    assert np.max(np.abs(np.array(dropless) - np.array(capacity))) > 1e-3  # measured 3.6e-3
    for mesh in (ONE, MESH_A, MESH_B):  # ~40% of the assignments dropped at factor 1.0, alike on every mesh
        assert runs["capacity", mesh].history[-1].get("moe/dropped_fraction", 0.4) > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [MESH_A, MESH_B], ids=["expert4xfsdp2", "expert2xtensor2xdata2"])
def test_expert_kernels_are_split_over_expert(runs, mesh):
    """Stacked expert kernels (layers, expert, embed, mlp) hold E / expert whole experts per device; the router
    and the attention are not split over `expert` (their batch is, as data parallelism)."""
    data, fsdp, tensor, expert = mesh
    params = runs["dropless", mesh].state["params"]
    moe = params["decoder"]["cycles"]["block_0"]["moe"]
    for name in ("wi_0", "wi_1", "wo"):
        kernel = moe[name]["kernel"]
        embed_at = 2 if name != "wo" else 3
        spec = tuple(kernel.sharding.spec)
        assert spec[1] == "expert" and spec[embed_at] == "fsdp", (name, spec)
        layers, experts, rows, cols = kernel.shape
        for shard in kernel.addressable_shards:
            assert shard.data.shape[1] == experts // expert  # whole experts, E / expert of them
        assert len({tuple(s.index[1].indices(experts)) for s in kernel.addressable_shards}) == expert
        per_device = kernel.nbytes // (expert * fsdp * tensor)
        assert {s.data.nbytes for s in kernel.addressable_shards} == {per_device}
    assert "expert" not in tuple(moe["router"]["kernel"].sharding.spec)
    query = params["decoder"]["cycles"]["block_0"]["attention"]["query"]["kernel"]
    assert "expert" not in tuple(query.sharding.spec)


def _balance_bias(result) -> np.ndarray:
    return np.asarray(result.state["params"]["decoder"]["cycles"]["block_0"]["moe"]["balance_bias"])


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [MESH_A, MESH_B], ids=["expert4xfsdp2", "expert2xtensor2xdata2"])
def test_balance_biases_move_alike_on_every_mesh(runs, mesh):
    """The step moves each bias by the loads of the whole batch (every device's tokens): after 5 steps the biases
    on a mesh are the single device's, exactly, and they did move."""
    reference = _balance_bias(runs["balance_bias", ONE])
    assert reference.shape == (2, 4) and np.abs(reference).max() > 0
    np.testing.assert_array_equal(_balance_bias(runs["balance_bias", mesh]), reference)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["dropless", "balance_bias"])
def test_checkpoint_moves_from_one_mesh_to_another(runs, tmp_path, path):
    """3 steps on mesh A, resumed on mesh B to step 5: the uninterrupted single-device run's steps 4 and 5 (and,
    with the balance bias, its biases: they are saved and restored with the params)."""
    first = run(tmp_path, path, MESH_A, "run.steps=3")
    resumed = run(tmp_path, path, MESH_B)
    assert resumed.start_step == 3 and len(resumed.losses) == 2
    reference = runs[path, ONE].losses
    np.testing.assert_allclose(first.losses, reference[:3], atol=1e-5, rtol=0)
    np.testing.assert_allclose(resumed.losses, reference[3:], atol=1e-5, rtol=0)
    if path == "balance_bias":
        np.testing.assert_array_equal(_balance_bias(resumed), _balance_bias(runs[path, ONE]))


# --- validation --------------------------------------------------------------------------------------------------


def test_experts_not_divisible_by_the_expert_axis():
    with pytest.raises(
        UserError,
        match=r"^model.num_experts=6 is not divisible by mesh.expert=4: .* \(model.num_experts from the command "
        r"line; mesh.expert from the command line\)$",
    ):
        resolve("llama-tiny", [*MOE, "model.num_experts=6", "mesh.expert=4", "mesh.data=1"])


def test_expert_axis_on_a_dense_model_is_refused():
    with pytest.raises(
        UserError,
        match=r"^mesh.expert=2 splits a MoE layer's experts, but model.num_experts=0 \(a dense model\) has none: "
        r"the axis would do nothing; set mesh.expert=1 \(mesh.expert from the command line; model.num_experts "
        r"from llama-tiny \(preset or default\)\)$",
    ):
        resolve("llama-tiny", ["mesh.expert=2"])
    # -1 is sized by the devices: checked when the mesh is built (here expert = 8 / 2).
    config = resolve("llama-tiny", ["mesh.expert=-1", "mesh.data=2"])
    with pytest.raises(UserError, match=r"mesh.expert=4 splits a MoE layer's experts, .*mesh \{'data': 2"):
        build_mesh(config, CPUS)
    moe = resolve("llama-tiny", [*MOE, "mesh.expert=-1", "mesh.data=2"])
    assert dict(build_mesh(moe, CPUS).shape) == {"data": 2, "fsdp": 1, "expert": 4, "tensor": 1}


def test_batch_not_divisible_by_data_fsdp_expert():
    with pytest.raises(
        UserError,
        match=r"^invalid mesh for a micro-batch of 4 sequences \(train.batch_size=8 / train.grad_accum_steps=2\): "
        r"not divisible by mesh.fsdp=2 x mesh.expert=4 = 8, the ways the batch is split \(train.batch_size from the "
        r"command line; train.grad_accum_steps from the command line; mesh.fsdp from the command line; mesh.expert "
        r"from the command line\)$",
    ):
        resolve(
            "llama-tiny",
            [*MOE, "train.batch_size=8", "train.grad_accum_steps=2", "mesh.data=1", "mesh.fsdp=2", "mesh.expert=4"],
        )
    resolve("llama-tiny", [*MOE, "train.batch_size=8", "mesh.data=1", "mesh.fsdp=2", "mesh.expert=4"])


# --- compile-only --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compile_only_takes_the_expert_axis():
    """train.py --compile-only on a v5e:2x2 slice (libtpu describes it, no TPU needed) with the experts split
    2 ways and fsdp 2: the step compiles and fits, its dropless experts through ragged_dot as on a TPU (moe_matmul
    auto resolved for the slice, not for this CPU host: blocks)."""
    env = _libtpu_env()
    if env is None:
        pytest.skip("libtpu is not installed (see tests/test_compile_only.py)")
    argv = ["--preset", "llama-tiny", "--compile-only", "v5e:2x2", *MOE, *mesh_overrides((1, 2, 1, 2))]
    argv += ["train.batch_size=8", "train.seq_len=64"]
    out = subprocess.run(
        [sys.executable, "train.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "on v5e:2x2 (4 chips), mesh {'data': 1, 'fsdp': 2, 'expert': 2, 'tensor': 1}" in out.stdout, out.stdout
    assert "MoE matmul ragged_dot" in out.stdout, out.stdout
    assert re.search(r"per chip: arguments [\d.]+ GiB, .* total [\d.]+ GiB of 16.00 GiB HBM: fits", out.stdout)
    assert re.search(r"FLOPs per chip per step: [\d.e+]+ compiled", out.stdout), out.stdout
