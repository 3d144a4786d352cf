"""Memory, known before the first step: the compiled train step's memory analysis against the device's memory.

XLA's buffer assignment for the compiled step gives, per device, the bytes of its arguments (params, optimizer
state, batch), outputs, temporaries (activations kept for the backward pass, gradients, workspace) and how
much of the output reuses donated argument buffers (the state is donated: outputs alias it). The step needs

    arguments + outputs + temporaries - aliased

bytes on every device at its peak. The device's memory: `memory_stats()['bytes_limit']` on GPU and TPU; on
CPU, where emulated devices (--xla_force_host_platform_device_count) share one host, the host's available RAM
(MemAvailable in /proc/meminfo, else free pages from os.sysconf) divided by this process's CPU devices, since
each of them runs the same program on its own shard. `run.memory_limit_gb` overrides the figure;
`run.memory_check=false` skips the check.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import numpy as np

from zoo.sharding import data_parallelism, use_mesh
from zoo.train.config import UserError

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Bytes per device of one compiled program (XLA's memory analysis)."""

    arguments: int
    outputs: int
    temporaries: int
    aliased: int
    code: int = 0

    @property
    def total(self) -> int:
        return self.arguments + self.outputs + self.temporaries - self.aliased

    @classmethod
    def of(cls, compiled) -> StepMemory | None:
        """None where the backend gives no memory analysis."""
        try:
            m = compiled.memory_analysis()
        except Exception:  # noqa: BLE001  (unimplemented on some backends)
            m = None
        if m is None:
            return None
        return cls(
            int(m.argument_size_in_bytes),
            int(m.output_size_in_bytes),
            int(m.temp_size_in_bytes),
            int(m.alias_size_in_bytes),
            int(getattr(m, "generated_code_size_in_bytes", 0) or 0),
        )

    def describe(self) -> str:
        return (
            f"{gib(self.total)} per device (arguments {gib(self.arguments)}, temporaries "
            f"{gib(self.temporaries)}, outputs not reusing donated buffers {gib(self.outputs - self.aliased)})"
        )


def abstract_batch(objective, batch_size: int, sharding, dtype=np.int32) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes and dtypes of a training batch (the objective's make_batch on rows of zeros), sharded."""
    batch = objective.make_batch(np.zeros((batch_size, objective.row_length), dtype), 0)
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in batch.items()}


def compile_step(prog, objective, batch_size: int, mesh, dtype=np.int32):
    """The train step compiled from abstract inputs (no state allocated), cached in prog.compiled where
    Programs.compiled_step finds it."""
    if "step" not in prog.compiled:
        with use_mesh(mesh):
            lowered = prog.step.lower(
                prog.abstract_state, abstract_batch(objective, batch_size, prog.batch_sharding, dtype)
            )
        prog.compiled["step"] = lowered.compile()
    return prog.compiled["step"]


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n < 100 * GIB else f"{n / GIB:.0f} GiB"


def host_available_bytes() -> int | None:
    """Available RAM of this host: MemAvailable from /proc/meminfo (Linux), else free pages (os.sysconf)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def device_limit(device: jax.Device | None = None) -> tuple[int | None, str]:
    """(bytes one device may use, where the figure comes from); (None, why) when unknown."""
    device = device or jax.local_devices()[0]
    if device.platform == "cpu":
        available = host_available_bytes()
        if available is None:
            return None, "the host's available memory is unknown"
        n = sum(d.platform == "cpu" for d in jax.local_devices())
        share = f" / {n} CPU devices" if n > 1 else ""
        return available // n, f"host MemAvailable {gib(available)}{share}"
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001  (backends raise various errors for unsupported stats)
        stats = {}
    if "bytes_limit" not in stats:
        return None, f"{device.device_kind} reports no memory limit"
    return int(stats["bytes_limit"]), f"{device.device_kind} bytes_limit"


def advice(need: StepMemory, limit: int, config, mesh) -> list[str]:
    """What would make the step fit `limit` bytes per device: settings to try, with numbers where they
    follow from the analysis (arguments shrink with fsdp, temporaries with the micro-batch)."""
    cfg, tc, out = config.model, config.train, []
    state = need.arguments
    if state > 0.8 * limit or mesh.shape["fsdp"] < mesh.devices.size:
        more = max(2, math.ceil(state / (0.5 * limit))) * mesh.shape["fsdp"]
        out.append(f"more fsdp devices (mesh.fsdp={more}: params and optimizer state are split over fsdp)")
    if cfg.remat_policy in ("none", "save_dots"):
        out.append("model.remat_policy=full (or save_block_outputs: recompute activations in the backward pass)")
    room = limit - state - (need.outputs - need.aliased)
    ways = data_parallelism(mesh)
    if need.temporaries > room > 0 and tc.micro_batch_size > ways:
        k = tc.grad_accum_steps * math.ceil(need.temporaries / room)
        while tc.batch_size % k or (tc.batch_size // k) % ways:
            k += 1
            if k > tc.batch_size:
                break
        if k <= tc.batch_size:
            out.append(f"train.grad_accum_steps={k} (smaller micro-batches, same batch)")
    if cfg.param_dtype == "float32":
        out.append("model.param_dtype=bfloat16 (halves params and optimizer state)")
    if not config.preset.endswith("-tiny"):
        out.append(f"a -tiny preset (e.g. --preset {config.preset.split('-')[0]}-tiny)")
    return out


def check_fits(need: StepMemory | None, config, mesh, device: jax.Device | None = None) -> str:
    """A line saying the step fits; a UserError naming both figures and what would fit, if not."""
    run = config.run
    if need is None:
        return "memory: not checked (the backend gives no memory analysis of the compiled step)"
    limit: int | None
    if run.memory_limit_gb is not None:
        limit, source = int(run.memory_limit_gb * GIB), "run.memory_limit_gb"
    else:
        limit, source = device_limit(device)
    if limit is None:
        return f"memory: the step needs {need.describe()}; not checked ({source})"
    if need.total <= limit:
        return f"memory: the step needs {gib(need.total)} per device of {gib(limit)} ({source})"
    hints = "; ".join(advice(need, limit, config, mesh))
    raise UserError(
        f"the train step needs {need.describe()}, more than the {gib(limit)} a device has "
        f"({source}); to fit, try: {hints}. (run.memory_limit_gb=N sets the limit, "
        "run.memory_check=false skips this check)"
    )
