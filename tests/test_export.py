"""zoo -> export -> transformers: the same logits (1e-4, fp32) and the same token ids, for every tiny preset an
HF architecture expresses and for a trained run with a BPE tokenizer; the others are refused naming the field."""

from __future__ import annotations

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from test_train import ROOT, _env, run

import zoo
from zoo.export import export
from zoo.train.config import UserError
from zoo.train.tokenizer import ByteTokenizer

from conftest import TINY_PRESETS, init_params, jitted_apply

TEXT = "def add(a, b):\n    return a + b  # héllo </s>\n"


def hf_logits(out_dir, cfg, tokens):
    auto = transformers.AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(out_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        ids = torch.tensor(tokens)
        out = model(input_ids=ids, decoder_input_ids=ids) if cfg.is_encoder_decoder else model(ids)
    return out.logits.float().numpy()


def zoo_logits(cfg, params, tokens):
    """Compiled, as zoo runs it: the op-by-op forward takes longer than the compile."""
    inputs = (tokens, tokens) if cfg.is_encoder_decoder else (tokens,)
    return np.asarray(jitted_apply(cfg)({"params": params}, *map(jnp.asarray, inputs)))


def check_round_trip(out_dir, cfg, params, tokenizer):
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    ids = tokenizer.encode(TEXT)
    assert hf_tokenizer(TEXT, add_special_tokens=False)["input_ids"] == ids
    assert hf_tokenizer.decode(ids) == TEXT and hf_tokenizer.eos_token_id == tokenizer.eos_id
    tokens = np.asarray([ids[:40]], np.int32)
    np.testing.assert_allclose(hf_logits(out_dir, cfg, tokens), zoo_logits(cfg, params, tokens), atol=1e-4, rtol=0)
    generation = json.loads((out_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_id


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_tiny_preset_exports(preset, tmp_path):
    cfg = zoo.get_config(preset)
    params = init_params(cfg)
    tokenizer = ByteTokenizer(100 if cfg.is_encoder_decoder else 0)
    try:
        zoo.hf.family_of(cfg)
    except ValueError as e:  # no HF architecture computes this model: refused before anything is written
        assert "ModelConfig." in str(e)
        with pytest.raises(ValueError, match=r"ModelConfig\.\w+="):
            export(cfg, params, tokenizer, tmp_path / "out")
        assert not (tmp_path / "out").exists()
        return
    check_round_trip(export(cfg, params, tokenizer, tmp_path / "out"), cfg, params, tokenizer)


def test_trained_run_with_bpe_exports(tmp_path):
    """A trained run (BPE tokenizer, trained params) through `python -m zoo.export`."""
    run(tmp_path / "run", "data.tokenizer=bpe", "data.bpe_vocab_size=384", "run.steps=3")
    out = subprocess.run(
        [sys.executable, "-m", "zoo.export", str(tmp_path / "run"), str(tmp_path / "out")],
        cwd=ROOT,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    from zoo.train.sampling import load_for_sampling

    model, params, tokenizer = load_for_sampling(tmp_path / "run")
    check_round_trip(tmp_path / "out", model.cfg, params, tokenizer)


def test_export_refuses_in_one_line(tmp_path):
    run(tmp_path / "run", "run.steps=1", preset="gpt3-tiny")
    out = subprocess.run(
        [sys.executable, "-m", "zoo.export", str(tmp_path / "run"), str(tmp_path / "out")],
        cwd=ROOT,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and "ModelConfig.attention_pattern" in lines[0], out.stderr
    assert not (tmp_path / "out").exists()


def test_run_export_is_refused_before_training(tmp_path):
    """run.export on a model no HF architecture expresses fails at once, from train.py and from train(): no
    step is trained, nothing is written."""
    with pytest.raises(UserError, match=r"run.export: .*ModelConfig.attention_pattern"):
        run(tmp_path / "api", "run.export=true", preset="gpt3-tiny")
    out = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--preset",
            "gpt3-tiny",
            f"run.dir={tmp_path / 'cli'}",
            "run.export=true",
            "run.steps=1",
        ],
        cwd=ROOT,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("train.py: error: run.export:"), out.stderr
    assert "step" not in out.stdout and not (tmp_path / "api").exists() and not (tmp_path / "cli").exists()
