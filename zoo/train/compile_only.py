"""Compile the train step for a TPU slice on a CPU host: memory per chip and a roofline step time.

    python train.py --preset llama3.1-70b --compile-only v5p:4x4x8 mesh.fsdp=32 mesh.tensor=4 \\
        model.dtype=bfloat16 model.remat_policy=full

With libtpu installed (`pip install -e ".[tpu]"`), `jax.experimental.topologies.get_topology_desc` describes
the chips of a slice without owning one (MaxText's train_compile.py does the same), and XLA compiles the
exact step train.py runs (zoo/train/state.py `programs`, the run's mesh, remat policy, dtypes, gradient
accumulation) for a mesh over them. The vocabulary is the preset's (train.py would fit it to data.tokenizer).
What the model resolves by backend is resolved for the slice, not for this host: jax.default_backend() is "cpu"
here, so moe_matmul auto would pick CPU's blocks; for_target makes it what a TPU run takes, ragged_dot.

Reported per chip: arguments, temporaries and the total of XLA's memory analysis (zoo/train/memory.py)
against the chip's HBM, and the roofline step time = compiled FLOPs per chip / the chip's bf16 peak.
cost_analysis() counts a while loop's body once, not times its trip count (checked: llama-tiny, 4 layers,
scanned 3.0 GFLOP vs unrolled 10.7 GFLOP, analytic 10.5), so the step's FLOPs come from two more compiles with
the layers unrolled, one and two cycles per stack and no gradient accumulation (cycle = the attention
pattern; whole stacks compile in seconds at any width): FLOPs = accum x (one-cycle model + (cycles - 1) x
(the second cycle's increment)), per stack, each compile with the stack's dense prefix layers. Rematerialised
forward passes are in it (hardware FLOPs); zoo's analytic model FLOPs (zoo/flops.py) are printed beside it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import time
from typing import Literal

import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from zoo.config import ModelConfig
from zoo.flops import flops_per_step
from zoo.layers.experts import grouped_matmul_impl
from zoo.model import count_params
from zoo.sharding import MESH_AXES, make_mesh
from zoo.train.config import Config, UserError
from zoo.train.memory import GIB, StepMemory, compile_step, gib
from zoo.train.objectives import make_objective, sentinels_needed
from zoo.train.setup import check_mesh_experts, check_micro_batch
from zoo.train.state import programs
from zoo.train.tokenizer import make_tokenizer

# Per chip, from Google Cloud's TPU system-architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p,
# /v6e): HBM capacity (GiB; the pages say "GB"/"GiB") and peak dense bf16 FLOP/s.
CHIPS: dict[str, tuple[float, float]] = {
    "v4": (32, 275e12),
    "v5e": (16, 197e12),
    "v5p": (95, 459e12),
    "v6e": (32, 918e12),
}
ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e", "v5": "v5p"}


@dataclasses.dataclass(frozen=True)
class Report:
    preset: str
    topology: str
    chips: int
    mesh: dict
    memory: StepMemory
    hbm_bytes: float
    step_flops: float
    """Compiled FLOPs per chip per step, loop bodies times their trip counts."""
    model_flops: float
    """zoo/flops.py's analytic model FLOPs per chip per step."""
    peak_flops: float
    compile_s: float
    params: int
    moe_matmul: str | None = None
    """How the dropless MoE layers multiply (ragged_dot on TPU); None for a dense model."""

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.hbm_bytes

    @property
    def roofline_s(self) -> float:
        return self.step_flops / self.peak_flops

    def lines(self) -> list[str]:
        m = self.memory
        return [
            f"compile-only: {self.preset} ({_count(self.params)} params) on {self.topology} "
            f"({self.chips} chips), mesh {self.mesh}, compiled in {self.compile_s:.0f}s"
            + (f", MoE matmul {self.moe_matmul}" if self.moe_matmul else ""),
            f"per chip: arguments {gib(m.arguments)}, temporaries {gib(m.temporaries)}, outputs not reusing "
            f"donated buffers {gib(m.outputs - m.aliased)}, total {gib(m.total)} of {gib(self.hbm_bytes)} HBM: "
            + ("fits" if self.fits else "does NOT fit"),
            f"FLOPs per chip per step: {self.step_flops:.3g} compiled (loop bodies x trip counts), "
            f"{self.model_flops:.3g} model (6N + attention); roofline step time {self.roofline_s:.3g}s at "
            f"{self.peak_flops / 1e12:.0f} TFLOP/s bf16 (MFU at the roofline {self.model_flops / self.step_flops:.0%})",
        ]


