"""Per-host data loading: two processes on localhost (jax.distributed over CPU devices, 2 each), each reading
only its rows of the global batch, train exactly as one process with the same 4 devices, and the checkpoint
they write (data position included) resumes exactly on one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from zoo.train.config import resolve
from zoo.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
FOUR = jax.devices("cpu")[:4]
FAST = [
    "train.batch_size=8",
    "train.seq_len=32",
    "train.total_steps=30",
    "train.warmup_steps=5",
    "data.max_documents=40",
    "run.eval_interval=-1",
    "run.sample_tokens=0",
    "run.checkpoint_interval=3",
    "run.seed=0",
    "mesh.data=2",
    "mesh.fsdp=2",
    "run.async_checkpoint=false",
]

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    process, port, run_dir, cache = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process)
    from zoo.train.config import resolve
    from zoo.train.loop import train
    from zoo.sharding import batch_sharding, make_mesh
    from zoo.train.state import process_rows
    config = resolve("llama-tiny", [*json.loads(sys.argv[5]), f"run.dir={run_dir}", f"data.cache_dir={cache}"])
    result = train(config, echo=lambda _: None)
    rows = process_rows(batch_sharding(make_mesh(2, 2, 1)), 8).tolist()  # the rows this process reads
    result = {"losses": result.losses, "process_count": jax.process_count(), "rows": rows}
    print("RESULT", json.dumps(result), flush=True)
    # train.py's run.export on the finished run: process 0 exports, alone (the others must not wait for it).
    from zoo.export import export_run
    from zoo.train.cli import main
    overrides = [*json.loads(sys.argv[5]), f"run.dir={run_dir}", f"data.cache_dir={cache}", f"run.export={run_dir}-hf"]
    print("EXPORT", main(overrides, export_run=export_run), flush=True)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_two_processes_equal_one_and_resume_exactly(tmp_path, cache):
    reference = train(
        resolve("llama-tiny", [*FAST, "run.steps=6", f"run.dir={tmp_path / 'one'}", f"data.cache_dir={cache}"]),
        devices=FOUR,
        echo=lambda _: None,
    )
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
        + " --xla_force_host_platform_device_count=2",
    )
    port, run_dir = _free_port(), tmp_path / "two"
    args = [str(port), str(run_dir), str(cache), json.dumps([*FAST, "run.steps=3"])]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for p in procs:  # only on a hang: the other process may still be in jax.distributed's shutdown barrier
                p.kill()
            raise
        assert proc.returncode == 0, err[-3000:]
        outputs.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
        assert "EXPORT 0" in out.splitlines(), out[-3000:] + err[-3000:]
    assert (tmp_path / "two-hf" / "config.json").is_file() and (tmp_path / "two-hf" / "tokenizer.json").is_file()
    assert [r["rows"] for r in outputs] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # each host reads half of each batch
    for result in outputs:
        assert result["process_count"] == 2
        np.testing.assert_allclose(result["losses"], reference.losses[:3], rtol=0, atol=1e-5)
    meta = json.loads((run_dir / "checkpoints" / "3" / "meta" / "metadata").read_text())
    assert meta["data_state"] == {
        "step": 3,
        "seed": 0,
        "num_rows": meta["data_state"]["num_rows"],
        "taken": [24],
    }  # global: 3 batches of 8, whichever host read them
    # The 2-process checkpoint resumes on one process (4 devices): steps 4..6 of the uninterrupted run.
    resumed = train(
        resolve("llama-tiny", [*FAST, "run.steps=6", f"run.dir={run_dir}", f"data.cache_dir={cache}"]),
        devices=FOUR,
        echo=lambda _: None,
    )
    assert resumed.start_step == 3
    np.testing.assert_allclose(resumed.losses, reference.losses[3:], rtol=0, atol=1e-5)
