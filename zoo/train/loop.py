"""The training loop: a prepared run, a generator of finished steps, and hooks that act on them.

    config = zoo.train.config.resolve("llama-tiny", ["run.steps=100", "mesh.fsdp=2"])
    result = train(config)          # result.losses: the loss of every step this call ran

`prepare` (zoo/train/setup.py) checks every input before the run directory is touched; `train` then takes
the run directory's lock (zoo/train/run_lock.py), starts from the latest checkpoint that restores or a fresh
init, and runs `train_steps`, calling the due hooks (zoo/train/hooks.py: check, log, evaluate, checkpoint) on
each finished step. A new run's config.json and tokenizer are written with its first checkpoint
(zoo/train/run_files.py). SIGTERM/SIGINT end the run after the step in flight, saved (zoo/train/signals.py).

Determinism, which makes a resumed run repeat the uninterrupted one exactly: the data order is a function of
(seed, epoch) and the stream position is checkpointed; dropout keys are fold_in(key(seed), step); span
corruption uses numpy default_rng((seed, step)).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from zoo.sharding import use_mesh
from zoo.train import run_files
from zoo.train.checkpoint import Checkpoints
from zoo.train.config import Config, UserError
from zoo.train.console import Console
from zoo.train.hooks import (
    CheckFinite,
    CheckSaved,
    Evaluate,
    LogMetrics,
    Profile,
    SaveCheckpoint,
    StepInfo,
    TrainingStopped,
)
from zoo.train.metrics import MetricWriter
from zoo.train.run_lock import RunLock, RunLocked, describe
from zoo.train.sampling import generate_text
from zoo.train.setup import Setup, prepare
from zoo.train.signals import StopSignals, TrainingInterrupted
from zoo.train.state import local_batch

__all__ = ["TrainResult", "TrainingInterrupted", "TrainingStopped", "train", "train_steps"]


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    start_step: int
    step: int
    history: list[dict]
    """Metrics of every step this call ran (dicts with step, loss, nll, lr, grad_norm, ...)."""
    evals: list[dict]
    unigram_entropy: float
    sample: str | None = None
    state: Any = None
    """The final train state {"params", "opt_state", "step", "rng"} (sharded arrays)."""

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]


def train(config: Config, *, devices=None, echo: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume) the run `config` describes. Raises UserError for bad input (before writing
    anything), TrainingStopped on a non-finite loss or a failed checkpoint save (the last good checkpoint is
    kept), and TrainingInterrupted after SIGTERM/SIGINT (the step in flight finished and saved)."""
    setup = prepare(config, devices)
    config, run, end = setup.config, config.run, config.steps
    console = Console(echo, progress_bar=run.progress, log_interval=run.log_interval)
    lock = _lock(setup, console)
    checkpoints = writer = profile = None
    try:
        for message in setup.messages:
            console.say(message)
        checkpoints = Checkpoints(config.run_dir, keep=run.keep, async_save=run.async_checkpoint)
        state, start = _start(setup, checkpoints, console)
        if start > 0 and jax.process_index() == 0:  # resumed: the recipe changes allowed (history), config.json
            run_files.record_changes(config.run_dir, start, setup.recipe_changes, config.to_dict())
        writer = MetricWriter(config.run_dir, start_step=start, wandb=run.wandb, config=config.to_dict())
        new_run = start == 0 and checkpoints.latest_step() is None
        saver = SaveCheckpoint(
            checkpoints,
            config,
            setup.corpus,
            run.checkpoint_interval,
            start or None,
            _write_run_files(setup) if new_run else None,
        )
        log = LogMetrics(writer, console, config.train.tokens_per_step, setup.flops_per_step, setup.job_peak_flops)
        evaluate = Evaluate(setup, writer, console, run.eval_interval)
        hooks = [CheckFinite(saver, config.run_dir), CheckSaved(checkpoints, config.run_dir), log, evaluate, saver]
        if run.profile_window is not None:
            profile = Profile(run.profile_window, config.run_dir / "profile", console)
            profile.begin(start)
            hooks.append(profile)
        with use_mesh(setup.mesh), StopSignals() as stop:
            if start >= end:
                console.say(f"already at step {start} >= run.steps={end}; nothing to train")
            needs_state = lambda step: any(h.needs_state and h.due(step, end) for h in hooks)  # noqa: E731
            stopping = lambda: stop.received is not None  # noqa: E731
            for info in train_steps(setup, state, start, end, needs_state, console, stopping):
                for hook in hooks:
                    if hook.due(info.step, end):
                        hook(info)
                state = info.state if info.state is not None else state
                if stopping() and info.state is not None:
                    _save_and_stop(saver, checkpoints, info, stop, console)
        console.close()
        checkpoints.wait()
        if log.history:
            console.say(_summary(log.history, evaluate.results, end, config, checkpoints))
        sample = None
        if run.sample_tokens > 0 and jax.process_count() == 1:
            sample = generate_text(
                setup.programs.model,
                state["params"],
                setup.tokenizer,
                run.sample_prompt,
                run.sample_tokens,
                temperature=run.sample_temperature,
                seed=run.seed,
            )
            console.say(
                f"sample ({run.sample_tokens} tokens, temperature {run.sample_temperature}):\n"
                f"{run.sample_prompt}{sample}"
            )
    finally:
        if profile is not None:
            profile.close()
        console.close()
        try:
            if checkpoints is not None:
                checkpoints.close()
        finally:
            if writer is not None:
                writer.close()
            if lock is not None:
                lock.release()
    return TrainResult(
        config.run_dir, start, max(start, end), log.history, evaluate.results, setup.unigram_entropy, sample, state
    )