def _count(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def chip_of(topology: str) -> tuple[str, float, float]:
    """'v5p:4x4x4' -> ('v5p', HBM bytes, peak FLOP/s); UserError for an unknown generation."""
    gen = topology.partition(":")[0].lower()
    gen = ALIASES.get(gen, gen)
    if gen not in CHIPS or ":" not in topology:
        raise UserError(
            f"--compile-only {topology!r}: expected GENERATION:SHAPE with GENERATION one of "
            f"{', '.join(CHIPS)} (e.g. v5p:4x4x4, v5e:2x2)"
        )
    hbm, peak = CHIPS[gen]
    return gen, hbm * GIB, peak


def topology_devices(topology: str) -> list:
    """The compile-only devices of a TPU slice (libtpu describes it; no TPU needed)."""
    if importlib.util.find_spec("libtpu") is None and not os.environ.get("TPU_LIBRARY_PATH"):
        raise UserError(
            f'--compile-only {topology}: needs libtpu (pip install -e ".[tpu]", or a folder holding it on PYTHONPATH)'
        )
    from jax.experimental import topologies

    # A compile-only client owns no chip: let several such processes load libtpu at once (its lockfile).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    gen, _, shape = topology.partition(":")
    gen = ALIASES.get(gen.lower(), gen.lower())
    # v4 and v5p chips have two TensorCores that jax drives as one device ("megacore"), as on a real slice.
    kwargs = {"chip_config_name": "megacore"} if gen in ("v4", "v5p") else {}
    try:
        return list(topologies.get_topology_desc(topology_name=f"{gen}:{shape}", platform="tpu", **kwargs).devices)
    except Exception as e:  # noqa: BLE001  (libtpu reports bad shapes as assorted runtime errors)
        raise UserError(
            f"--compile-only {topology}: libtpu cannot describe this slice: {' '.join(str(e).split())[:300]}"
        ) from None


def for_target(cfg: ModelConfig, platform: str) -> ModelConfig:
    """The model as a run on `platform` builds it: moe_matmul auto resolved for that backend (zoo/layers/experts.py
    grouped_matmul_impl), not for this host's (a TPU slice's step takes ragged_dot, where the CPU's takes blocks)."""
    if not cfg.is_moe:
        return cfg
    return cfg.replace(moe_matmul=grouped_matmul_impl(cfg, platform))


def slice_mesh(sizes, devices) -> Mesh:
    """zoo's mesh over the slice's chips; where jax's torus-aware assignment refuses the shape (an axis that
    must split a physical axis), split physical axes (as MaxText does) or, failing that, take the chips in
    order. Assignment changes which links collectives use, not memory or FLOPs."""
    try:
        return make_mesh(sizes.data, sizes.fsdp, sizes.tensor, expert=sizes.expert, devices=devices)
    except NotImplementedError:
        pass
    shape = {axis: getattr(sizes, axis) for axis in MESH_AXES}
    free = [a for a, n in shape.items() if n == -1]
    if free:
        shape[free[0]] = len(devices) // math.prod(n for n in shape.values() if n != -1)
    if math.prod(shape.values()) != len(devices):
        raise ValueError(f"mesh {shape} needs {math.prod(shape.values())} devices but there are {len(devices)}")
    dims = tuple(shape[a] for a in MESH_AXES)
    try:
        grid = mesh_utils.create_device_mesh(dims, devices, allow_split_physical_axes=True)
    except (NotImplementedError, ValueError, AssertionError):
        grid = np.array(devices).reshape(dims)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _compile(cfg, tc, objective, mesh) -> tuple[object, float]:
    t0 = time.perf_counter()
    compiled = compile_step(programs(cfg, tc, objective, mesh), objective, tc.batch_size, mesh)
    return compiled, time.perf_counter() - t0


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))


def step_flops(cfg, tc, objective, mesh) -> float:
    """Compiled FLOPs per chip of one step, loops counted by trip count (see the module docstring)."""
    micro = tc.replace(batch_size=tc.micro_batch_size, grad_accum_steps=1)
    stacks = ["num_layers"] + (["num_decoder_layers"] if cfg.is_encoder_decoder else [])
    prefix = cfg.dense_prefix_layers  # in every compile, so counted once (DeepSeek's dense first layers)
    cycles = {s: ((getattr(cfg, s) or cfg.num_layers) - prefix) // cfg.cycle_length for s in stacks}

    def unrolled(**n):
        layers = {s: prefix + n.get(s, 1) * cfg.cycle_length for s in stacks}
        return _flops(_compile(cfg.replace(scan_layers=False, **layers), micro, objective, mesh)[0])

    base = unrolled()
    total = base + sum((cycles[s] - 1) * (unrolled(**{s: 2}) - base) for s in stacks if cycles[s] > 1)
    return tc.grad_accum_steps * total


def compile_for(config: Config, topology: str, flops: bool | Literal["if_fits"] = True) -> Report:
    """Compile `config`'s train step for the TPU slice `topology`; the Report of what it needs (flops=False:
    memory only, step_flops NaN; "if_fits": the FLOPs' two more compiles only for a step that fits)."""
    gen, hbm, peak = chip_of(topology)
    devices = topology_devices(topology)
    cfg, tc = for_target(config.model, devices[0].platform), config.train
    try:
        mesh = slice_mesh(config.mesh, devices)
    except ValueError as e:
        raise UserError(f"invalid mesh for {topology} ({len(devices)} chips): {e}") from None
    check_micro_batch(tc.micro_batch_size, mesh)
    check_mesh_experts(cfg, mesh)
    sentinels = sentinels_needed(tc.seq_len) if cfg.is_encoder_decoder else 0
    objective = make_objective(cfg, tc, make_tokenizer("byte", num_sentinels=sentinels), config.run.seed)
    compiled, seconds = _compile(cfg, tc, objective, mesh)
    memory = StepMemory.of(compiled)
    if memory is None:
        raise UserError(f"the compiler gave no memory analysis of the step for {topology}")
    count = flops is True or (flops == "if_fits" and memory.total <= hbm)
    compiled_flops = step_flops(cfg, tc, objective, mesh) if count else math.nan
    model = flops_per_step(cfg, tc.batch_size, tc.seq_len, objective.decoder_len) / len(devices)
    return Report(
        config.preset,
        topology,
        len(devices),
        dict(mesh.shape),
        memory,
        hbm,
        compiled_flops,
        model,
        peak,
        seconds,
        count_params(cfg),
        cfg.moe_matmul if cfg.is_moe else None,
    )


def main(config: Config, topology: str, echo=print) -> int:
    """train.py --compile-only: print the report; exit status 0 if the step fits the chips' HBM, else 1."""
    report = compile_for(config, topology)
    for line in report.lines():
        echo(line)
    return 0 if report.fits else 1
