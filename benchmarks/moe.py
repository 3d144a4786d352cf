"""Mixture of experts on the CPU: a Mixtral-shaped zoo train step (8 SwiGLU experts, 2 per token, GQA) against HF
transformers' MixtralForCausalLM on the same weights (written by zoo.hf.save, read by from_pretrained); zoo's
dropless path (sort by expert, then on CPU padded one-expert blocks: ModelConfig.moe_matmul) against its capacity
path (GShard dispatch/combine) at capacity factors 1.25 and 2.0; and the MoE against a dense model with the same
active parameters (d_ff = k * d_expert), itself beside HF's LlamaForCausalLM on its weights: the pair that shows how
zoo's step compares with HF's at these widths and this machine's load without any expert in it. Every contender's
step runs interleaved in one process (benchmarks/train.py's methodology: AOT-compiled zoo steps, torch's first step
run before timing, medians of paired ratios).

FLOPs: model FLOPs from zoo/flops.py (what a token's matmuls need: k of the E experts) and XLA's own count of
the compiled step (`compile().cost_analysis()`). XLA counts a while loop's body once, so the count is taken
from the same step with the layers unrolled (scan_layers false; the timed steps keep the preset's scan).
"""

from __future__ import annotations

import os
import tempfile
import time
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax

import zoo
from zoo.applicability import RULES
from zoo.config import ModelConfig
from zoo.fields import defaults
from zoo.flops import flops_per_step
from zoo.layers.moe import capacity
from zoo.train.objectives import causal_lm_loss
from zoo.train.router_losses import RouterLosses

from benchmarks.common import cores, interleave, paired_ratio, summary
from benchmarks.models import sized
from benchmarks.train import zoo_step

SHAPE_FIELDS = ("d_model", "layers", "heads", "kv_heads", "d_expert", "experts", "k", "vocab")
SIZES = {
    # name: SHAPE_FIELDS (k: experts per token)
    "smoke": (64, 2, 4, 2, 128, 4, 2, 512),
    # Mixtral 8x7B's ratios at 1/16 of its width: GQA 4:1, d_expert = 3.5 d_model, 8 experts, top 2.
    "moe-27m": (256, 4, 8, 2, 896, 8, 2, 8192),
}


def mixtral(size: str, max_seq_len: int, **extra) -> ModelConfig:
    """mixtral-tiny's knobs (softmax-top-k router renormalised as HF's, SwiGLU experts, untied, RMSNorm, RoPE
    1e6) at one of SIZES; dropless."""
    d, layers, heads, kv, d_expert, experts, k, vocab = SIZES[size]
    shape = {"d_ff": d_expert, "num_experts": experts, "experts_per_token": k, **extra}
    return sized(zoo.get_config("mixtral-tiny"), (d, layers, heads, kv, d_expert, vocab), max_seq_len, **shape)


def with_capacity(cfg: ModelConfig, factor: float) -> ModelConfig:
    """The capacity path at `factor`, in training and in evaluation alike (the benchmark's step applies the
    model without a dropout rng, which is evaluation mode: eval_capacity_factor)."""
    return cfg.replace(capacity_factor=factor, eval_capacity_factor=factor)


def dense_twin(cfg: ModelConfig) -> ModelConfig:
    """The same model with a dense SwiGLU MLP of d_ff = k * d_expert: the MoE's active parameters, less the
    router (E x d_model a layer)."""
    base = defaults(ModelConfig)
    values = {**cfg.to_dict(), "num_experts": 0, "d_ff": cfg.experts_per_token * cfg.d_expert}
    # Back to its default, every field zoo/applicability.py's table makes meaningless without experts, in table
    # order (a rule may read a field one above it reset: shared_expert_gate after shared_expert_d_ff).
    for rule in RULES["ModelConfig"]:
        if not rule.applies(SimpleNamespace(**values)):
            values.update({name: base[name] for name in rule.fields})
    return ModelConfig(**values)


def expert_flops_per_step(cfg: ModelConfig, batch: int, seq: int) -> float:
    """Model FLOPs of the routed experts' matmuls alone (k of E per token), forward + backward: 6 x tokens x the
    expert kernel parameters a token multiplies (flops.py's convention)."""
    moe_layers = sum(kind == "moe" for kind in cfg.mlp_kinds(cfg.num_layers))
    kernels = (len(cfg.mlp_activations) + 1) * cfg.d_model * cfg.d_expert
    return 6.0 * batch * seq * moe_layers * kernels * cfg.experts_per_token


