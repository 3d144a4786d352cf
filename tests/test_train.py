"""train.py end to end on CPU: every tiny preset learns, sharded == single device, resume == uninterrupted,
a SIGKILLed run resumes, bad input fails in one line without touching what is saved.

Speed: runs call zoo.train.loop.train in-process, so every run with the same (model, recipe, objective,
mesh) reuses one compiled step (zoo.train.state.programs is cached); the reference run is single-device,
and the subprocesses are the ones the issue asks for (a killed run, bad command lines, sample.py).
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from zoo.train.cli import parse_args
from zoo.train.config import Config, UserError, all_keys, resolve
from zoo.train.loop import TrainingStopped, train
from zoo.train.sampling import load_for_sampling
from zoo.train.state import Programs

from conftest import TINY_PRESETS as TINY

ROOT = Path(__file__).resolve().parents[1]
CPUS = jax.devices("cpu")
ONE = CPUS[:1]
# Small and fast: 8 x 32 tokens per step on the first 40 stdlib files, no evaluation, no sample.
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
]
REF_PRESET = "llama-tiny"


def run(tmp_dir, *overrides, preset=REF_PRESET, devices=ONE, mesh=(1, 1, 1)):
    data, fsdp, tensor = mesh
    config = resolve(
        preset,
        [*FAST, f"run.dir={tmp_dir}", f"mesh.data={data}", f"mesh.fsdp={fsdp}", f"mesh.tensor={tensor}", *overrides],
    )
    return train(config, devices=devices, echo=lambda _: None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """llama-tiny, 30 uninterrupted steps on one device: the losses every other run is compared with."""
    return run(tmp_path_factory.mktemp("reference"))


def _env(devices: int | None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "").strip()
    env["XLA_FLAGS"] = flags + (f" --xla_force_host_platform_device_count={devices}" if devices else "")
    return env


def _snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# --- 1. every tiny preset learns -------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", TINY)
def test_tiny_preset_learns(preset, reference, tmp_path):
    result = reference if preset == REF_PRESET else run(tmp_path, preset=preset)
    losses = np.array(result.losses)
    assert len(losses) == 30 and np.isfinite(losses).all()
    first, last = losses[:5].mean(), losses[-5:].mean()
    assert last < first - 1.0, f"{preset}: loss {first:.3f} -> {last:.3f}"


def test_gradient_accumulation_equals_the_full_batch(reference, tmp_path):
    """4 micro-batches of 2 rows, averaged inside the step, make the same updates as one batch of 8."""
    result = run(tmp_path, "train.grad_accum_steps=4", "run.steps=5")
    np.testing.assert_allclose(result.losses, reference.losses[:5], atol=1e-5, rtol=0)


# --- 2. sharding -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    """3 steps of the reference run on each mesh of 8 devices; each run dir holds a step-3 checkpoint."""
    out = {}
    for mesh in [(8, 1, 1), (2, 4, 1), (1, 4, 2)]:
        directory = tmp_path_factory.mktemp("mesh_" + "x".join(map(str, mesh)))
        out[mesh] = run(directory, "run.steps=3", devices=CPUS, mesh=mesh)
    return out


def test_sharded_losses_match_single_device(reference, sharded_runs):
    for mesh, result in sharded_runs.items():
        np.testing.assert_allclose(result.losses, reference.losses[:3], atol=1e-5, rtol=0, err_msg=str(mesh))


def test_params_are_sharded_by_the_rules(sharded_runs):
    params = sharded_runs[(1, 4, 2)].state["params"]
    wi = params["decoder"]["cycles"]["block_0"]["mlp"]["wi_0"]["kernel"]  # (layers, embed, mlp)
    assert tuple(wi.sharding.spec) == (None, "fsdp", "tensor")
    q = params["decoder"]["cycles"]["block_0"]["attention"]["query"]["kernel"]  # (layers, embed, heads, head_dim)
    assert tuple(q.sharding.spec)[:3] == (None, "fsdp", "tensor")
    embed = params["token_embed"]["embedding"]  # (vocab, embed)
    assert tuple(embed.sharding.spec) == ("tensor", "fsdp")

    def bytes_on(device, tree):
        return sum(
            s.data.nbytes for leaf in jax.tree.leaves(tree) for s in leaf.addressable_shards if s.device == device
        )

    total = sum(leaf.nbytes for leaf in jax.tree.leaves(params))
    for device in CPUS:
        # fsdp x tensor = 8: every device holds ~1/8 (norm scales, a few KB, are replicated).
        assert bytes_on(device, params) == pytest.approx(total / 8, rel=0.02)
    data_parallel = sharded_runs[(8, 1, 1)].state["params"]
    assert bytes_on(CPUS[0], data_parallel) == total  # pure data parallelism replicates


def test_checkpoint_restores_onto_another_mesh(reference, sharded_runs):
    """Saved on (2, 4, 1) at step 3, resumed on (8, 1, 1) to step 6: the reference's steps 4..6."""
    result = run(sharded_runs[(2, 4, 1)].run_dir, "run.steps=6", devices=CPUS, mesh=(8, 1, 1))
    assert result.start_step == 3
    np.testing.assert_allclose(result.losses, reference.losses[3:6], atol=1e-5, rtol=0)


