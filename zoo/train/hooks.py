"""What happens around the train steps, every N steps (after Levanter's trainer hooks): check the loss,
log metrics, evaluate, checkpoint. The loop runs each hook that is due on every finished step, in order.

A hook that reads the train state (`needs_state`) makes the step generator hand that step's state over
before it dispatches the next step, which takes the state's buffers (they are donated to it).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from zoo.train.checkpoint import CheckpointFailed
from zoo.train.state import device_batch


class TrainingStopped(Exception):
    """The run stopped early (a non-finite loss); the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """One finished step."""

    step: int
    """Steps done, counted from the start of the run (1 after the first step)."""
    metrics: dict[str, float]
    """The step's metrics from the devices: loss, nll, accuracy, z_loss, grad_norm, lr, param_norm."""
    step_time_s: float
    data_state: dict[str, int]
    """The data stream's position after this step's batch (what a checkpoint of this step stores)."""
    state: Any = None
    """The train state after this step, when a due hook needs it; else None (already donated)."""


class Hook:
    """Runs every `every` steps (0 = never between) and, if `at_end`, on the last step."""

    needs_state = False

    def __init__(self, every: int = 1, at_end: bool = False):
        self.every, self.at_end = every, at_end

    def due(self, step: int, end: int) -> bool:
        return (self.every > 0 and step % self.every == 0) or (self.at_end and step == end)

    def __call__(self, info: StepInfo) -> None:
        raise NotImplementedError


class SaveCheckpoint(Hook):
    """Every `every` steps and at the end: the state with the data position and the resolved config.
    `before_first()`, when given, runs once before the first save (a new run's config.json and tokenizer)."""

    needs_state = True

    def __init__(self, checkpoints, config, corpus, every: int, last_saved: int | None, before_first=None):
        super().__init__(every, at_end=True)
        self.checkpoints, self.config, self.corpus, self.last_saved = checkpoints, config, corpus, last_saved
        self.before_first = before_first

    def __call__(self, info: StepInfo) -> None:
        if self.before_first is not None:
            self.before_first()
            self.before_first = None
        meta = {
            "step": info.step,
            "data_state": info.data_state,
            "model": self.config.model.to_dict(),
            "config": self.config.to_dict(),
            "corpus": self.corpus,
        }
        self.checkpoints.save(info.step, info.state, meta)
        self.last_saved = info.step


class CheckSaved(Hook):
    """Every step: stop at once if an asynchronous checkpoint save has failed, naming the last complete one."""

    def __init__(self, checkpoints, run_dir):
        super().__init__()
        self.checkpoints, self.run_dir = checkpoints, run_dir

    def __call__(self, info: StepInfo) -> None:
        try:
            self.checkpoints.check()
        except CheckpointFailed as e:
            latest = self.checkpoints.latest_step()
            kept = "no checkpoint is complete" if latest is None else f"the last complete checkpoint is step {latest}"
            raise TrainingStopped(f"{e}; stopped after step {info.step}; {kept} in {self.run_dir}") from None


class CheckFinite(Hook):
    """Stop on a non-finite loss, gradient or parameter norm, before anything logs or saves that step."""

    def __init__(self, saver: SaveCheckpoint, run_dir):
        super().__init__()
        self.saver, self.run_dir = saver, run_dir

    def __call__(self, info: StepInfo) -> None:
        m = info.metrics
        if all(math.isfinite(m[k]) for k in ("loss", "grad_norm", "param_norm")):
            return
        kept = (
            f"the last good checkpoint is step {self.saver.last_saved}"
            if self.saver.last_saved is not None
            else "no checkpoint was saved"
        )
        raise TrainingStopped(
            f"non-finite loss at step {info.step} (loss {m['loss']}, gradient norm "
            f"{m['grad_norm']}, parameter norm {m['param_norm']}); {kept} in {self.run_dir}"
        )


