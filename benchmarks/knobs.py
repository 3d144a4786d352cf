"""What single knobs cost at matched shapes (25M LLaMA widths): each pair interleaved in one process.

RMSNorm vs LayerNorm and parallel vs serial blocks on the train step (sequence 512); local (sliding window
256) vs global attention on the train step at sequence 2048; GQA (2 KV heads) vs MHA (8) in greedy decode at
batch 8 with a 1024-token prompt; unrolled layers (scan_layers false) vs the scanned stack in greedy decode at
batch 8, prompt 128 + 256. Each figure is variant time / baseline time (> 1: the variant is slower).
"""

from __future__ import annotations

import jax
import numpy as np

import zoo

from benchmarks import models
from benchmarks.common import interleave, paired_ratio, summary
from benchmarks.train import zoo_step


def _train_pair(base, variant, batch, seq, reps):
    steps = {"baseline": zoo_step(base, batch, seq)[0], "variant": zoo_step(variant, batch, seq)[0]}
    times = interleave(steps, reps=reps)
    return {
        "batch": batch,
        "seq": seq,
        "step_s": {k: summary(v) for k, v in times.items()},
        "variant_over_baseline": paired_ratio(times["variant"], times["baseline"]),
    }


def _decode_pair(base, variant, batch, prompt_len, new, reps):
    prompt = np.asarray(jax.random.randint(jax.random.key(0), (batch, prompt_len), 0, base.vocab_size), np.int32)
    fns = {}
    for name, cfg in (("baseline", base), ("variant", variant)):
        model, params = zoo.build(cfg), zoo.init_params(cfg, jax.random.key(0))
        fns[name] = (lambda m, p: lambda: np.asarray(zoo.generate(m, p, prompt, new)))(model, params)
    times = interleave(fns, reps=reps)
    return {
        "batch": batch,
        "prompt": prompt_len,
        "new_tokens": new,
        "tokens_per_s": {k: summary([batch * new / t for t in v]) for k, v in times.items()},
        "variant_over_baseline": paired_ratio(times["variant"], times["baseline"]),
    }


def run(quick: bool, device: str, log=print) -> dict:
    size = "smoke" if quick else "25m"
    seq, long_seq, window, reps = (32, 64, 16, 1) if quick else (512, 2048, 256, 4)
    batch = 1
    llama = lambda **kw: models.llama(size, max_seq_len=long_seq, **kw)  # noqa: E731
    out = {"size": size}
    out["layernorm_vs_rmsnorm"] = _train_pair(llama(), llama(norm_type="layernorm"), batch, seq, reps)
    if not quick:  # a smoke run measures one train-step pair and one decode pair
        out["parallel_vs_serial"] = _train_pair(llama(), llama(parallel_layers=True), batch, seq, reps)
        out["local_vs_global"] = _train_pair(
            llama(), llama(attention_pattern=("local",), sliding_window_size=window), batch, long_seq, reps - 2
        )
        out["local_vs_global"]["window"] = window
    kv = models.SIZES[size][3]
    prompt, new = (16, 4) if quick else (1024, 64)
    out["gqa_vs_mha_decode"] = _decode_pair(
        llama(), llama(num_kv_heads=max(kv // 4, 1)), 8, prompt, new, max(1, reps - 2)
    )
    out["gqa_vs_mha_decode"]["kv_heads"] = [kv, max(kv // 4, 1)]
    for name, r in out.items():
        if isinstance(r, dict):
            log(f"  knob {name}: {r['variant_over_baseline']['median']:.2f}x time")
    return out