# --- 3. resume ---------------------------------------------------------------------------------------------------


def test_resume_repeats_the_uninterrupted_run(reference, tmp_path):
    first = run(tmp_path, "run.steps=10", "run.checkpoint_interval=5", "run.keep=2")
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [5, 10]
    second = run(tmp_path, "run.steps=20", "run.checkpoint_interval=5", "run.keep=2", "run.eval_interval=5")
    assert (first.start_step, second.start_step, second.step) == (0, 10, 20)
    assert first.losses + second.losses == reference.losses[:20]  # bit for bit
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [15, 20]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 21))
    assert {"lr", "grad_norm", "tokens_per_s", "mfu", "step_time_s"} <= set(rows[0])
    assert [r["step"] for r in rows if "val_loss" in r] == [15, 20]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["vocab_size"] == 384 and saved["train"]["batch_size"] == 8

    # sample.py reads the run back: config, tokenizer, latest checkpoint.
    model, params, tokenizer = load_for_sampling(tmp_path)
    assert model.cfg.vocab_size == 384
    out = subprocess.run(
        [
            sys.executable,
            "sample.py",
            "--run",
            str(tmp_path),
            "--prompt",
            "import ",
            "--max-new-tokens",
            "12",
            "--temperature",
            "0.8",
            "--top-k",
            "40",
            "--top-p",
            "0.95",
            "--seed",
            "0",
        ],
        cwd=ROOT,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("import ")


def test_killed_run_resumes_from_last_complete_checkpoint(reference, tmp_path):
    command = [sys.executable, "train.py", *FAST, f"run.dir={tmp_path}", "run.checkpoint_interval=5", "mesh.data=1"]
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(None), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = tmp_path / "checkpoints" / "5"  # orbax renames the temporary directory once the save is complete
    deadline = time.time() + 240
    while not first.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {err.decode()[-2000:]}"

    complete = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    result = run(tmp_path, "run.checkpoint_interval=5")
    assert result.start_step == complete[-1] >= 5
    # Not bit for bit: the killed process compiled its own step (a 1-device XLA build, not this process's
    # 8-device one), which may round differently in the last place. In-process resume is exact (above).
    np.testing.assert_allclose(result.losses, reference.losses[result.start_step :], atol=1e-5, rtol=0)
    # The steps the killed process logged after its last checkpoint were dropped, then logged again.
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))


# --- 4. bad input ------------------------------------------------------------------------------------------------


