"""Memory, known before the first step (issue 9; zoo/train/memory.py): the refusal, and the estimate against a
measured peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from zoo.train.config import UserError, resolve
from zoo.train.memory import device_limit, host_available_bytes
from zoo.train.setup import prepare

ROOT = Path(__file__).resolve().parent.parent
SMALL_DATA = ["data.max_documents=20", "run.eval_interval=-1", "run.sample_tokens=0"]


def test_a_step_that_cannot_fit_is_refused_before_anything_is_allocated(tmp_path):
    """A 1.1B-parameter model (17 GiB of params and Adam state per device, replicated over 8 data-parallel
    devices) under run.memory_limit_gb=4: prepare() compiles the step from abstract shapes and refuses it. Had
    it initialised the state first, this test would need 8 x 17 GiB."""
    config = resolve(
        "llama-tiny",
        [
            *SMALL_DATA,
            "model.d_model=4096",
            "model.d_ff=16384",
            "model.num_heads=32",
            "run.memory_limit_gb=4",
            f"run.dir={tmp_path / 'run'}",
        ],
    )
    with pytest.raises(UserError) as e:
        prepare(config)
    message = str(e.value)
    assert "\n" not in message and not (tmp_path / "run").exists()
    need = float(message.split("the train step needs ")[1].split(" GiB")[0])
    assert 17 < need < 40, message
    assert "more than the 4.00 GiB a device has (run.memory_limit_gb)" in message
    for hint in ("mesh.fsdp=", "model.remat_policy=full", "model.param_dtype=bfloat16", "run.memory_check=false"):
        assert hint in message, hint
    # The expert's way past the check: the same config with run.memory_check=false is not refused by it.
    unchecked = resolve(
        "llama-tiny",
        [*SMALL_DATA, "model.d_model=4096", "model.d_ff=16384", "model.num_heads=32", "run.memory_check=false"],
    )
    assert not any(m.startswith("memory:") for m in prepare(unchecked).messages)


def test_bad_limit_is_one_line_naming_the_field():
    with pytest.raises(UserError, match=r"RunConfig.memory_limit_gb: must be > 0 .*from the command line"):
        resolve("llama-tiny", ["run.memory_limit_gb=0"])


def test_cpu_limit_is_available_ram_shared_by_the_emulated_devices():
    if jax.devices()[0].platform != "cpu":
        pytest.skip("CPU backend only")
    limit, source = device_limit()
    n = jax.local_device_count()
    assert abs(limit - host_available_bytes() // n) < 0.05 * limit  # MemAvailable moves a little between reads
    assert f"/ {n} CPU devices" in source


# Run in a fresh process with one CPU device: prepare() (compiles the step and estimates its memory), then
# reset the kernel's peak-RSS mark (writing 5 to /proc/self/clear_refs sets VmHWM to the current VmRSS), note
# VmRSS, initialise the state and run three steps, and read VmHWM: the growth of the peak is what the state,
# the batch and the step's buffers took. Python, jax and the compiler's memory are in the baseline.
MEASURE = r"""
import json, sys
import jax
from zoo.train.config import resolve
from zoo.train.memory import StepMemory
from zoo.train.setup import prepare
from zoo.train.state import device_batch

def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024

setup = prepare(resolve("llama-tiny", sys.argv[1:]))
need = StepMemory.of(setup.programs.compiled["step"])
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS:")
prog = setup.programs
state = prog.init(0)
batch = device_batch(setup.objective.make_batch(next(setup.stream), 0), prog.batch_sharding)
step = prog.compiled_step(state, batch)
for _ in range(3):
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
print(json.dumps({"estimate": need.total, "measured": status("VmHWM:") - base}))
"""


@pytest.mark.slow  # ~20 s
def test_estimate_is_within_25_percent_of_the_measured_peak(tmp_path):
    """Peak RSS growth over the steps (see MEASURE) against arguments + outputs + temporaries - aliased, on a
    config whose step takes ~0.6 GiB, large beside the allocator's slack."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak-RSS mark")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    overrides = [
        *SMALL_DATA,
        "model.d_model=512",
        "model.d_ff=2048",
        "model.num_heads=8",
        "train.batch_size=16",
        "train.seq_len=128",
        "mesh.data=1",
        f"run.dir={tmp_path / 'run'}",
    ]
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    estimate, measured = result["estimate"], result["measured"]
    assert estimate > 300 * 2**20, result
    assert abs(estimate - measured) <= 0.25 * measured, result