def xla_flops(cfg: ModelConfig, batch: int, seq: int, *, compiled: bool = True) -> float:
    """XLA's FLOP count of the train step (benchmarks.train.zoo_step) with the layers unrolled: the cost analysis
    counts a scanned stack's loop body once. compiled=False: the count of the HLO before XLA's optimisation
    passes (`lower(...).cost_analysis()`, no compile: the quick run's; within 1% of the compiled count here)."""
    cfg = cfg.replace(scan_layers=False)
    if compiled:
        analysis = zoo_step(cfg, batch, seq)[0].compiled.cost_analysis()
    else:
        model = zoo.build(cfg)
        tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.1)
        params = jax.eval_shape(lambda: zoo.init_params(cfg, jax.random.key(0)))
        rows = jax.ShapeDtypeStruct((batch, seq + 1), jnp.int32)

        def loss_fn(p, rows):
            return causal_lm_loss(model.apply({"params": p}, rows[:, :-1]), rows[:, 1:])[0]

        def step(p, opt, rows):
            loss, grads = jax.value_and_grad(loss_fn)(p, rows)
            updates, opt = tx.update(grads, opt, p)
            return optax.apply_updates(p, updates), opt, loss

        analysis = jax.jit(step).lower(params, jax.eval_shape(tx.init, params), rows).cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"])


def router_statistics(cfg: ModelConfig, params, rows: np.ndarray) -> dict:
    """What the trainer logs about the routers (zoo/train/router_losses.py), on `rows` [B, T + 1] at `params`:
    the dropped fraction (dropped assignments / all assignments) and the busiest expert's load over the mean,
    averaged over the MoE layers, and both per layer."""
    model = zoo.build(cfg)
    losses = RouterLosses.of(cfg)

    @jax.jit
    def stats(p, tokens):
        return losses.apply(model, {"params": p}, tokens)[1]

    layers = jax.device_get(stats(params, jnp.asarray(rows[:, :-1])))
    return {
        "dropped_fraction": float(np.mean(layers["dropped_fraction"])),
        "dropped_fraction_per_layer": [float(x) for x in layers["dropped_fraction"]],
        "expert_load_max": float(np.mean(layers["expert_load_max"])),
        "expert_load_max_per_layer": [float(x) for x in layers["expert_load_max"]],
    }


def hf_model(cfg: ModelConfig, params, experts_implementation: str | None = None):
    """The transformers model of `cfg` on zoo's weights (zoo.hf.save -> from_pretrained, float32): the MoE is a
    MixtralForCausalLM, the dense twin a LlamaForCausalLM. experts_implementation None = transformers' default."""
    import torch
    import transformers

    kwargs = {} if experts_implementation is None else {"experts_implementation": experts_implementation}
    with tempfile.TemporaryDirectory() as tmp:
        zoo.hf.save(cfg, params, tmp)
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, **kwargs)
    return model


def hf_step(model, ids):
    """A blocking () -> None running one torch AdamW step (train.torch_step's hyper-parameters) of `model` on
    ids [B, T] (labels = ids: transformers shifts them), and the seconds its first step took."""
    import torch

    torch.set_num_threads(max(1, cores()))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def run():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    start = time.perf_counter()
    run()
    return run, time.perf_counter() - start


def initial_losses(cfg: ModelConfig, params, hf, rows: np.ndarray) -> dict:
    """Cross-entropy of zoo and of the HF model on the same rows before any step: equal when the weights are."""
    import torch

    logits = zoo.build(cfg).apply({"params": params}, jnp.asarray(rows[:, :-1]))
    out = {"zoo": float(causal_lm_loss(logits, jnp.asarray(rows[:, 1:]))[0])}
    with torch.no_grad():
        ids = torch.from_numpy(rows.astype(np.int64))
        out["hf"] = float(hf(input_ids=ids, labels=ids).loss)
    return out


def model_of(contender: str) -> str:
    """The zoo model (a key of run's cfgs) whose model FLOPs a contender's step does: zoo_NAME is NAME, hf_dense
    the dense twin, every other HF contender the MoE."""
    if contender.startswith("zoo_"):
        return contender[4:]
    return "dense" if contender == "hf_dense" else "dropless"


def plan(quick: bool) -> dict:
    """The size, sequence, batch, repetitions and capacity factors: a dropless step of 1-3 s on 2 busy cores at
    full size; the quick run one factor (every code path, one compile fewer)."""
    if quick:
        return dict(size="smoke", seq=32, batch=1, reps=1, stats_batch=2, factors=(1.25,))
    return dict(size="moe-27m", seq=512, batch=1, reps=7, stats_batch=8, factors=(1.25, 2.0))


