"""Greedy decoding: zoo.generate against HF `generate` on the same weights (written by zoo.hf.save, read by
transformers), asserting identical tokens; and the memory-bandwidth ceiling of each setting."""

from __future__ import annotations

import tempfile
import time

import jax
import numpy as np

import zoo
from zoo.flops import matmul_params

from benchmarks import models
from benchmarks.common import interleave, paired_ratio, pick, summary


def bytes_per_step(cfg, batch: int, context: float, itemsize: int = 4) -> float:
    """Bytes one decode step must read: every matmul weight once (the token embedding's rows are a lookup,
    the head is a matmul) + every layer's K and V for `context` cached positions of each row."""
    n = matmul_params(cfg)
    weights = (n["decoder"] + n["head"]) * itemsize
    kv = cfg.num_layers * 2 * batch * context * cfg.num_kv_heads * cfg.head_dim * itemsize
    return weights + kv


def setup(cfg, params, device: str = "cpu"):
    """(zoo model, HF model on the same weights, in cfg's dtype, on the CPU or the GPU)."""
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        zoo.hf.save(cfg, params, tmp)
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=getattr(torch, cfg.dtype))
    hf = hf.to("cuda" if device == "gpu" else "cpu")
    hf.eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return zoo.build(cfg), hf


def bench_setting(cfg, model, params, hf, batch: int, prompt_len: int, new: int, reps: int, bandwidth: float):
    prompt = np.asarray(
        jax.random.randint(jax.random.key(batch * 7 + prompt_len), (batch, prompt_len), 0, cfg.vocab_size), np.int32
    )
    out = {"batch": batch, "prompt": prompt_len, "new_tokens": new}
    start = time.perf_counter()
    zoo_tokens = np.asarray(zoo.generate(model, params, prompt, new))
    out["zoo_compile_and_first_s"] = time.perf_counter() - start
    # The prefill alone (one new token), timed beside each whole call: total - prefill = the decode steps.
    fns = {
        "zoo": lambda: np.asarray(zoo.generate(model, params, prompt, new)),
        "zoo_prefill": lambda: np.asarray(zoo.generate(model, params, prompt, 1)),
    }
    fns["zoo_prefill"]()  # compiles the prefill-only program
    if hf is not None:
        import torch

        ids = torch.from_numpy(prompt.astype(np.int64)).to(hf.device)

        def hf_generate():  # .cpu() waits for the GPU
            with torch.inference_mode():
                return (
                    hf.generate(
                        ids,
                        attention_mask=torch.ones_like(ids),
                        max_new_tokens=new,
                        min_new_tokens=new,
                        do_sample=False,
                    )
                    .cpu()
                    .numpy()
                )

        hf_tokens = hf_generate()
        same = hf_tokens.shape == zoo_tokens.shape and bool((hf_tokens == zoo_tokens).all())
        out["tokens_match"] = same
        if hf_tokens.shape == zoo_tokens.shape:  # in bf16 a near-tie can flip a pick and everything after it
            out["new_tokens_identical_fraction"] = float((hf_tokens == zoo_tokens)[:, prompt_len:].mean())
        if not same:
            diff = np.argwhere(hf_tokens[:, prompt_len:] != zoo_tokens[:, prompt_len:])
            out["first_mismatch"] = diff[0].tolist() if len(diff) else "shape"
        fns["hf"] = hf_generate
    times = interleave(fns, reps=reps, warmup=0)
    prefill = times.pop("zoo_prefill")
    out["tokens_per_s"] = {k: summary([batch * new / t for t in v]) for k, v in times.items()}
    out["zoo_prefill_s"] = summary(prefill)
    # Decode steps alone: the other new-1 tokens over the whole call's time less the prefill's, paired by
    # repetition.
    out["zoo_decode_tokens_per_s"] = summary(
        [batch * (new - 1) / max(t - p, 1e-9) for t, p in zip(times["zoo"], prefill, strict=True)]
    )
    if "hf" in times:
        out["zoo_speedup"] = paired_ratio(times["hf"], times["zoo"])
    # The ceiling: every step reads the weights and the cache as it stands (prompt + half the new tokens
    # on average). End-to-end times include the prefill, so that fraction is a lower bound; the decode-only
    # fraction is the one to hold against the ceiling.
    step_bytes = bytes_per_step(cfg, batch, prompt_len + new / 2, 2 if cfg.dtype == "bfloat16" else 4)
    out["bytes_per_step"] = step_bytes
    out["ceiling_tokens_per_s"] = batch * bandwidth / step_bytes
    out["zoo_fraction_of_ceiling"] = out["tokens_per_s"]["zoo"]["median"] / out["ceiling_tokens_per_s"]
    out["zoo_decode_fraction_of_ceiling"] = out["zoo_decode_tokens_per_s"]["median"] / out["ceiling_tokens_per_s"]
    return out


def plan(quick: bool, device: str):
    if device == "gpu":
        return models.GPU_SIZE, [(b, 128, models.GPU_NEW, 3) for b in (1, 8, 32)]
    if quick:
        return "smoke", [(1, 32, 8, 1), (8, 32, 8, 1)]
    # The large settings get one timed repetition (plus the checked first call): on 2 cores batch 32 with a
    # 1024-token prompt takes minutes per call in each library (measured 2026-11-28: decode was 13 min of run 2).
    return "25m", [
        (1, 128, 256, 3),
        (8, 128, 256, 3),
        (32, 128, 256, 1),
        (1, 1024, 256, 2),
        (8, 1024, 256, 1),
        (32, 1024, 256, 1),
    ]


def run(quick: bool, device: str, bandwidth: float, torch_ok: bool, log=print) -> dict:
    size, settings = plan(quick, device)
    extra = {"dtype": "bfloat16", "param_dtype": "bfloat16"} if device == "gpu" else {}
    # A wider init than N(0, 0.02) so greedy picks are not near-ties that float rounding could flip.
    cfg = models.llama(size, max_seq_len=2048, init_std=0.1, **extra)
    params = zoo.init_params(cfg, jax.random.key(0))
    model, hf = zoo.build(cfg), None
    if torch_ok:
        model, hf = setup(cfg, params, device)
    out = {"size": size, "params": zoo.count_params(cfg), "bandwidth_bytes_per_s": bandwidth, "settings": []}
    for batch, prompt_len, new, reps in pick(settings, "BENCH_DECODE_SETTINGS"):
        res = bench_setting(cfg, model, params, hf, batch, prompt_len, new, reps, bandwidth)
        out["settings"].append(res)
        log(
            f"  decode batch {batch} prompt {prompt_len} +{new}: "
            + ", ".join(f"{k} {v['median']:.0f} tok/s" for k, v in res["tokens_per_s"].items())
            + f", match {res.get('tokens_match')}, ceiling {res['ceiling_tokens_per_s']:.0f}"
        )
    return out
