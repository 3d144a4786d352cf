"""Memory versus remat policy: the compiled train step's memory analysis (12 layers; forward + backward of
the cross-entropy), per policy. Goal (issue 9): full remat holds >= 3x less activation memory than none."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import zoo
from zoo.train.objectives import causal_lm_loss

from benchmarks import models

POLICIES = ("none", "save_dots", "save_block_outputs", "full")


def analyse(cfg, batch: int, seq: int) -> dict:
    model = zoo.build(cfg)
    params = jax.eval_shape(lambda: zoo.init_params(cfg, jax.random.key(0)))
    rows = jax.ShapeDtypeStruct((batch, seq + 1), jnp.int32)

    def loss(p, rows):
        return causal_lm_loss(model.apply({"params": p}, rows[:, :-1]), rows[:, 1:])[0]

    m = jax.jit(jax.value_and_grad(loss)).lower(params, rows).compile().memory_analysis()
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp", "generated_code")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def run(quick: bool, device: str, log=print) -> dict:
    size, batch, seq = ("smoke", 2, 128) if quick else ("25m", 4, 512)
    if device == "gpu":
        size, batch, seq = models.GPU_SIZE, 4, models.GPU_SEQ
    extra = {"dtype": "bfloat16"} if device == "gpu" else {}
    layers = 4 if quick else 12
    out = {"size": size, "layers": layers, "batch": batch, "seq": seq, "policies": {}}
    policies = ("none", "full") if quick else ("none", "save_dots", "full") if device == "gpu" else POLICIES
    for policy in policies:
        cfg = models.llama(size, max_seq_len=seq, num_layers=layers, remat_policy=policy, **extra)
        out["policies"][policy] = analyse(cfg, batch, seq)
        log(f"  memory remat {policy}: temp {out['policies'][policy]['temp'] / 2**20:.0f} MiB")
    temp = {p: v["temp"] for p, v in out["policies"].items()}
    out["none_over_full_temp"] = temp["none"] / max(temp["full"], 1)
    return out
