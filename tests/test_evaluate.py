"""evaluate.py: a run's checkpoint evaluates to the validation loss its training log reports, also after
export to Hugging Face format and back; per-document losses equal a direct forward pass; bits per byte are
reported for the byte and the BPE tokenizer."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from test_train import run

from zoo.export import export_run
from zoo.train.evaluate import main
from zoo.train.sampling import load_for_sampling


def logged_val_loss(run_dir) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in rows if "val_loss" in r][-1]


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("byte") / "run"
    run(directory, "run.steps=5", "run.eval_interval=0")
    return directory


def evaluate(tmp_path, *argv) -> dict:
    out = tmp_path / "results.json"
    assert main([*map(str, argv), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_run_evaluates_to_its_logged_validation_loss(byte_run, tmp_path):
    results = evaluate(tmp_path, "--run", byte_run)
    assert results["validation"]["loss"] == pytest.approx(logged_val_loss(byte_run), abs=1e-5)
    documents = results["documents"]
    # Byte tokenizer: a token per byte plus EOS, and every token after the first is a target: one per byte.
    assert documents["tokens"] == documents["bytes"]
    total = sum(d["nll"] for d in documents["per_document"])
    assert documents["bits_per_byte"] == pytest.approx(total / math.log(2) / documents["bytes"], rel=1e-9)


def test_mixture_run_evaluates_to_its_logged_validation_loss(tmp_path):
    """A run trained on a mixture is scored on its own sources' validation rows (not the default corpus's):
    evaluation reads the run's token cache, split and packing."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    (tmp_path / "b").mkdir()
    with open(tmp_path / "a.jsonl", "w") as f:
        for _ in range(40):
            f.write(json.dumps({"text": " ".join(rng.choice(words, 120))}) + "\n")
    for i in range(40):
        (tmp_path / "b" / f"{i}.txt").write_text(" ".join(rng.choice(words, 120)).upper())
    run(
        tmp_path / "run",
        f"data.sources={tmp_path / 'a.jsonl'}:0.7,{tmp_path / 'b'}:0.3",
        "data.validation_percent=20",
        "run.steps=5",
        "run.eval_interval=0",
    )
    results = evaluate(tmp_path, "--run", tmp_path / "run")
    assert results["validation"]["loss"] == pytest.approx(logged_val_loss(tmp_path / "run"), abs=1e-5)
    # The documents measure reads the same validation split: both sources' held-out documents.
    assert 2 < results["documents"]["documents"] < 40 and results["documents"]["bytes"] < 20 * 16 * 120


def test_exported_run_evaluates_to_the_same_loss(byte_run, tmp_path):
    export_run(byte_run, tmp_path / "hf")
    results = evaluate(tmp_path, "--hf", tmp_path / "hf", "--seq-len", 32, "--batch-size", 8, "--max-documents", 40)
    assert results["validation"]["loss"] == pytest.approx(logged_val_loss(byte_run), abs=1e-5)


def test_document_loss_equals_a_direct_forward(byte_run, tmp_path):
    text = "def f(x):\n    return x * 2\n"
    (tmp_path / "doc.txt").write_text(text)
    results = evaluate(tmp_path, "--run", byte_run, "--data", tmp_path / "doc.txt")
    model, params, tokenizer = load_for_sampling(byte_run)
    ids = np.asarray(tokenizer.encode(text) + [tokenizer.eos_id])  # 29 tokens: one window of seq_len 32
    logits = np.asarray(model.apply({"params": params}, jnp.asarray(ids[None, :-1])), np.float64)[0]
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    direct = -logp[np.arange(len(ids) - 1), ids[1:]].sum()
    assert results["documents"]["per_document"][0]["nll"] == pytest.approx(direct, rel=1e-5)


def test_bpe_run_reports_bits_per_byte(tmp_path):
    run(tmp_path / "run", "data.tokenizer=bpe", "data.bpe_vocab_size=384", "run.steps=2", "run.eval_interval=0")
    results = evaluate(tmp_path, "--run", tmp_path / "run")
    documents = results["documents"]
    assert documents["tokens"] < documents["bytes"]  # merges: fewer tokens than bytes
    assert 0 < documents["bits_per_byte"] < 8 * math.log(384) / math.log(256)


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "nope")]) == 2
    assert "evaluate.py: error:" in capsys.readouterr().err
