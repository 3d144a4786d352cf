"""`python -m benchmarks run --quick` as a smoke test: every section runs and lands in the JSON, zoo's greedy
decode gives HF generate's tokens on the same weights, and RESULTS.md renders from the JSON. No timing is
asserted (the figures of a smoke run at tiny shapes mean nothing)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import without_test_flags

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    # conftest emulates 8 CPU devices and compiles fast (TEST_XLA_FLAGS); the benchmark runs on the host as a user's.
    env = without_test_flags(dict(os.environ))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_every_section_is_in_the_json(quick):
    res, _ = quick
    assert res["errors"] == {}
    for name in ("peaks", "train", "decode", "compile_time", "memory", "knobs", "moe", "profile"):
        assert name in res, name
    m = res["machine"]
    assert m["cpu_model"] and m["cores"] >= 1 and m["versions"]["jax"] and "benchmarks run --quick" in m["command"]
    assert len(m["loadavg_start"]) == 3 and res["peaks"]["matmul"]["peak_flops"] > 0
    assert res["peaks"]["bandwidth"]["bytes_per_s"] > 0


def test_train_and_decode_compare_against_hf(quick):
    res, _ = quick
    (shape,) = res["train"]["shapes"]
    assert {"zoo_llama", "zoo_gemma2"} <= set(shape["tokens_per_s"])
    settings = res["decode"]["settings"]
    assert [s["batch"] for s in settings] == [1, 8]
    if res["torch"]:
        assert "torch_eager" in shape["tokens_per_s"] and "torch_eager" in shape["zoo_speedup"]
        assert all(s["tokens_match"] for s in settings), settings  # identical greedy tokens, token for token
    for s in settings:
        assert s["ceiling_tokens_per_s"] > 0 and s["bytes_per_step"] > 0


def test_moe_section(quick):
    res, _ = quick
    m = res["moe"]
    assert {"zoo_dropless", "zoo_capacity_1.25", "zoo_dense"} <= set(m["tokens_per_s"])
    assert m["router"]["dropless"]["dropped_fraction"] == 0.0
    assert 0.0 <= m["router"]["capacity_1.25"]["dropped_fraction"] < 1.0
    # zoo's CPU default (padded one-expert blocks) computes every assignment plus the padding, and far less than
    # ragged_dot's CPU lowering would (every sorted row through every expert).
    xla, model = m["xla_flops_per_step"]["dropless"], m["model_flops_per_step"]["dropless"]
    assert model <= xla < m["model_flops_if_every_row_meets_every_expert"], (xla, model)
    if res["torch"]:
        assert {f"hf_{m['hf']['default']}", "hf_eager", "hf_dense"} <= set(m["tokens_per_s"]), m["hf"]
        for loss in m["initial_loss"].values():  # the same weights on both sides, MoE and dense twin
            assert abs(loss["zoo"] - loss["hf"]) < 1e-4, m["initial_loss"]


def test_memory_profile_and_report(quick):
    res, stdout = quick
    mem = res["memory"]["policies"]
    assert mem["full"]["temp"] < mem["none"]["temp"]  # full remat keeps fewer activations than none
    for part in ("train", "decode"):
        prof = res["profile"][part]
        assert prof["top_ops"] and abs(sum(prof["component"].values()) - 1.0) < 1e-6
    assert "matmul" in res["profile"]["train"]["kind"]
    assert "figure" in stdout and "median (min-max)" in stdout  # the printed table
    from benchmarks.report import render

    text = render(res)
    for heading in (
        "## Training throughput and MFU",
        "## Decode",
        "## Compile time vs depth",
        "## Memory vs remat",
        "## Knob costs",
        "## Mixture of experts",
        "## Where the time goes",
        "## Accelerator",
        "**Command**",
        "**Versions**",
    ):
        assert heading in text, heading
