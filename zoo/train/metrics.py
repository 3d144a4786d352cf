"""Peak FLOP/s for MFU, and metric sinks (JSONL, TensorBoard, Weights & Biases).

MFU (model FLOPs utilisation, PaLM, Chowdhery et al. 2022, App. B) = model FLOPs per second (zoo/flops.py)
/ peak FLOP/s.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np

# --- peak FLOP/s -------------------------------------------------------------------------------------------

# Dense peak per chip at 16 bits (bf16), from the vendors' datasheets. Matched against device_kind in order.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 125e12),
    ("V100", 125e12),
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v4", 275e12),
)
# CPU nominal: AVX2 with two FMA units does 2 x 8 fp32 lanes x 2 FLOPs = 32 FLOPs per cycle per core; at a
# nominal 3 GHz that is 96 GFLOP/s per core, times the cores this process may run on.
CPU_FLOPS_PER_CORE = 32 * 3.0e9


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_peak_flops(device: jax.Device | None = None) -> tuple[float, str]:
    """(peak FLOP/s per chip, where the number comes from) for the backend in use.

    Emulated CPU devices (--xla_force_host_platform_device_count) share one host's cores, so on CPU the
    "chip" is the whole host: `job_peak_flops` multiplies by processes, not devices.
    """
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        cores = _cores()
        return CPU_FLOPS_PER_CORE * cores, f"CPU nominal: {cores} cores x 32 fp32 FLOPs/cycle x 3 GHz"
    kind = getattr(device, "device_kind", "")
    for name, peak in PEAK_FLOPS:
        if name.lower() in kind.lower():
            return peak, f"{kind} bf16 dense datasheet peak"
    return math.nan, f"unknown device {kind!r}: set run.peak_flops for MFU"


def job_peak_flops(per_chip: float) -> float:
    """Peak FLOP/s of the whole job: per chip x chips (x hosts on CPU, whose devices share cores)."""
    if jax.devices()[0].platform == "cpu":
        return per_chip * jax.process_count()
    return per_chip * jax.device_count()


# --- sinks ---------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-able number: numpy/jax scalars to float/int, non-finite floats kept (json writes NaN)."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    value = np.asarray(value)
    return value.item() if value.size == 1 else value.tolist()


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line (killed mid-write): drop it


def open_wandb(run_dir: Path, config: dict | None, resume: bool):
    """A Weights & Biases run (project $WANDB_PROJECT or zoo, named after the run directory, its files under
    <run_dir>/wandb); WANDB_MODE=offline keeps it local. The id is stored in the run directory so a resumed
    run logs to the same W&B run."""
    import wandb  # the optional extra: pip install -e ".[wandb]"

    id_file = run_dir / "wandb_id"
    run_id = id_file.read_text().strip() if resume and id_file.exists() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id + "\n")
    return wandb.init(
        project=os.environ.get("WANDB_PROJECT", "zoo"),
        name=run_dir.name,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        config=config,
    )


class MetricWriter:
    """Appends one JSON object per line to `<run_dir>/metrics.jsonl`; also TensorBoard event files under
    `<run_dir>/tensorboard` when tensorboardX is installed, and Weights & Biases with `wandb=True`. Only
    process 0 writes."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        start_step: int = 0,
        enabled: bool = True,
        wandb: bool = False,
        config: dict | None = None,
    ):
        self.enabled = enabled and jax.process_index() == 0
        self.path = Path(run_dir) / "metrics.jsonl"
        self._file = self._tb = self._wandb = None
        if not self.enabled:
            return
        if wandb:
            self._wandb = open_wandb(Path(run_dir), config, resume=start_step > 0)
        if self.path.exists():
            # A resumed run continues the file from its checkpoint: rows a killed process logged after its last
            # checkpoint are dropped, since the resumed run computes those steps again.
            rows = self.path.read_text().splitlines(keepends=True)
            kept = [r for r in rows if r.strip() and _row_step(r) <= start_step]
            if len(kept) != len(rows):
                self.path.write_text("".join(kept))
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115  (closed in close())
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            SummaryWriter = None
        if SummaryWriter is not None:
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, step: int, values: dict[str, Any]) -> None:
        if self._file is None:  # not process 0, or closed
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        self._file.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=int(step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        self._file = self._tb = self._wandb = None
