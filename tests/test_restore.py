"""A run's parameters read alone (zoo.train.restore): onto any mesh, equal to what the run trained, without
reading the optimizer state or building a training program."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest
from test_train import CPUS, run

from zoo.model import abstract_params
from zoo.sharding import make_mesh, param_shardings
from zoo.train import state as state_lib
from zoo.train.checkpoint import Checkpoints
from zoo.train.config import UserError
from zoo.train.restore import load_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("restore") / "run"
    return directory, run(directory, "run.steps=4", "run.checkpoint_interval=2")


def test_params_restore_onto_a_2x2_mesh_equal_the_runs(trained):
    directory, result = trained
    mesh = make_mesh(1, 2, 2, devices=CPUS[:4])
    compiled_before = state_lib.programs.cache_info().currsize
    restored = load_run(directory, mesh=mesh)
    assert state_lib.programs.cache_info().currsize == compiled_before  # no training program built
    assert restored.step == 4 and result.start_step == 0
    expected = param_shardings(abstract_params(restored.config.model), mesh)
    for got, want, sharding in zip(
        jax.tree.leaves(restored.params),
        jax.tree.leaves(result.state["params"]),
        jax.tree.leaves(expected),
        strict=True,
    ):
        assert got.sharding == sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert any(
        len(leaf.sharding.device_set) == 4 and not leaf.sharding.is_fully_replicated
        for leaf in jax.tree.leaves(restored.params)
    )  # split over the mesh, not copied to each device


def test_only_the_params_are_read(trained):
    """The restored bytes are the checkpoint's params bytes; its optimizer state (AdamW: twice as many) is not
    allocated."""
    directory, _ = trained
    restored = load_run(directory, step=2)
    stored = Checkpoints(directory, read_only=True).stored_bytes(2)
    assert sum(leaf.nbytes for leaf in jax.tree.leaves(restored.params)) == stored["params"]
    assert stored["opt_state"] >= 2 * stored["params"]
    boxed = abstract_params(restored.config.model)
    assert jax.tree.structure(restored.params) == jax.tree.structure(nn.meta.unbox(boxed))


def test_missing_step_is_refused(trained):
    directory, _ = trained
    with pytest.raises(UserError, match=r"no checkpoint of step 3 in .*; saved: 2, 4"):
        load_run(directory, step=3)
