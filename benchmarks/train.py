"""Training throughput and MFU: a zoo train step (jit, optax AdamW) against HF transformers' PyTorch
LlamaForCausalLM (eager; torch.compile where it works) on the same shape and batch, interleaved; Gemma-2- and
PaLM-style zoo models of the same size beside them, to show what their knobs cost."""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import optax

import zoo
from zoo.flops import flops_per_step
from zoo.train.objectives import causal_lm_loss

from benchmarks import models
from benchmarks.common import interleave, paired_ratio, pick, summary


def zoo_step(cfg, batch: int, seq: int, seed: int = 0):
    """A blocking () -> None running one AdamW step of `cfg` on a fixed [batch, seq] batch, and its compile s."""
    model = zoo.build(cfg)
    params = zoo.init_params(cfg, jax.random.key(seed))
    tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.1)
    rows = jax.random.randint(jax.random.key(seed + 1), (batch, seq + 1), 0, cfg.vocab_size)

    def loss_fn(p, rows):
        logits = model.apply({"params": p}, rows[:, :-1])
        return causal_lm_loss(logits, rows[:, 1:], z_loss=cfg.z_loss_multiplier)[0]

    def step(p, opt, rows):
        loss, grads = jax.value_and_grad(loss_fn)(p, rows)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    state = [params, tx.init(params)]
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*state, rows).compile()
    compile_s = time.perf_counter() - start

    def run():
        state[0], state[1], loss = compiled(state[0], state[1], rows)
        loss.block_until_ready()

    run.compiled = compiled
    return run, compile_s


def hf_llama(cfg, *, eager_attention: bool = False):
    """A randomly initialised transformers LlamaForCausalLM with `cfg`'s architecture (float32 weights; on a
    GPU its default attention is SDPA, which dispatches to flash attention under bf16 autocast)."""
    import torch
    import transformers

    values = zoo.hf.config_to_hf(cfg, "llama")
    values = {k: v for k, v in values.items() if k not in ("architectures", "model_type")}
    hf_cfg = transformers.LlamaConfig(**values)
    torch.manual_seed(0)
    kwargs = {"attn_implementation": "eager"} if eager_attention else {}
    return transformers.LlamaForCausalLM._from_config(hf_cfg, dtype=torch.float32, **kwargs)


def torch_step(cfg, batch: int, seq: int, *, compiled: bool = False, device: str = "cpu"):
    """A blocking () -> None running one torch AdamW step (same hyper-parameters) of HF LLaMA, and the
    seconds its first step took (for torch.compile: the compile). On "gpu": CUDA, fp32 weights and AdamW
    state, bf16 autocast -- the same mixed precision as zoo's dtype=bfloat16, param_dtype=float32."""
    import contextlib

    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    where = "cuda" if device == "gpu" else "cpu"
    model = hf_llama(cfg).to(where)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    ids = torch.from_numpy(np.random.default_rng(1).integers(0, cfg.vocab_size, (batch, seq))).to(where)
    forward = torch.compile(model) if compiled else model
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device == "gpu" else contextlib.nullcontext

    def run():
        with autocast():
            loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "gpu":
            torch.cuda.synchronize()

    start = time.perf_counter()
    run()
    return run, time.perf_counter() - start


