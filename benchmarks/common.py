"""What every benchmark shares: the machine, same-run interleaved timing, ratios with their spread, and the
two ceilings (matmul peak, memory bandwidth) measured in the run that divides by them."""

from __future__ import annotations

import datetime
import gc
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _command() -> str:
    argv = list(sys.argv)
    if not argv or argv[0] in ("-c", ""):
        return "in-process"
    if argv[0].replace("\\", "/").endswith("benchmarks/__main__.py"):
        argv[0] = "-m benchmarks"
    return " ".join(["python"] + argv)


def machine() -> dict:
    """Where and with what the run happened (the JSON's `machine` section)."""
    import jax

    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    devices = jax.devices()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "cores": cores(),
        "memory_gib": mem,
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in devices],
        "python": sys.version.split()[0],
        "versions": {
            n: _version(n)
            for n in (
                "jax",
                "jaxlib",
                "flax",
                "optax",
                "numpy",
                "torch",
                "transformers",
                "jax-cuda12-plugin",
                "jax-cuda13-plugin",
            )
        },
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg_start": list(os.getloadavg()),
        "command": _command(),
    }


def pick(plan: list, env: str) -> list:
    """The entries of a section's plan whose indices the environment variable lists ("0,2"), all when unset:
    a partial run on a machine too busy for the whole plan (BENCH_TRAIN_SHAPES, BENCH_DECODE_SETTINGS)."""
    chosen = os.environ.get(env)
    if not chosen:
        return plan
    return [plan[int(i)] for i in chosen.split(",")]


def summary(values) -> dict:
    """Median and spread (min, max, interquartile range) of a list of numbers."""
    xs = sorted(float(v) for v in values)
    q = np.percentile(xs, [25, 75]) if len(xs) > 1 else (xs[0], xs[0])
    return {
        "median": statistics.median(xs),
        "min": xs[0],
        "max": xs[-1],
        "iqr": [float(q[0]), float(q[1])],
        "n": len(xs),
    }


def interleave(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each fn, repetitions interleaved (a, b, c, a, b, c, ...) so that a change of
    load on a shared machine hits every contender alike. Each fn must block until its work is done."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> dict:
    """Per-repetition ratios numerator[i] / denominator[i] (neighbours in time), summarised."""
    return summary([a / b for a, b in zip(numerator, denominator, strict=True)])


def fmt_ratio(r: dict) -> str:
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


# --- ceilings ----------------------------------------------------------------------------------------------


def matmul_peak(n: int, reps: int, dtype: str = "float32", with_torch: bool = True) -> dict:
    """FLOP/s of a large n x n x n matmul, in jax and (when asked) torch, interleaved. The peak is the
    better of the two: the most this machine's matmul libraries get out of it right now."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    mm = jax.jit(lambda x, y: x @ y)
    fns = {"jax": lambda: mm(a, a).block_until_ready()}
    if with_torch:
        import torch

        t = torch.randn(n, n, dtype=getattr(torch, dtype))
        fns["torch"] = lambda: torch.mm(t, t)
    times = interleave(fns, reps=reps)
    flops = 2.0 * n**3
    out = {"n": n, "dtype": dtype}
    for name, ts in times.items():
        out[name] = summary([flops / s for s in ts])
    out["peak_flops"] = max(out[name]["max"] for name in times)
    return out


def memory_bandwidth(mib: int, reps: int) -> dict:
    """Bytes/s read by a reduction over a large float32 array (jax) and by a numpy copy (read + write),
    interleaved. The ceiling for decode is the reduction's: a decode step reads weights and cache once."""
    import jax
    import jax.numpy as jnp

    count = mib * 2**20 // 4
    x = jnp.ones((count,), jnp.float32)
    total = jax.jit(lambda v: jnp.sum(v))
    h = np.ones(count, np.float32)
    dst = np.empty_like(h)
    times = interleave(
        {"jax_sum": lambda: total(x).block_until_ready(), "numpy_copy": lambda: np.copyto(dst, h)}, reps=reps
    )
    out = {
        "mib": mib,
        "jax_sum": summary([4 * count / s for s in times["jax_sum"]]),
        "numpy_copy": summary([8 * count / s for s in times["numpy_copy"]]),
    }
    out["bytes_per_s"] = out["jax_sum"]["median"]
    return out
