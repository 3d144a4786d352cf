"""Faults injected on purpose into training runs: a second trainer on one run directory, SIGTERM/SIGINT, a
checkpoint damaged after it was written, a save that fails, a changed recipe on resume, a stale tokenizer, an
unwritable run directory, an export aimed at a run directory. Each asserts what a user gets: refused in one line
naming the cause, or resumed with the losses of the uninterrupted run, and nothing lost.

Data and Hugging Face import faults: tests/test_faults_data.py, tests/test_faults_hf.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from zoo.train.config import UserError, resolve
from zoo.train.loop import TrainingInterrupted, TrainingStopped, train
from zoo.train.restore import load_run
from zoo.train.run_files import check_space
from zoo.train.setup import prepare
from zoo.train.state import Programs
from zoo.train.tokenizer import load_tokenizer, make_tokenizer

ROOT = Path(__file__).resolve().parents[1]
ONE = jax.devices("cpu")[:1]
FAST = [
    "train.batch_size=8",
    "train.seq_len=32",
    "train.total_steps=30",
    "train.warmup_steps=5",
    "data.max_documents=40",
    "run.eval_interval=-1",
    "run.sample_tokens=0",
    "run.checkpoint_interval=100",
    "run.seed=0",
    "mesh.data=1",
]


def config(run_dir, *overrides):
    return resolve("llama-tiny", [*FAST, f"run.dir={run_dir}", *overrides])


def run(run_dir, *overrides, said: list | None = None):
    return train(config(run_dir, *overrides), devices=ONE, echo=(said.append if said is not None else lambda _: None))


def logged_losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, len(rows) + 1)), "steps lost or repeated"
    return [r["loss"] for r in rows]


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def env(devices: int | None = None) -> dict:
    out = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    flags = out.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "").strip()
    out["XLA_FLAGS"] = flags + (f" --xla_force_host_platform_device_count={devices}" if devices else "")
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """30 uninterrupted steps: the losses every interrupted run must repeat."""
    return run(tmp_path_factory.mktemp("reference"))


# --- 1. one trainer per run directory ----------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from zoo.train.run_lock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def test_a_second_trainer_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    run(tmp_path, "run.steps=2")
    before = snapshot(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        pattern = rf"run.dir: .* is in use by another trainer: pid {holder.pid} on host "
        with pytest.raises(UserError, match=pattern):
            prepare(config(tmp_path, "run.steps=4"), ONE)  # refused before the corpus is read or anything compiled
        with pytest.raises(UserError, match=pattern):
            run(tmp_path, "run.steps=4")
        assert snapshot(tmp_path) == before  # metrics, config.json and checkpoints untouched
    finally:
        holder.kill()  # SIGKILL: the holder dies without releasing; the kernel drops its lock
        holder.wait()
    said: list[str] = []
    result = run(tmp_path, "run.steps=4", said=said)
    assert result.start_step == 2
    assert any(f"took over the lock of pid {holder.pid} on host" in line for line in said), said


# --- 2. SIGTERM / SIGINT ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_step_in_flight_and_the_resumed_run_is_exact(signum, reference, tmp_path, monkeypatch):
    at = random.Random().randint(2, 28)  # any step: the losses must not depend on where the run was stopped
    compiled_step = Programs.compiled_step

    def signalled(self, state, batch):
        step = compiled_step(self, state, batch)

        def run_step(state, batch):
            new, metrics = step(state, batch)
            if int(new["step"]) == at:
                os.kill(os.getpid(), signum)  # as a preemption notice would arrive, mid-step
            return new, metrics

        return run_step

    monkeypatch.setattr(Programs, "compiled_step", signalled)
    with pytest.raises(TrainingInterrupted, match=rf"stopped by {signum.name} after step {at}, saved") as stopped:
        run(tmp_path, "run.checkpoint_interval=7")
    assert stopped.value.exit_status == 128 + signum
    assert at in [int(p.name) for p in (tmp_path / "checkpoints").iterdir()], f"step {at} was not saved"
    monkeypatch.undo()
    resumed = run(tmp_path, "run.checkpoint_interval=7")
    assert resumed.start_step == at
    assert logged_losses(tmp_path) == reference.losses, f"stopped at step {at}"  # bit for bit


def test_sigterm_from_outside_then_the_same_command_equals_the_uninterrupted_run(tmp_path):
    """As a preempted VM's job sees it: the command stopped by SIGTERM at a random step exits 143 with one line,
    and rerunning the command finishes with the losses of a run nobody stopped (both in subprocesses, so both
    compile the same program)."""
    command = [sys.executable, "train.py", *FAST, "run.checkpoint_interval=10"]
    steady = subprocess.Popen(
        [*command, f"run.dir={tmp_path / 'steady'}"], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL
    )
    stopped_dir = tmp_path / "stopped"
    proc = subprocess.Popen(
        [*command, f"run.dir={stopped_dir}"], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    at = random.Random().randint(3, 25)
    metrics, deadline = stopped_dir / "metrics.jsonl", time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= at:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-3000:]
    assert "Traceback" not in err.decode() and lines[-1].startswith("train.py: stopped by SIGTERM after step ")
    saved = int(lines[-1].split("after step ")[1].split(",")[0])
    assert at <= saved < 30 and (stopped_dir / "checkpoints" / str(saved)).is_dir()
    again = subprocess.run([*command, f"run.dir={stopped_dir}"], cwd=ROOT, env=env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert steady.wait(timeout=300) == 0
    assert logged_losses(stopped_dir) == logged_losses(tmp_path / "steady"), f"SIGTERM at step {saved}"


SIGNALS = textwrap.dedent("""
    import os, signal, sys, time
    from zoo.train.signals import StopSignals
    signum = getattr(signal, sys.argv[1])
    with StopSignals() as stop:
        os.kill(os.getpid(), signum)
        time.sleep(0.2)
        print("first:", stop.received == signum, flush=True)
        os.kill(os.getpid(), signum)
        time.sleep(5)
        print("still running", flush=True)
