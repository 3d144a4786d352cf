"""train.py --compile-only (issue 9; zoo/train/compile_only.py): the train step compiled for a TPU slice on this
CPU host, with libtpu describing the chips.

CI installs libtpu (the [tpu] extra's pin) into .venv/libtpu rather than the venv itself (see .ci/run); the
subprocess gets it on PYTHONPATH. Without libtpu anywhere the compile test is skipped, saying so."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.train.compile_only import CHIPS, chip_of, for_target
from zoo.train.config import UserError, resolve

ROOT = Path(__file__).resolve().parent.parent
LIBTPU_DIR = ROOT / ".venv" / "libtpu"


def _libtpu_env() -> dict | None:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if importlib.util.find_spec("libtpu") is not None:
        return env
    if (LIBTPU_DIR / "libtpu").is_dir():
        return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(LIBTPU_DIR), env.get("PYTHONPATH")]))}
    return None


def test_tiny_preset_compiles_for_a_v5e_slice():
    env = _libtpu_env()
    if env is None:
        pytest.skip(f"libtpu is not installed (pip install -e '.[tpu]', or into {LIBTPU_DIR} as .ci/run does)")
    argv = [
        "--preset",
        "llama-tiny",
        "--compile-only",
        "v5e:2x2",
        "mesh.fsdp=4",
        "train.batch_size=8",
        "train.seq_len=64",
    ]
    out = subprocess.run(
        [sys.executable, "train.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    text = out.stdout
    assert "on v5e:2x2 (4 chips), mesh {'data': 1, 'fsdp': 4, 'expert': 1, 'tensor': 1}" in text, text
    memory = re.search(
        r"per chip: arguments ([\d.]+) GiB, temporaries ([\d.]+) GiB, .* total ([\d.]+) GiB of "
        r"16.00 GiB HBM: fits",
        text,
    )
    assert memory, text
    arguments, temporaries, total = map(float, memory.groups())
    assert 0 < arguments <= total < 1
    # Compiled FLOPs (loop bodies x trip counts) agree with the analytic model count (no remat: the same math).
    flops = re.search(
        r"FLOPs per chip per step: ([\d.e+]+) compiled .*, ([\d.e+]+) model .*roofline step time "
        r"([\d.e+-]+)s at 197 TFLOP/s",
        text,
    )
    compiled, model, seconds = map(float, flops.groups())
    assert abs(compiled - model) < 0.1 * model, text
    assert seconds == pytest.approx(compiled / 197e12, rel=0.01)


def test_step_flops_count_a_dense_prefix_once():
    """The FLOPs count's one- and two-cycle compiles carry DeepSeek's dense first layers, counted once: for
    deepseek-v2-lite-tiny (1 dense + 3 MoE layers) on one CPU device the count equals the whole unrolled step's."""
    import jax

    from zoo.sharding import make_mesh
    from zoo.train.compile_only import _compile, _flops, step_flops
    from zoo.train.objectives import make_objective
    from zoo.train.tokenizer import make_tokenizer

    config = resolve("deepseek-v2-lite-tiny", ["train.batch_size=2", "train.seq_len=16", "mesh.data=1"])
    cfg, tc = config.model.replace(moe_matmul="blocks"), config.train
    objective = make_objective(cfg, tc, make_tokenizer("byte"), 0)
    mesh = make_mesh(devices=jax.devices()[:1])
    whole = _flops(_compile(cfg.replace(scan_layers=False), tc, objective, mesh)[0])
    assert cfg.dense_prefix_layers == 1 and step_flops(cfg, tc, objective, mesh) == pytest.approx(whole, rel=1e-6)


def test_unknown_chip_is_one_line_naming_the_flag():
    with pytest.raises(UserError, match=r"--compile-only 'v9:2x2': expected GENERATION:SHAPE .* v4, v5e, v5p, v6e"):
        chip_of("v9:2x2")
    assert chip_of("v5litepod:4x4") == ("v5e", 16 * 1024**3, 197e12)
    assert set(CHIPS) == {"v4", "v5e", "v5p", "v6e"}


def test_moe_matmul_auto_is_resolved_for_the_slice_not_the_host():
    """jax.default_backend() is this host's cpu, where moe_matmul auto means blocks; a TPU slice's step takes
    ragged_dot, as a run on the slice would (zoo/layers/experts.py grouped_matmul_impl)."""
    moe = resolve("mixtral-tiny", []).model
    assert moe.moe_matmul == "auto"
    assert for_target(moe, "tpu").moe_matmul == "ragged_dot"
    assert for_target(moe, "cpu").moe_matmul == "blocks"
    assert for_target(moe.replace(moe_matmul="blocks"), "tpu").moe_matmul == "blocks"  # a choice is kept
    dense = resolve("llama-tiny", []).model
    assert for_target(dense, "tpu") is dense