def _lock(setup: Setup, console: Console) -> RunLock | None:
    """Process 0 takes the run directory (UserError if another trainer holds it). If a checkpoint appeared
    while this run was being prepared (a trainer that finished in between), the prepared resume point is
    stale: refuse rather than overwrite what it saved."""
    if jax.process_index() != 0:
        return None
    config = setup.config
    try:
        lock = RunLock(config.run_dir).acquire()
    except RunLocked as e:
        raise UserError(f"run.dir: {e}") from None
    except OSError as e:
        raise UserError(f"run.dir: cannot write to {config.run_dir}: {e.strerror}") from None
    latest = Checkpoints(config.run_dir, read_only=True).latest_step()
    if latest != setup.resume_step:
        lock.release()
        raise UserError(
            f"run.dir: {config.run_dir} gained checkpoint step {latest} while this run was being prepared "
            f"(it expected {setup.resume_step}); rerun to resume from it"
        )
    if lock.stale:
        console.say(f"run.dir: took over the lock of {describe(lock.stale)}, which ended without releasing it")
    return lock


def _write_run_files(setup: Setup) -> Callable[[], None]:
    """A new run's config.json and tokenizer/, written by process 0 just before its first checkpoint."""

    def write() -> None:
        if jax.process_index() == 0:
            run_files.write_run_files(setup.config.run_dir, setup.config.to_dict(), setup.tokenizer)

    return write


def _save_and_stop(saver: SaveCheckpoint, checkpoints: Checkpoints, info: StepInfo, stop, console: Console) -> None:
    """After a stop signal: the finished step saved synchronously (unless a hook just saved it), then stop."""
    if saver.last_saved != info.step:
        saver(info)
    checkpoints.wait()
    console.close()
    raise TrainingInterrupted(
        f"stopped by {stop.name} after step {info.step}, saved as checkpoint step {info.step} in "
        f"{checkpoints.directory}; rerun the same command to resume",
        stop.received,
        info.step,
    )


