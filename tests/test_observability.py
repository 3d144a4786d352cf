"""Observability and the end of a run (issues 11 and 10): Weights & Biases in offline mode, a jax.profiler
window, device memory in the log line, and run.export writing a Hugging Face checkpoint.

One short train.py run (in-process, through zoo.train.cli.main as train.py calls it) does all four; each test
then asserts on its own output."""

from __future__ import annotations

import json

import jax
import pytest

from zoo.train.config import UserError, resolve
from zoo.train.console import Console
from zoo.train.hooks import LogMetrics, StepInfo, device_memory

TINY = [
    "--preset",
    "llama-tiny",
    "data.max_documents=30",
    "train.batch_size=8",
    "train.seq_len=32",
    "run.eval_interval=-1",
    "run.sample_tokens=0",
    "run.progress=false",
    "run.steps=3",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("wandb")
    from zoo.export import export_run
    from zoo.train.cli import main

    run_dir = tmp_path_factory.mktemp("obs") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        argv = [*TINY, f"run.dir={run_dir}", "run.wandb=true", "run.profile=1:2", "run.export=true"]
        assert main(argv, export_run=export_run) == 0
    return run_dir


def test_wandb_offline_run_logs_the_metrics(run):
    """The offline run's record log (run-ID.wandb, protobuf records whose history values are JSON text; wandb
    0.31 has no public reader for it) holds every step's loss exactly as metrics.jsonl has it."""
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((run / "wandb").iterdir())
    run_id = (run / "wandb_id").read_text().strip()  # kept, so a resumed run logs to the same W&B run
    records = (runs[0] / f"run-{run_id}.wandb").read_bytes()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        for key in ("loss", "grad_norm", "lr"):
            assert json.dumps(row[key]).encode() in records, (key, row)


def test_profile_window_writes_a_trace(run):
    traces = list((run / "profile").rglob("*.xplane.pb"))
    assert traces and all(t.stat().st_size > 0 for t in traces)


def test_export_at_the_end_writes_a_transformers_checkpoint(run):
    out = run / "hf"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == resolve("llama-tiny").model.num_layers
    assert (out / "tokenizer.json").exists() and (out / "generation_config.json").exists()
    assert list(out.glob("*.safetensors"))


def test_export_refused_where_nothing_can_export(tmp_path, capsys):
    from zoo.train.cli import main

    assert main([*TINY, f"run.dir={tmp_path / 'r'}", "run.export=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.export" in err[0] and not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", ["5", "3:2", "a:b"])
def test_bad_profile_window_is_one_line_naming_the_field(value):
    with pytest.raises(
        UserError,
        match=rf"RunConfig.profile: expected START:END .*run.profile='{value}' from the "
        "command line",
    ):
        resolve("llama-tiny", [f"run.profile={value}"])


class _StubDevice:
    def __init__(self, stats):
        self.stats = stats

    def memory_stats(self):
        return self.stats


class _Writer:
    def write(self, step, row):
        self.row = row


def test_device_memory_in_the_log_line():
    gib = 1024**3
    lines = []
    console = Console(lines.append, progress_bar=False, log_interval=1)
    console.start_progress(0, 10)
    device = _StubDevice({"bytes_in_use": int(1.5 * gib), "peak_bytes_in_use": 2 * gib, "bytes_limit": 16 * gib})
    log = LogMetrics(_Writer(), console, tokens_per_step=256, flops_per_step=1e9, peak_flops=1e12, device=device)
    metrics = dict.fromkeys(("loss", "nll", "accuracy", "z_loss", "lr", "grad_norm", "param_norm"), 1.0)
    log(StepInfo(1, metrics, 0.5, {}))
    assert "  mem 1.5 GiB (peak 2.0) of 16  " in lines[-1]
    assert log.history[-1]["memory_gib"] == 1.5 and log.writer.row["memory_limit_gib"] == 16
    # A backend without memory stats (CPU: memory_stats() is None) leaves the line and the row without it.
    log.device = _StubDevice(None)
    log(StepInfo(2, metrics, 0.5, {}))
    assert "mem" not in lines[-1] and "memory_gib" not in log.history[-1]
    if jax.devices()[0].platform == "cpu":
        assert device_memory() == {}
