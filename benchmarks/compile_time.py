"""Compile time and step time versus depth, scanned vs unrolled layers (forward + backward of a
`value_and_grad` of the cross-entropy; compile = `jit(...).lower().compile()`; steps interleaved).

Scan over the attention-pattern cycle should keep compile time flat as depth grows; an unrolled Python loop
grows linearly. Goal (issue 9): 32 layers compile within 1.5x of 4 layers with scan_layers.
"""

from __future__ import annotations

import time

import jax
import optax

import zoo
from zoo.presets import get_config

from benchmarks.common import interleave, paired_ratio, summary


def compile_step(cfg, batch: int, length: int):
    """(blocking step fn, compile seconds) for forward + backward of cfg on a [batch, length] batch."""
    model = zoo.build(cfg)
    params = zoo.init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (batch, length), 0, cfg.vocab_size)

    def loss(p):
        logits = model.apply({"params": p}, tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()

    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    seconds = time.perf_counter() - start
    return (lambda: jax.block_until_ready(compiled(params))), seconds


def run(quick: bool, device: str, log=print) -> dict:
    preset, depths, batch, length, reps = "llama-tiny", [2, 4, 8, 16, 32], 4, 128, 3
    if quick:
        depths, reps = [1], 1
    base = get_config(preset)
    if quick:
        base = base.replace(d_model=64, num_heads=2, num_kv_heads=1, d_ff=128, vocab_size=256)
    rows = []
    for depth in depths:
        row = {"layers": depth}
        steps = {}
        for name, scan in (("scan", True), ("unrolled", False)):
            steps[name], row[f"{name}_compile_s"] = compile_step(
                base.replace(num_layers=depth, scan_layers=scan), batch, length
            )
        times = interleave(steps, reps=reps)
        row["step_s"] = {k: summary(v) for k, v in times.items()}
        row["unrolled_over_scan_step"] = paired_ratio(times["unrolled"], times["scan"])
        rows.append(row)
        log(f"  compile depth {depth}: scan {row['scan_compile_s']:.2f} s, unrolled {row['unrolled_compile_s']:.2f} s")
    by_depth = {r["layers"]: r["scan_compile_s"] for r in rows}
    out = {"preset": preset, "batch": batch, "length": length, "rows": rows}
    if 4 in by_depth and 32 in by_depth:
        out["scan_32_over_4"] = by_depth[32] / by_depth[4]
    return out