def train_steps(
    setup: Setup,
    state,
    start: int,
    end: int,
    needs_state: Callable[[int], bool],
    console: Console,
    stopping: Callable[[], bool] = lambda: False,
) -> Iterator[StepInfo]:
    """Run steps start+1 .. end, yielding each finished step in order. A step's metrics are fetched while
    the next step runs (the host never idles the devices), except where `needs_state(step)` (and at the
    end): then the step is handed over with its state before the next one is dispatched. Once `stopping()`
    is true, the step in flight is the last one: it is handed over with its state."""
    if start >= end:
        return
    prog, objective, stream = setup.programs, setup.objective, setup.stream

    def next_batch(step):
        rows = next(stream)  # this process's rows of the global batch
        return local_batch(objective.make_batch(rows, step, part=stream.part), prog.batch_sharding, stream.batch_size)

    batch = next_batch(start)
    step_fn = prog.compiled_step(state, batch)  # compiled by prepare() (zoo/train/memory.py)
    console.say(f"training steps {start} -> {end}")
    console.start_progress(start, end)
    last_time = time.perf_counter()

    def finished(step, metrics, data_state, state=None) -> StepInfo:
        nonlocal last_time
        # Scalars, and the per-layer router statistics of an MoE model as lists.
        values = {k: v.item() if v.size == 1 else v.tolist() for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        info = StepInfo(step, values, now - last_time, data_state, state)
        last_time = now
        return info

    pending = None
    for step in range(start, end):
        state, metrics = step_fn(state, batch)
        current = (step + 1, metrics, stream.state)
        if pending is not None:
            yield finished(*pending)
        pending = current
        last = step + 1 == end or stopping()
        if not last:
            batch = next_batch(step + 1)  # host work overlaps the step in flight
        if last or needs_state(step + 1):
            yield finished(*pending, state)
            pending = None
        if last:
            return


def _start(setup: Setup, checkpoints: Checkpoints, console: Console):
    """(state, step): the latest checkpoint that restores, onto this run's shardings (whatever mesh wrote it),
    the starting parameters of init.hf / init.run, or a fresh init, whose params land in their shardings
    straight away (jitted with out_shardings). A checkpoint that does not restore (files lost or corrupted after
    it was finalised) is set aside, named, and the next older one is tried, with the data position it saved."""
    if setup.resume_step is None and setup.initial_params is not None:
        params = jax.device_put(setup.initial_params, setup.programs.state_shardings["params"])
        return setup.programs.start_from(params, setup.config.run.seed), 0
    if setup.resume_step is None:
        return setup.programs.init(setup.config.run.seed), 0
    for step in reversed([s for s in checkpoints.all_steps() if s <= setup.resume_step]):
        try:
            mismatch = checkpoints.layout_mismatch(step, setup.programs.abstract_state)
        except Exception:  # noqa: BLE001  (unreadable metadata: a damaged checkpoint, handled below)
            mismatch = None
        if mismatch is not None:
            raise UserError(
                f"run.dir: checkpoint step {step} holds another train state than this recipe's ({mismatch}); "
                f"resume with its recipe, or start a new run.dir from its weights with init.run={setup.config.run_dir}"
            )
        try:
            state, meta = checkpoints.restore(step, setup.programs.abstract_state)
        except Exception as e:  # noqa: BLE001  (orbax and tensorstore raise many types for a damaged checkpoint)
            moved = checkpoints.set_aside(step) if jax.process_index() == 0 else None
            console.say(
                f"checkpoint step {step} does not restore ({type(e).__name__}: {' '.join(str(e).split())[:300]}); "
                f"moved to {moved}; trying the one before it"
            )
            continue
        if step != setup.resume_step:
            setup.stream.restore(meta["data_state"])
        start = int(jax.device_get(state["step"]))
        console.say(
            f"resumed from checkpoint step {start} (data epoch {setup.stream.epoch}, batch {setup.stream.step})"
        )
        return state, start
    raise UserError(f"run.dir: no checkpoint in {checkpoints.directory} restores; see the messages above")


def _summary(history: list[dict], evals: list[dict], end: int, config: Config, checkpoints: Checkpoints) -> str:
    tail = history[-min(10, len(history)) :]
    seconds = sum(h["step_time_s"] for h in history)
    val = f", val loss {evals[-1]['val_loss']:.4f}" if evals and evals[-1]["step"] == end else ""
    return (
        f"done: step {end}, train loss {np.mean([h['loss'] for h in tail]):.4f} (mean of the last "
        f"{len(tail)} steps){val}; {len(history) * config.train.tokens_per_step / seconds:,.0f} "
        f"tokens/s, MFU {np.mean([h['mfu'] for h in history]):.2%}; checkpoints in {checkpoints.directory}"
    )