def test_bad_input_fails_in_one_line_and_keeps_the_checkpoint(tmp_path):
    saved = tmp_path / "run"
    run(saved, "run.steps=2")
    before = _snapshot(saved)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("")
    base = [sys.executable, "train.py", *FAST, f"run.dir={saved}"]
    cases = {
        "missing data": (base + [f"data.path={tmp_path / 'nope'}"], "data path does not exist"),
        "empty corpus": (base + [f"data.path={empty}"], "no documents"),
        "unknown preset": (base + ["--preset", "llama-tiyn"], "Did you mean: llama-tiny"),
        "unknown key": (base + ["train.learnig_rate=1e-3"], "Did you mean: train.learning_rate"),
        "invalid mesh": (base + ["mesh.data=3"], "invalid mesh"),
        "other config": (base + ["model.num_layers=2", "mesh.data=1"], "num_layers: 4 in the checkpoint, 2 now"),
    }
    procs = {
        name: subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_env(None if name == "other config" else 8),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (cmd, _) in cases.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 2, f"{name}: {err}"
        assert "Traceback" not in err and len(lines) == 1, f"{name}: {err}"
        assert lines[0].startswith("train.py: error: ") and cases[name][1] in lines[0], f"{name}: {lines[0]}"
    assert _snapshot(saved) == before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """The loss of step 3 turns NaN (poisoned after the compiled step, so no new compile): the run stops
    naming step 3, checkpoints 1 and 2 survive, and nothing later is saved."""
    compiled_step = Programs.compiled_step

    def poisoned(self, state, batch):
        step = compiled_step(self, state, batch)

        def run_step(state, batch):
            new, metrics = step(state, batch)
            if int(new["step"]) == 3:
                metrics = {**metrics, "loss": metrics["loss"] * float("nan")}
            return new, metrics

        return run_step

    monkeypatch.setattr(Programs, "compiled_step", poisoned)
    with pytest.raises(TrainingStopped, match=r"non-finite loss at step 3 .* last good checkpoint is step 2"):
        run(tmp_path, "run.checkpoint_interval=1", "run.keep=5")
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [1, 2]


# --- the command line ------------------------------------------------------------------------------------------


def test_help_lists_every_field_with_its_default():
    config, text = parse_args(["--preset", "gpt3-tiny", "--help"])
    assert config is None
    for key in all_keys():
        assert f"\n  {key}=" in text, key
    assert "  model.num_layers=4\n" in text and "  mesh.data=-1\n" in text and "  data.tokenizer=byte\n" in text


def test_overrides_are_typed_and_checked():
    config = resolve(
        "llama-tiny",
        [
            "model.num_layers=2",
            "train.learning_rate=1e-3",
            "mesh.fsdp=4",
            "run.steps=7",
            "data.path=null",
            "model.mlp_activations=gelu,linear",
            "train.grad_clip_norm=null",
            "run.progress=false",
        ],
    )
    assert config.model.num_layers == 2 and config.train.learning_rate == 1e-3 and config.mesh.fsdp == 4
    assert config.steps == 7 and config.data.path is None and config.model.mlp_activations == ("gelu", "linear")
    assert config.train.grad_clip_norm is None and config.run.progress is False
    assert resolve("llama-tiny").steps == resolve("llama-tiny").train.total_steps
    with pytest.raises(UserError, match=r"model.num_layers: expected int, got str 'x'"):
        resolve("llama-tiny", ["model.num_layers=x"])
    with pytest.raises(UserError, match=r"Did you mean: model.num_layers"):
        resolve("llama-tiny", ["model.num_layer=2"])
    with pytest.raises(UserError, match=r"Did you mean: train.learning_rate"):
        resolve("llama-tiny", ["learning_rate=2"])
    with pytest.raises(UserError, match=r"ModelConfig.num_kv_heads"):
        resolve("llama-tiny", ["model.num_kv_heads=3"])
    assert Config.from_dict(config.to_dict()) == config
