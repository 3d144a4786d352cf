"""Text from a model: a continuation of a prompt, and a trained run loaded back for sampling (sample.py)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from zoo.generate import generate
from zoo.sharding import make_mesh
from zoo.train.checkpoint import Checkpoints
from zoo.train.config import UserError, load_run_config
from zoo.train.objectives import make_objective
from zoo.train.state import programs
from zoo.train.tokenizer import load_tokenizer


def generate_text(model, params, tokenizer, prompt: str, max_new_tokens: int, *, temperature: float = 0.8,
                  top_k: int | None = 40, top_p: float | None = 0.95, seed: int = 0) -> str:
    """Decoded continuation of `prompt` (decoder-only), or the decoder's output for the encoder input
    `prompt + <extra_id_0>` (encoder-decoder: the model fills in the masked span)."""
    cfg = model.cfg
    ids = tokenizer.encode(prompt) or [tokenizer.eos_id]
    top_k = None if top_k is None else min(top_k, cfg.vocab_size)
    kwargs = dict(temperature=temperature, top_k=top_k, top_p=top_p, rng=jax.random.key(seed),
                  eos_id=tokenizer.eos_id)
    if cfg.is_encoder_decoder:
        encoder = np.asarray([ids[:cfg.max_seq_len - 2] + tokenizer.sentinel_ids(1) + [tokenizer.eos_id]],
                             np.int32)
        n = min(max_new_tokens, cfg.max_seq_len - 1)
        out = generate(model, params, np.asarray([[tokenizer.pad_id]], np.int32), n, encoder_tokens=encoder,
                       **kwargs)
        new = np.asarray(out)[0, 1:]
        if len(new) and new[0] == tokenizer.sentinel_ids(1)[0]:
            new = new[1:]  # the targets open with the sentinel of the span they fill
    else:
        ids = ids[-(cfg.max_seq_len - 1):]
        n = min(max_new_tokens, cfg.max_seq_len - len(ids))
        out = generate(model, params, np.asarray([ids], np.int32), n, **kwargs)
        new = np.asarray(out)[0, len(ids):]
    if tokenizer.eos_id in new.tolist():
        new = new[:new.tolist().index(tokenizer.eos_id)]
    return tokenizer.decode(new)


def load_for_sampling(run_dir, step: int | None = None):
    """(model, params, tokenizer) from a run directory's config, tokenizer and checkpoint (default: latest),
    restored onto one device."""
    config = load_run_config(run_dir)
    checkpoints = Checkpoints(run_dir, read_only=True)
    steps = checkpoints.all_steps()
    if not steps:
        raise UserError(f"no checkpoint in {run_dir}")
    step = max(steps) if step is None else step
    if step not in steps:
        raise UserError(f"no checkpoint of step {step} in {run_dir}; saved: {', '.join(map(str, steps))}")
    tokenizer = load_tokenizer(Path(run_dir) / "tokenizer")
    cfg = config.model
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    prog = programs(cfg, config.train, make_objective(cfg, config.train, tokenizer, config.run.seed), mesh)
    state, _ = checkpoints.restore(step, prog.abstract_state)
    checkpoints.close()
    return prog.model, state["params"], tokenizer
