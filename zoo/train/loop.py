"""The training loop: a prepared run, a generator of finished steps, and hooks that act on them.

    config = zoo.train.config.resolve("llama-tiny", ["run.steps=100", "mesh.fsdp=2"])
    result = train(config)          # result.losses: the loss of every step this call ran

`prepare` (zoo/train/setup.py) checks every input before the run directory is touched; `train` then writes
config.json and the tokenizer, starts from the latest checkpoint or a fresh init, and runs `train_steps`,
calling the due hooks (zoo/train/hooks.py: check, log, evaluate, checkpoint) on each finished step.

Determinism, which makes a resumed run repeat the uninterrupted one exactly: the data order is a function of
(seed, epoch) and the stream position is checkpointed; dropout keys are fold_in(key(seed), step); span
corruption uses numpy default_rng((seed, step)).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from zoo.sharding import use_mesh
from zoo.train.checkpoint import Checkpoints
from zoo.train.config import Config
from zoo.train.console import Console
from zoo.train.hooks import CheckFinite, Evaluate, LogMetrics, Profile, SaveCheckpoint, StepInfo, TrainingStopped
from zoo.train.metrics import MetricWriter
from zoo.train.sampling import generate_text
from zoo.train.setup import Setup, prepare
from zoo.train.state import local_batch

__all__ = ["TrainResult", "TrainingStopped", "train", "train_steps"]


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
    anything) and TrainingStopped on a non-finite loss (the last good checkpoint is kept)."""
    setup = prepare(config, devices)
    config, run, end = setup.config, config.run, config.steps
    console = Console(echo, progress_bar=run.progress, log_interval=run.log_interval)
    _write_run_dir(setup)
    for message in setup.messages:
        console.say(message)
    checkpoints = Checkpoints(config.run_dir, keep=run.keep, async_save=run.async_checkpoint)
    writer = profile = None
    try:
        state, start = _start(setup, checkpoints, console)
        writer = MetricWriter(config.run_dir, start_step=start, wandb=run.wandb, config=config.to_dict())
        saver = SaveCheckpoint(checkpoints, config, run.checkpoint_interval, last_saved=setup.resume_step)
        log = LogMetrics(writer, console, config.train.tokens_per_step, setup.flops_per_step, setup.job_peak_flops)
        evaluate = Evaluate(setup, writer, console, run.eval_interval)
        hooks = [CheckFinite(saver, config.run_dir), log, evaluate, saver]
        if run.profile_window is not None:
            profile = Profile(run.profile_window, config.run_dir / "profile", console)
            profile.begin(start)
            hooks.append(profile)
        with use_mesh(setup.mesh):
            if start >= end:
                console.say(f"already at step {start} >= run.steps={end}; nothing to train")
            needs_state = lambda step: any(h.needs_state and h.due(step, end) for h in hooks)  # noqa: E731
            for info in train_steps(setup, state, start, end, needs_state, console):
                for hook in hooks:
                    if hook.due(info.step, end):
                        hook(info)
                state = info.state if info.state is not None else state
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
        checkpoints.close()
        if writer is not None:
            writer.close()
    return TrainResult(
        config.run_dir, start, max(start, end), log.history, evaluate.results, setup.unigram_entropy, sample, state
    )


def train_steps(
    setup: Setup, state, start: int, end: int, needs_state: Callable[[int], bool], console: Console
) -> Iterator[StepInfo]:
    """Run steps start+1 .. end, yielding each finished step in order. A step's metrics are fetched while
    the next step runs (the host never idles the devices), except where `needs_state(step)` (and at the
    end): then the step is handed over with its state before the next one is dispatched."""
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
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
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
        if step + 1 < end:
            batch = next_batch(step + 1)  # host work overlaps the step in flight
        if step + 1 == end or needs_state(step + 1):
            yield finished(*pending, state)
            pending = None


def _write_run_dir(setup: Setup) -> None:
    """config.json (the resolved config) and the tokenizer; only process 0 writes."""
    config = setup.config
    if jax.process_index() == 0:
        config.run_dir.mkdir(parents=True, exist_ok=True)
        (config.run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        if not (config.run_dir / "tokenizer").exists():
            setup.tokenizer.save(config.run_dir / "tokenizer")


def _start(setup: Setup, checkpoints: Checkpoints, console: Console):
    """(state, step): the latest checkpoint restored onto this run's shardings (whatever mesh wrote it), the
    starting parameters of init.hf / init.run, or a fresh init, whose params land in their shardings straight
    away (jitted with out_shardings)."""
    if setup.resume_step is None and setup.initial_params is not None:
        params = jax.device_put(setup.initial_params, setup.programs.state_shardings["params"])
        return setup.programs.start_from(params, setup.config.run.seed), 0
    if setup.resume_step is None:
        return setup.programs.init(setup.config.run.seed), 0
    state, _ = checkpoints.restore(setup.resume_step, setup.programs.abstract_state)
    start = int(jax.device_get(state["step"]))
    console.say(f"resumed from checkpoint step {start} (data epoch {setup.stream.epoch}, batch {setup.stream.step})")
    return state, start


def _summary(history: list[dict], evals: list[dict], end: int, config: Config, checkpoints: Checkpoints) -> str:
    tail = history[-min(10, len(history)) :]
    seconds = sum(h["step_time_s"] for h in history)
    val = f", val loss {evals[-1]['val_loss']:.4f}" if evals and evals[-1]["step"] == end else ""
    return (
        f"done: step {end}, train loss {np.mean([h['loss'] for h in tail]):.4f} (mean of the last "
        f"{len(tail)} steps){val}; {len(history) * config.train.tokens_per_step / seconds:,.0f} "
        f"tokens/s, MFU {np.mean([h['mfu'] for h in history]):.2%}; checkpoints in {checkpoints.directory}"
    )
