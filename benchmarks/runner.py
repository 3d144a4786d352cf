"""Runs the benchmarks in order and writes one JSON: machine, commands, ceilings, every section."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from benchmarks import common

NAMES = ("peaks", "train", "decode", "compile_time", "memory", "knobs", "moe", "profile")


def torch_available(device: str = "cpu") -> bool:
    """torch and transformers import (and, for the GPU plan, torch sees a CUDA device)."""
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError:
        return False
    return device == "cpu" or torch.cuda.is_available()


def run_all(*, quick: bool = False, device: str = "cpu", only=None, out: Path | None = None, log=print) -> dict:
    import jax

    if device == "gpu" and jax.default_backend() != "gpu" and not os.environ.get("BENCH_ALLOW_CPU"):
        raise SystemExit(f"--device gpu: jax's backend is {jax.default_backend()!r}; install jax with CUDA")
    start = time.perf_counter()
    names = [n for n in NAMES if not only or n in only or n == "peaks"]
    torch_ok = torch_available(device) and os.environ.get("BENCH_TORCH", "1") != "0"
    res = {
        "machine": common.machine(),
        "quick": quick,
        "device": device,
        "sections": names,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch_ok,
        "errors": {},
        "plan_selection": {
            k: os.environ[k]
            for k in (
                "BENCH_TRAIN_SHAPES",
                "BENCH_DECODE_SETTINGS",
                "BENCH_TORCH_COMPILE",
                "BENCH_GPU_SIZE",
                "BENCH_TORCH",
            )
            if k in os.environ
        },
    }
    if not torch_ok and device == "cpu":
        log("torch/transformers not installed (pip install -e '.[bench]'): zoo-only figures")

    def section(name, fn):
        if name not in names:
            return
        t0 = time.perf_counter()
        log(f"[{name}]")
        try:
            res[name] = fn()
        except Exception as e:  # noqa: BLE001  (record and go on: one broken section must not lose the others)
            res["errors"][name] = "".join(traceback.format_exception_only(type(e), e)).strip()
            log(f"  {name} FAILED: {res['errors'][name]}")
            traceback.print_exc(file=sys.stderr)
        res.setdefault("section_s", {})[name] = time.perf_counter() - t0
        if out is not None:  # after every section, so a long run interrupted keeps what it measured
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(
                json.dumps(
                    {**res, "loadavg_end": list(os.getloadavg()), "wall_s": time.perf_counter() - start},
                    indent=1,
                    default=str,
                )
                + "\n"
            )

    def peaks():
        if device == "gpu":
            on_gpu = jax.default_backend() == "gpu"
            mm = common.matmul_peak(8192 if on_gpu else 256, 5, "bfloat16", with_torch=False)
            from zoo.train.metrics import default_peak_flops

            mm["datasheet_peak_flops"], mm["datasheet"] = default_peak_flops()
            bw = common.memory_bandwidth(4096 if on_gpu else 64, 5)
        else:
            mm = common.matmul_peak(512 if quick else 2048, 2 if quick else 5, with_torch=torch_ok)
            bw = common.memory_bandwidth(64 if quick else 512, 2 if quick else 5)
        return {"matmul": mm, "bandwidth": bw}

    section("peaks", peaks)
    pk = res.get("peaks", {})
    # MFU divides by the chip's datasheet bf16 peak on GPU, by the matmul peak measured here on CPU.
    peak = pk.get("matmul", {}).get("datasheet_peak_flops") or pk.get("matmul", {}).get("peak_flops", float("nan"))
    bandwidth = pk.get("bandwidth", {}).get("bytes_per_s", float("nan"))
    from benchmarks import compile_time, decode, knobs, memory, moe, profile, train

    section("train", lambda: train.run(quick, device, peak, torch_ok, log=log))
    section("decode", lambda: decode.run(quick, device, bandwidth, torch_ok, log=log))
    if device == "cpu":
        section("compile_time", lambda: compile_time.run(quick, device, log=log))
    section("memory", lambda: memory.run(quick, device, log=log))
    if device == "cpu":
        section("knobs", lambda: knobs.run(quick, device, log=log))
        section("moe", lambda: moe.run(quick, device, peak, torch_ok, log=log))
        section("profile", lambda: profile.run(quick, device, log=log))
    res["loadavg_end"] = list(os.getloadavg())
    res["wall_s"] = time.perf_counter() - start
    res["ok"] = not res["errors"]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1, default=str) + "\n")
        log(f"wrote {out}")
    from benchmarks.report import console

    log("\n" + console(res))
    return res