def device_memory(device=None) -> dict[str, float]:
    """GiB in use (and peak, limit) on `device` (default: the first local one), where the backend reports it
    (GPU, TPU); {} where it does not (CPU's memory_stats() is None)."""
    try:
        stats = (device or jax.local_devices()[0]).memory_stats()
    except Exception:  # noqa: BLE001  (unimplemented on some backends)
        stats = None
    if not stats or "bytes_in_use" not in stats:
        return {}
    names = {"bytes_in_use": "memory_gib", "peak_bytes_in_use": "memory_peak_gib", "bytes_limit": "memory_limit_gib"}
    return {name: stats[key] / 1024**3 for key, name in names.items() if key in stats}


class LogMetrics(Hook):
    """Every step: a metrics.jsonl row (with step time, tokens/s, MFU, device memory where the backend reports
    it), the console, and `history`."""

    def __init__(self, writer, console, tokens_per_step: int, flops_per_step: float, peak_flops: float, device=None):
        super().__init__()
        self.writer, self.console, self.device = writer, console, device
        self.tokens_per_step, self.flops_per_step, self.peak_flops = tokens_per_step, flops_per_step, peak_flops
        self.history: list[dict] = []

    def __call__(self, info: StepInfo) -> None:
        m, dt = info.metrics, info.step_time_s
        row = {
            **{k: m[k] for k in ("loss", "nll", "accuracy", "z_loss", "lr", "grad_norm", "param_norm")},
            **{k: v for k, v in m.items() if k.startswith("moe/")},  # router statistics (zoo/train/router_losses.py)
            **{k: m[k] for k in ("mtp_loss",) if k in m},  # multi-token prediction (zoo/train/objectives.py)
            "step_time_s": dt,
            "tokens_per_s": self.tokens_per_step / dt,
            "mfu": self.flops_per_step / dt / self.peak_flops,
            **device_memory(self.device),
        }
        self.writer.write(info.step, row)
        self.history.append({"step": info.step, **row})
        self.console.step(info.step, row)


class Evaluate(Hook):
    """Validation loss, perplexity and accuracy on the same fixed batches every time."""

    needs_state = True

    def __init__(self, setup, writer, console, every: int):
        super().__init__(every, at_end=every >= 0)
        self.setup, self.writer, self.console = setup, writer, console
        self.results: list[dict] = []

    def due(self, step: int, end: int) -> bool:
        return bool(self.setup.val_batches) and super().due(step, end)

    def __call__(self, info: StepInfo) -> None:
        prog, objective, batches = self.setup.programs, self.setup.objective, self.setup.val_batches
        totals = [
            jax.device_get(
                prog.evaluate(
                    info.state["params"], device_batch(objective.make_batch(rows, i, split=1), prog.batch_sharding)
                )
            )
            for i, rows in enumerate(batches)
        ]
        nll = float(np.mean([t["nll"] for t in totals]))
        acc = float(np.mean([t["accuracy"] for t in totals]))
        result = {"val_loss": nll, "val_ppl": math.exp(min(nll, 700.0)), "val_accuracy": acc}
        self.writer.write(info.step, result)
        self.results.append({"step": info.step, **result})
        self.console.say(
            f"step {info.step}: val loss {nll:.4f}, ppl {result['val_ppl']:.2f}, accuracy {acc:.3f} "
            f"({len(batches)} batches)"
        )


class Profile(Hook):
    """run.profile=START:END: a jax.profiler trace of steps START+1 .. END in `directory` (TensorBoard's profile
    plugin or Perfetto read it). Hooks run after a step is fetched, while the next one is already queued, so
    the window's edges are within a step of START and END."""

    def __init__(self, window: tuple[int, int], directory, console):
        super().__init__(every=0, at_end=True)
        (self.first, self.last), self.directory, self.console = window, directory, console
        self.active = False

    def begin(self, start: int) -> None:
        """Before the first step of this call: trace from here if the window starts at or before it."""
        if self.first <= start < self.last:
            self._start()

    def due(self, step: int, end: int) -> bool:
        return step == self.first or (self.active and (step >= self.last or step == end))

    def __call__(self, info: StepInfo) -> None:
        if not self.active and info.step == self.first:
            self._start()
        elif self.active:
            self.close()

    def _start(self) -> None:
        jax.profiler.start_trace(str(self.directory))
        self.active = True

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            self.console.say(f"profile of steps {self.first + 1} to {self.last} written to {self.directory}")
