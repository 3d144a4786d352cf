"""Shared pytest setup.

pytest imports every test module in one process, so the emulated device count must be set here, before
anything imports jax: 8 host (CPU) devices let tests/test_sharding.py build real multi-axis meshes.

The tests also compile with XLA's CPU backend at optimisation level 0 (LLVM -O0) and with the older LLVM IR
emitters in place of the MLIR fusion emitters, as do the processes they start unless they drop TEST_XLA_FLAGS:
compiling is most of the suite's time, and tiny models' steps barely run. Measured on this 2-core host (2026-12-07,
jax 0.10.2): a llama-tiny train step at the notebooks' `ci` size compiles in 3.2 s at level 0 and in 0.8-1.0 s
without the fusion emitters; tests/test_knobs.py takes 60 s by default, 43 s at level 0, 30 s with both (39 s at
level 1 without the fusion emitters), notebook 02 91 s with both (109 s at level 1). The cost is execution: a
fine-tuning test's 60 steps of a 4-layer d_model 256 model take 14 s by default and 20 s with both. Neither gives
the default build's bits (the same operations, rounded differently: the README's main job moves its validation
loss by 0.02 at level 0), so the runs whose numbers or speed a user reads (the README's commands, the benchmarks)
drop these flags and compile as a user's would.
"""

import functools
import os
from collections import defaultdict

import pytest

# A file whose time goes to running steps rather than compiling them runs faster with LLVM's optimisations: .ci/run sets
# ZOO_TEST_OPTIMISE=1 for tests/test_finetune.py (28 families x 60 steps; two of its tests took 80 s at level 0 and
# 59 s without it on CI's AMD EPYC host, 2026-12-08, where tests/test_train.py's steps went the other way, 118 s
# against 161 s).
OPTIMISE = os.environ.get("ZOO_TEST_OPTIMISE") == "1"
TEST_XLA_FLAGS = (
    "--xla_force_host_platform_device_count=8",
    *(() if OPTIMISE else ("--xla_backend_optimization_level=0",)),
    "--xla_cpu_use_fusion_emitters=false",
)
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *TEST_XLA_FLAGS]).strip()


def without_test_flags(env: dict) -> dict:
    """env with XLA_FLAGS less TEST_XLA_FLAGS: a subprocess that runs on the host as a user's would."""
    flags = [f for f in env.get("XLA_FLAGS", "").split() if f not in TEST_XLA_FLAGS]
    return {**env, "XLA_FLAGS": " ".join(flags)}


import jax  # noqa: E402  (after XLA_FLAGS)

import zoo  # noqa: E402
from zoo.presets import list_presets  # noqa: E402

# Every "-tiny" preset: the CPU-sized sibling of each family, which the model and training tests run.
TINY_PRESETS = [name for name in list_presets() if name.endswith("-tiny")]


# ------------------------------------------------------------------------------------- shared compiled programs
# XLA compiles dominate the suite's time, so a test file builds each of these once per config and shares it.
# Callers must not mutate what they get (params are a dict of immutable arrays: read it, or copy it to change it).
@functools.cache
def init_params(cfg):
    """zoo.init_params(cfg, key(0)) compiled as one program: the op-by-op (eager) call compiles its many small
    ops one by one and costs about 1.5x the CPU time over the tiny presets. The draws agree with it within 1e-8
    (XLA fuses the initialisers' arithmetic): the same random init."""
    return jax.jit(functools.partial(zoo.init_params, cfg))(jax.random.key(0))


@functools.cache
def jitted_apply(cfg):
    """One compiled forward (`model.apply`) per config, shared by every test that runs it: a jit of a fresh
    `zoo.build(cfg).apply` would compile the same program again."""
    return jax.jit(zoo.build(cfg).apply)


# ------------------------------------------------------------------------------------------ the slow tests
# `python -m pytest -m "not slow"` runs the fast tests (a few minutes on 2 cores); CI runs everything. Slow are:
# the files below (training runs, subprocesses, Hugging Face models built with torch, notebooks, a wheel build),
# tests marked @pytest.mark.slow in their own file, and a test parametrized over the tiny presets, except on
# FAST_PRESETS. A new file is fast until listed here: list it when `--durations` shows it takes over ~30 s.
SLOW_FILES = {
    "test_benchmarks.py",
    "test_compile_only.py",
    "test_evaluate.py",
    "test_experiments.py",
    "test_export.py",
    "test_faults.py",
    "test_finetune.py",
    "test_harness.py",
    "test_hf.py",
    "test_hf_families_a.py",
    "test_hf_families_b.py",
    "test_hf_more.py",
    "test_hf_moe.py",
    "test_hf_dbrx.py",
    "test_hf_switch.py",
    "test_multihost.py",
    "test_notebooks.py",
    "test_observability.py",
    "test_packaging.py",
    "test_train.py",
}
FAST_PRESETS = {"llama-tiny", "t5-tiny"}  # decoder-only (RoPE, GQA, SwiGLU) and encoder-decoder (relative bias)


def pytest_collection_modifyitems(config, items):
    over_presets = defaultdict(list)  # (file, test function) -> its items, when parametrized
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
        elif hasattr(item, "callspec"):
            over_presets[item.path, item.originalname].append(item)
    for group in over_presets.values():
        presets = [{v for v in item.callspec.params.values() if v in TINY_PRESETS} for item in group]
        if all(presets) and len(group) > len(FAST_PRESETS):  # a test run on every tiny preset (or many)
            for item, names in zip(group, presets, strict=True):
                if not names & FAST_PRESETS:
                    item.add_marker(pytest.mark.slow)
