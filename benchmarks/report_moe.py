"""RESULTS.md's mixture-of-experts tables, rendered from the moe section of the run's JSON (benchmarks/moe.py)."""

from __future__ import annotations

from benchmarks.cells import ratio_cell as _r
from benchmarks.cells import spread_cell as _m


def _moe_label(key: str, m: dict) -> str:
    if key == "zoo_dropless":
        return "zoo MoE, dropless (sort + padded expert blocks)"
    if key.startswith("zoo_capacity_"):
        return f"zoo MoE, capacity factor {key[13:]} (C = {m['capacity'][key[4:]]})"
    if key == "zoo_dense":
        return f"zoo dense, d_ff {m['dense_d_ff']} (same active parameters)"
    if key == "hf_dense":
        return f"HF {m['hf'].get('dense_class', 'dense')}, d_ff {m['dense_d_ff']} (zoo's dense twin)"
    impl = key[3:]
    what = "grouped matmul" if impl == "grouped_mm" else "loop over experts" if impl == "eager" else impl
    default = " (its default)" if impl == m.get("hf", {}).get("default") else ""
    return f"HF MixtralForCausalLM, experts `{impl}`{default}: {what}"


def moe_tables(res: dict) -> str:
    m = res.get("moe")
    if not m:
        return "_not run_"
    s, p = m["shape"], m["params"]
    src, peak = res.get("merged_sections", {}).get("moe"), m.get("peak_flops")
    lines = [
        f"Measured {m['date']} on `nproc` = {m['nproc']} cores, load average {m['loadavg_start'][0]:.1f} at the "
        f"start of the section and {m['loadavg_end'][0]:.1f} at its end"
        + (f" (`{src['command']}`, merged into this file)" if src else "")
        + f". Model ({m['size']}): d_model {s['d_model']}, {s['layers']} layers, {s['heads']} heads / "
        f"{s['kv_heads']} KV heads, {s['experts']} SwiGLU experts of width {s['d_expert']}, top {s['k']}, vocab "
        f"{s['vocab']}: {p['moe_total'] / 1e6:.1f}M parameters, {p['moe_active'] / 1e6:.2f}M active (dense twin: "
        f"{p['dense'] / 1e6:.2f}M). One train step (forward + backward + AdamW) on {m['batch']} x {m['seq']} "
        f"tokens, {m['reps']} interleaved repetitions"
        + (f"; MFU against the matmul peak its run measured, {peak / 1e9:.0f} GFLOP/s" if peak else "")
        + ".",
        "",
        "| contender | tokens/s median (min-max) | MFU | XLA GFLOP / step | XLA / model FLOPs |",
        "|---|---|---|---|---|",
    ]
    model_flops = m["model_flops_per_step"]
    for k, tps in m["tokens_per_s"].items():
        name = k[4:] if k.startswith("zoo_") else None
        xla = m["xla_flops_per_step"].get(name) if name else None
        xla_cells = f"{xla / 1e9:.1f} | {xla / model_flops[name]:.2f}" if xla else "- | -"
        mfu = f"{m['mfu'][k]['median']:.0%}" if k in m.get("mfu", {}) else "-"
        lines.append(f"| {_moe_label(k, m)} | {_m(tps)} | {mfu} | {xla_cells} |")
    lines += ["", "| paired ratio (same run, interleaved) | median (min-max) |", "|---|---|"]
    for hf, by_zoo in m.get("zoo_speedup", {}).items():
        peer = "HF dense twin" if hf == "hf_dense" else f"HF Mixtral `{hf[3:]}`"
        for z, r in by_zoo.items():
            lines.append(f"| zoo {z.replace('_', ' ')} speed-up over {peer} (HF time / zoo time) | {_r(r)} |")
    for k, r in m["capacity_over_dropless"].items():
        lines.append(f"| {k.replace('_', ' ')} time / dropless time | {_r(r)} |")
    for k, r in m["over_dense"].items():
        lines.append(f"| MoE {k.replace('_', ' ')} time / dense (same active) time | {_r(r)} |")
    lines += [
        "",
        "| routing (at initialisation, "
        f"{m['stats_batch']} random sequences of {m['seq']}) | dropped assignments, mean (per layer) "
        "| busiest expert / mean load |",
        "|---|---|---|",
    ]
    for k, r in m["router"].items():
        per = ", ".join(f"{x:.1%}" for x in r["dropped_fraction_per_layer"])
        lines.append(f"| {k.replace('_', ' ')} | {r['dropped_fraction']:.1%} ({per}) | {r['expert_load_max']:.2f} |")
    every = m["model_flops_if_every_row_meets_every_expert"]
    notes = [
        f"Model FLOPs / step (`zoo/flops.py`, k of E experts): MoE {model_flops['dropless'] / 1e9:.2f} G "
        f"(of which routed experts {m['expert_flops_per_step'] / 1e9:.2f} G), dense twin "
        f"{model_flops['dense'] / 1e9:.2f} G; with every sorted row multiplied by every expert's kernels "
        f"(ragged_dot's CPU lowering, which the padded blocks avoid): {every / 1e9:.2f} G. XLA's counts are of the "
        f"step with its layers unrolled ({m.get('xla_flops_from', 'compiled')} HLO)."
    ]
    if "initial_loss" in m:
        loss = m["initial_loss"]
        notes.append(
            "Same weights on both sides (zoo.hf.save, then from_pretrained): cross-entropy before the first step, "
            + "; ".join(f"{k} zoo {v['zoo']:.6f}, HF {v['hf']:.6f}" for k, v in loss.items())
            + f" (transformers {m['hf']['transformers']}, torch {m['hf']['torch']})."
        )
    comp = ", ".join(f"{k} {v:.1f} s" for k, v in m["compile_s"].items())
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + f"\n\nCompile / first step: {comp}."