def _try_torch_compile(cfg, batch, seq, budget_s: float, device: str):
    """torch.compile's step, or (None, why). A first step over budget_s is recorded and not used."""
    try:
        run, first = torch_step(cfg, batch, seq, compiled=True, device=device)
    except Exception as e:  # noqa: BLE001  (inductor needs a C++ compiler and a supported torch; record why)
        return None, {"status": "failed", "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    info = {"status": "ok", "compile_s": first}
    if first > budget_s:
        return None, {"status": "too slow to compile", "compile_s": first, "budget_s": budget_s}
    return run, info


def bench_shape(
    size: str,
    seq: int,
    batch: int,
    reps: int,
    *,
    torch_ok: bool,
    torch_compile: bool,
    families: tuple[str, ...],
    peak: float,
    compile_budget_s: float = 240.0,
    extra: dict | None = None,
    device: str = "cpu",
) -> dict:
    """One (size, seq, batch): every contender's step, interleaved; ratios against zoo LLaMA. `extra`:
    ModelConfig values per family (the accelerator's bf16 and cuDNN attention)."""
    extra = extra or {}
    cfgs = {f: models.FAMILIES[f](size, max_seq_len=max(seq, 128), **extra.get(f, {})) for f in families}
    steps, info = (
        {},
        {
            "size": size,
            "seq": seq,
            "batch": batch,
            "tokens_per_step": batch * seq,
            "compile_s": {},
            "config": {
                f: {k: getattr(c, k) for k in ("dtype", "param_dtype", "attention_impl", "remat_policy")}
                for f, c in cfgs.items()
            },
        },
    )
    for fam, cfg in list(cfgs.items()):
        try:
            steps[f"zoo_{fam}"], info["compile_s"][f"zoo_{fam}"] = zoo_step(cfg, batch, seq)
        except Exception as e:  # e.g. cuDNN attention refused on this GPU/jax: record it, retry with XLA's
            if cfg.attention_impl != "cudnn":
                raise
            info.setdefault("fallbacks", {})[fam] = (
                f"attention_impl cudnn failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); measured with xla"
            )
            cfgs[fam] = cfg = cfg.replace(attention_impl="xla")
            info["config"][fam]["attention_impl"] = "xla"
            steps[f"zoo_{fam}"], info["compile_s"][f"zoo_{fam}"] = zoo_step(cfg, batch, seq)
    if torch_ok:
        steps["torch_eager"], info["compile_s"]["torch_eager_first_step"] = torch_step(
            cfgs["llama"], batch, seq, device=device
        )
        if torch_compile:
            run, info["torch_compile"] = _try_torch_compile(cfgs["llama"], batch, seq, compile_budget_s, device)
            if run is not None:
                steps["torch_compile"] = run
    # No warm-up call: zoo's step is compiled ahead of time and torch's first step already ran.
    times = interleave(steps, reps=reps, warmup=0)
    info["params"] = {f: zoo.count_params(c) for f, c in cfgs.items()}
    info["step_s"] = {k: summary(v) for k, v in times.items()}
    info["tokens_per_s"] = {k: summary([batch * seq / t for t in v]) for k, v in times.items()}
    flops = {k: flops_per_step(cfgs[k[4:] if k.startswith("zoo_") else "llama"], batch, seq) for k in times}
    info["model_flops_per_step"] = flops
    info["mfu"] = {k: summary([flops[k] / t / peak for t in v]) for k, v in times.items()}
    base = times["zoo_llama"]
    # speedup of zoo over each peer: peer time / zoo time (> 1: zoo faster)
    info["zoo_speedup"] = {k: paired_ratio(v, base) for k, v in times.items() if k.startswith("torch")}
    # cost of each family's knobs: family time / LLaMA time at the same size (> 1: slower)
    info["family_cost"] = {
        k[4:]: paired_ratio(v, base) for k, v in times.items() if k.startswith("zoo_") and k != "zoo_llama"
    }
    return info


def plan(quick: bool, device: str) -> list[dict]:
    """(size, seq, batch, reps) to run: batches make a CPU step about a second on 2 cores where a single
    sequence allows it."""
    if device == "gpu":
        # bf16 compute, fp32 master weights and AdamW state; cuDNN flash attention for LLaMA; Gemma 2's
        # attention soft-cap is not expressible in cuDNN's fused kernel, so `auto` gives it zoo's flash attention.
        # save_dots: without remat the 1B step's temporaries are 70 GiB (measured: the H200 ran out beside
        # torch's model); keeping only the matmul outputs recomputes the cheap elementwise ops.
        bf16 = {"dtype": "bfloat16", "remat_policy": "save_dots"}
        return [
            dict(
                size=models.GPU_SIZE,
                seq=models.GPU_SEQ,
                batch=4,
                reps=10,
                families=("llama", "gemma2"),
                extra={"llama": {**bf16, "attention_impl": "cudnn"}, "gemma2": {**bf16, "attention_impl": "auto"}},
            )
        ]
    if quick:
        return [dict(size="smoke", seq=64, batch=2, reps=2, families=("llama", "gemma2"))]
    fam3 = ("llama", "gemma2", "palm")
    return [
        dict(size="25m", seq=128, batch=4, reps=5, families=fam3),
        dict(size="25m", seq=512, batch=1, reps=5, families=fam3),
        dict(size="25m", seq=2048, batch=1, reps=3, families=fam3),
        dict(size="25m", seq=4096, batch=1, reps=2, families=("llama", "gemma2")),
        dict(size="110m", seq=128, batch=1, reps=3, families=("llama",)),
        dict(size="110m", seq=512, batch=1, reps=3, families=("llama",)),
        dict(size="110m", seq=2048, batch=1, reps=2, families=("llama",)),
        dict(size="110m", seq=4096, batch=1, reps=2, families=("llama",)),
    ]


def _release_gpu_memory(torch_on_gpu: bool) -> None:
    """Drop the finished shape's models and optimiser states, and hand torch's cached blocks back to the
    device, so the next section (zoo's or HF's) does not run short of GPU memory."""
    import gc

    gc.collect()
    if torch_on_gpu:
        import torch

        torch.cuda.empty_cache()


def run(quick: bool, device: str, peak: float, torch_ok: bool, log=print) -> dict:
    out = {"peak_flops": peak, "shapes": []}
    for i, p in enumerate(pick(plan(quick, device), "BENCH_TRAIN_SHAPES")):
        # torch.compile is tried once, on the first (smallest) full-mode shape: its CPU compile of a
        # training step takes minutes, and it is recorded whatever happens.
        # On a GPU torch.compile is left out: its compile of a 1B training step would take a large share of
        # the accelerator plan's 8 minutes.
        res = bench_shape(
            p["size"],
            p["seq"],
            p["batch"],
            p["reps"],
            torch_ok=torch_ok,
            torch_compile=torch_ok
            and device == "cpu"
            and not quick
            and i == 0
            and os.environ.get("BENCH_TORCH_COMPILE", "1") != "0",
            families=p["families"],
            peak=peak,
            extra=p.get("extra"),
            device=device,
        )
        out["shapes"].append(res)
        _release_gpu_memory(torch_ok and device == "gpu")
        log(
            f"  train {p['size']} seq {p['seq']} batch {p['batch']}: "
            + ", ".join(f"{k} {v['median']:.0f} tok/s" for k, v in res["tokens_per_s"].items())
        )
    return out