""")


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_second_signal_stops_at_once(name):
    out = subprocess.run([sys.executable, "-c", SIGNALS, name], cwd=ROOT, env=env(), capture_output=True, text=True)
    assert out.stdout.splitlines() == ["first: True"], out.stdout + out.stderr
    assert out.returncode == -getattr(signal, name) and "Traceback" not in out.stderr


# --- 3. checkpoints that do not restore, saves that fail ------------------------------------------------------


def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_it_resumes_exactly(reference, tmp_path):
    run(tmp_path, "run.steps=10", "run.checkpoint_interval=5")
    damaged = tmp_path / "checkpoints" / "10" / "state"
    data_files = [p for p in damaged.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data_files, sorted(str(p.relative_to(damaged)) for p in damaged.rglob("*"))
    for p in data_files:
        p.unlink()  # the array data lost after orbax finalised the checkpoint
    said: list[str] = []
    resumed = run(tmp_path, "run.steps=15", "run.checkpoint_interval=5", said=said)
    assert any("checkpoint step 10 does not restore" in line for line in said), said
    assert resumed.start_step == 5
    assert resumed.losses == reference.losses[5:15]
    assert logged_losses(tmp_path) == reference.losses[:15]
    assert (tmp_path / "broken_checkpoints" / "10").is_dir()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [5, 10, 15]


def test_a_failed_asynchronous_save_stops_the_run_at_once(tmp_path, monkeypatch):
    """The disk fills while checkpoint 4 is written in the background: the run stops within a step, naming
    the error and the last complete checkpoint, instead of training on until the next save."""
    write = ocp.JsonCheckpointHandler._save_fn

    async def full_disk(self, x, directory):
        if x.get("step") == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
        return await write(self, x, directory)

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)
    with pytest.raises(TrainingStopped, match=r"No space left on device.*stopped after step ([4-5]);") as stopped:
        run(tmp_path, "run.steps=12", "run.checkpoint_interval=2")
    assert "the last complete checkpoint is step 2 in" in str(stopped.value)


def test_an_unusable_run_dir_is_refused_before_anything_is_read(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"run.dir: .*a-file is not a writable directory"):
        prepare(config(blocker / "run"), ONE)
    huge = {"params": jax.ShapeDtypeStruct((1 << 20, 1 << 10, 1 << 10), np.float32)}
    with pytest.raises(UserError, match=r"run.dir: .* GiB free, less than one checkpoint \(4096.00 GiB\)"):
        check_space(tmp_path, huge)


# --- 4. the run's files and its recipe ----------------------------------------------------------------------------


def test_a_changed_recipe_is_refused_unless_allowed_and_then_recorded(tmp_path):
    run(tmp_path, "run.steps=4", "run.checkpoint_interval=2")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match=r"another recipe \(train.learning_rate: 0.002 in the checkpoint, 0.001 now"):
        run(tmp_path, "run.steps=6", "train.learning_rate=1e-3")
    with pytest.raises(UserError, match=r"another recipe \(train.optimizer: 'adamw' in the checkpoint, 'adafactor'"):
        run(tmp_path, "run.steps=6", "train.optimizer=adafactor")
    assert snapshot(tmp_path) == before

    # Allowed, a change of optimizer still cannot restore Adam's moments: refused, and the checkpoint is kept.
    with pytest.raises(UserError, match=r"checkpoint step 4 holds another train state .* init.run="):
        run(tmp_path, "run.steps=6", "train.optimizer=adafactor", "run.allow_recipe_change=true")
    assert snapshot(tmp_path) == before and not (tmp_path / "broken_checkpoints").exists()

    run(
        tmp_path, "run.steps=6", "run.checkpoint_interval=2", "train.learning_rate=1e-3", "run.allow_recipe_change=true"
    )
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [(h["step"], h["changed"]) for h in history] == [
        (4, {"train.learning_rate": {"before": 2e-3, "after": 1e-3}})
    ]
    assert json.loads((tmp_path / "config.json").read_text())["train"]["learning_rate"] == 1e-3
    # Readers take the config each checkpoint was trained with.
    assert load_run(tmp_path, step=4).config.train.learning_rate == 2e-3
    assert load_run(tmp_path, step=6).config.train.learning_rate == 1e-3


def test_resuming_on_edited_data_is_refused_naming_it(tmp_path):
    """The same data.path, the same size, the text upper-cased: the checkpoint's data position means other
    tokens now, so the resume is refused (the row count alone would have let it through)."""
    corpus = tmp_path / "corpus.txt"
    text = "".join(f"def function_{i}(x):\n    return x * {i}\n\n" for i in range(600))
    corpus.write_text(text)
    data = [f"data.path={corpus}", f"data.cache_dir={tmp_path / 'cache'}"]
    run(tmp_path / "run", "run.steps=2", *data)
    corpus.write_text(text.upper())
    with pytest.raises(UserError, match=r"another recipe \(the data's contents \(token cache entries\): \['corpus"):
        run(tmp_path / "run", "run.steps=4", *data)
    run(tmp_path / "run", "run.steps=4", "run.allow_recipe_change=true", *data)
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert list(row["changed"]) == ["the data's contents (token cache entries)"]


def test_a_new_run_replaces_the_files_a_failed_run_left(tmp_path):
    """A BPE run that failed before its first checkpoint left its tokenizer and config.json: a byte-level run
    into the same directory must not adopt them (it would sample and export with the wrong tokenizer)."""
    make_tokenizer("bpe", train_texts=["def f(x):\n    return x\n" * 50], vocab_size=300).save(tmp_path / "tokenizer")
    (tmp_path / "config.json").write_text('{"stale": true}')
    run(tmp_path, "run.steps=2")
    assert load_tokenizer(tmp_path / "tokenizer").vocab_size == load_tokenizer_of_bytes()
    assert json.loads((tmp_path / "config.json").read_text())["data"]["tokenizer"] == "byte"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tokenizer") or p.name.startswith(".config")]


def load_tokenizer_of_bytes() -> int:
    return make_tokenizer("byte").vocab_size


def test_export_never_writes_into_a_run_directory(tmp_path, capsys):
    from zoo.export import main

    run(tmp_path, "run.steps=1")
    before = snapshot(tmp_path)
    assert main([str(tmp_path), str(tmp_path)]) == 2
    assert "is a run directory; export into another directory" in capsys.readouterr().err
    other = tmp_path.parent / f"{tmp_path.name}-other"
    run(other, "run.steps=1")
    assert main([str(tmp_path), str(other)]) == 2
    assert snapshot(tmp_path) == before