def run(quick: bool, device: str, peak: float, torch_ok: bool, log=print) -> dict:
    p = plan(quick)
    size, seq, batch, reps, factors = p["size"], p["seq"], p["batch"], p["reps"], p["factors"]
    moe = mixtral(size, max_seq_len=seq)
    cfgs = {"dropless": moe, **{f"capacity_{f}": with_capacity(moe, f) for f in factors}, "dense": dense_twin(moe)}
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "peak_flops": peak,
        "nproc": cores(),
        "loadavg_start": list(os.getloadavg()),
        **p,
        "tokens_per_step": batch * seq,
        "shape": dict(zip(SHAPE_FIELDS, SIZES[size], strict=True)),
        "dense_d_ff": cfgs["dense"].d_ff,
        "params": {
            "moe_total": zoo.count_params(moe),
            "moe_active": zoo.count_params(moe, active=True),
            "dense": zoo.count_params(cfgs["dense"]),
        },
        "capacity": {f"capacity_{f}": capacity(seq, moe, f) for f in factors},
        "compile_s": {},
    }
    steps = {}
    for name, cfg in cfgs.items():
        steps[f"zoo_{name}"], out["compile_s"][f"zoo_{name}"] = zoo_step(cfg, batch, seq)

    # Router statistics at initialisation (the weights every contender starts from), on random rows.
    rows = np.asarray(jax.random.randint(jax.random.key(2), (p["stats_batch"], seq + 1), 0, moe.vocab_size))
    params = {name: zoo.init_params(cfgs[name], jax.random.key(0)) for name in ("dropless", "dense")}  # zoo_step's
    out["router"] = {
        name: router_statistics(cfg, params["dropless"], rows) for name, cfg in cfgs.items() if name != "dense"
    }

    if torch_ok:
        import torch
        import transformers

        hf = hf_model(moe, params["dropless"])
        default = hf.config._experts_implementation
        out["hf"] = {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "default": default,
            # what transformers' grouped_mm calls on a CPU tensor (integrations/moe.py, _grouped_mm)
            "torch_grouped_mm": hasattr(torch.nn.functional, "grouped_mm") or hasattr(torch, "_grouped_mm"),
        }
        hf_dense = hf_model(cfgs["dense"], params["dense"])
        out["initial_loss"] = {
            "moe": initial_losses(moe, params["dropless"], hf, rows[:batch]),
            "dense": initial_losses(cfgs["dense"], params["dense"], hf_dense, rows[:batch]),
        }
        ids = torch.from_numpy(np.random.default_rng(1).integers(0, moe.vocab_size, (batch, seq)))
        # The default (grouped_mm: torch.nn.functional.grouped_mm over the expert-sorted rows, where this torch
        # has it) and the Python loop over the experts that transformers calls eager, when it is not the default;
        # and the dense twin in HF, to tell zoo's cost at these widths from its MoE's.
        for impl in dict.fromkeys([default, "eager"]):
            model = hf if impl == default else hf_model(moe, params["dropless"], impl)
            steps[f"hf_{impl}"], out["compile_s"][f"hf_{impl}_first_step"] = hf_step(model, ids)
        steps["hf_dense"], out["compile_s"]["hf_dense_first_step"] = hf_step(hf_dense, ids)
        out["hf"]["dense_class"] = type(hf_dense).__name__
    del params

    # No warm-up call (as benchmarks/train.py): zoo's steps are compiled ahead of time, torch's first step ran.
    times = interleave(steps, reps=reps, warmup=0)
    out["step_s"] = {k: summary(v) for k, v in times.items()}
    out["tokens_per_s"] = {k: summary([batch * seq / t for t in v]) for k, v in times.items()}
    model_flops = {name: flops_per_step(cfg, batch, seq) for name, cfg in cfgs.items()}
    out["model_flops_per_step"] = model_flops
    out["mfu"] = {k: summary([model_flops[model_of(k)] / t / peak for t in v]) for k, v in times.items()}
    experts = expert_flops_per_step(moe, batch, seq)
    out["expert_flops_per_step"] = experts
    # What ragged_dot's CPU lowering would cost (one dense matmul per expert over every sorted row: E times the
    # experts' FLOPs), the cost zoo's CPU default, padded blocks, avoids.
    out["model_flops_if_every_row_meets_every_expert"] = model_flops["dropless"] + (moe.num_experts - 1) * experts
    out["xla_flops_from"] = "lowered" if quick else "compiled"
    out["xla_flops_per_step"] = {name: xla_flops(cfg, batch, seq, compiled=not quick) for name, cfg in cfgs.items()}

    base = times["zoo_dropless"]
    # zoo's speed-up over each HF expert implementation (and of zoo's dense twin over HF's): HF time / zoo time
    # (> 1: zoo faster).
    out["zoo_speedup"] = {
        k: {z: paired_ratio(v, times[f"zoo_{z}"]) for z in cfgs if (z == "dense") == (k == "hf_dense")}
        for k, v in times.items()
        if k.startswith("hf_")
    }
    # capacity path time / dropless time, and MoE time / dense-same-active time (> 1: slower).
    out["capacity_over_dropless"] = {f"capacity_{f}": paired_ratio(times[f"zoo_capacity_{f}"], base) for f in factors}
    out["over_dense"] = {z: paired_ratio(times[f"zoo_{z}"], times["zoo_dense"]) for z in cfgs if z != "dense"}
    out["loadavg_end"] = list(os.getloadavg())
    log(
        f"  moe {size} seq {seq} batch {batch}: "
        + ", ".join(f"{k} {v['median']:.0f} tok/s" for k, v in out["tokens_per_s"].items())
    )
    return out
