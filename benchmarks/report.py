"""The printed table and benchmarks/RESULTS.md, rendered from the run's JSON. RESULTS.md is template.md with
each `<!-- generated: NAME -->` line replaced by the tables of that name; prose lives in the template."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.cells import ratio_cell as _r
from benchmarks.cells import spread_cell as _m
from benchmarks.report_moe import moe_tables

HERE = Path(__file__).resolve().parent


def header(res: dict) -> str:
    m = res["machine"]
    v = m["versions"]
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    peaks = res.get("peaks", {})
    mm, bw = peaks.get("matmul", {}), peaks.get("bandwidth", {})
    lines = [
        f"- **Date** {m['date']}; **machine** {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"backend {m['backend']} ({', '.join(sorted(set(m['devices'])))}); load average "
        f"{m['loadavg_start'][0]:.1f} at the start, {res.get('loadavg_end', [float('nan')])[0]:.1f} at the end "
        f"(the cores are shared with other work: every figure is a same-run ratio).",
        f"- **Versions** Python {m['python']}, {libs}.",
        f"- **Command** `{m['command']}` ({res['wall_s'] / 60:.1f} min); "
        f"XLA_FLAGS `{m['xla_flags'] or '(none)'}`, "
        f"OMP_WAIT_POLICY {res.get('omp_wait_policy')}.",
    ]
    if res.get("plan_selection"):
        lines.append(
            f"- **Partial run** (the machine was too busy for the whole plan): {res['plan_selection']}; "
            + (res.get("note") or "")
        )
    for name, run in res.get("runs", {}).items():  # a merged file: each run's own ceilings
        rm, rb = run["peaks"]["matmul"], run["peaks"]["bandwidth"]
        peers = ", ".join(f"{k} {rm[k]['median'] / 1e9:.0f}" for k in ("jax", "torch") if k in rm)
        lines.append(
            f"- **Run {name}** `{run['command']}`, {run['date']}, load {run['loadavg_start'][0]:.1f} -> "
            f"{run['loadavg_end'][0]:.1f}, {run['wall_s'] / 60:.1f} min: matmul peak "
            f"{rm['peak_flops'] / 1e9:.0f} GFLOP/s ({peers}), bandwidth {rb['bytes_per_s'] / 1e9:.1f} GB/s"
            + (f"; {run['sections']}" if "sections" in run else "")
            + "."
        )
    if mm and "runs" not in res:
        parts = [f"{k} {mm[k]['median'] / 1e9:.0f} GFLOP/s" for k in ("jax", "torch") if k in mm]
        lines.append(
            f"- **Ceilings measured in this run** matmul {mm['n']}^3 {mm['dtype']}: "
            + ", ".join(parts)
            + f" (peak used for MFU: {mm['peak_flops'] / 1e9:.0f} GFLOP/s, the best single repetition)"
            + (f"; memory bandwidth (jax sum over {bw['mib']} MiB) {bw['bytes_per_s'] / 1e9:.1f} GB/s" if bw else "")
            + "."
        )
    return "\n".join(lines)


def train_table(res: dict) -> str:
    t = res.get("train")
    if not t:
        return "_not run_"
    rows = [
        "| model | seq x batch | contender | tokens/s median (min-max) | MFU "
        "| zoo speed-up vs contender / cost vs zoo LLaMA |",
        "|---|---|---|---|---|---|",
    ]
    for s in t["shapes"]:
        for k, tps in s["tokens_per_s"].items():
            if k.startswith("torch"):
                extra = f"zoo {_r(s['zoo_speedup'].get(k))} faster"
            elif k != "zoo_llama":
                extra = f"{_r(s['family_cost'].get(k[4:]))} the time"
            else:
                extra = "baseline"
            fam = k[4:] if k.startswith("zoo_") else "llama"
            size = f"{s['size']} ({s['params'].get(fam, s['params']['llama']) / 1e6:.1f}M)"
            run = f" (run {s['run']})" if "run" in s else ""
            rows.append(
                f"| {size}{run} | {s['seq']} x {s['batch']} | {k} | {_m(tps)} | {s['mfu'][k]['median']:.0%} | {extra} |"
            )
    notes = []
    for s in t["shapes"]:
        if "torch_compile" in s:
            tc = s["torch_compile"]
            notes.append(
                f"torch.compile at {s['size']} seq {s['seq']}: {tc['status']}"
                + (f", first step (compile) {tc['compile_s']:.0f} s" if "compile_s" in tc else "")
                + (f" ({tc['error']})" if "error" in tc else "")
            )
    comp = "; ".join(
        f"{s['size']}/{s['seq']}: " + ", ".join(f"{k} {v:.1f} s" for k, v in s["compile_s"].items())
        for s in t["shapes"]
    )
    return (
        "\n".join(rows)
        + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")
        + f"\n\nCompile / first step: {comp}."
    )


def _fraction(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _identical(s: dict) -> str:
    if "tokens_match" not in s:
        return "-"
    if s["tokens_match"] or "new_tokens_identical_fraction" not in s:
        return str(s["tokens_match"])
    return f"False ({s['new_tokens_identical_fraction']:.1%} of new tokens)"


def decode_table(res: dict) -> str:
    d = res.get("decode")
    if not d:
        return "_not run_"
    rows = [
        f"Model: {d['size']} LLaMA ({d['params'] / 1e6:.1f}M), greedy, tokens/s = batch x new tokens / "
        "wall time of the whole generate call (prefill included); decode steps tokens/s = batch x (new - 1) / "
        "(that time - the same call's prefill alone, a 1-token generate timed beside it).",
        "",
        "| batch | prompt + new | zoo tokens/s | HF generate tokens/s | zoo speed-up | tokens identical | "
        "bandwidth ceiling tokens/s | zoo / ceiling | zoo prefill s | zoo decode steps tokens/s | "
        "decode steps / ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in d["settings"]:
        tp = s["tokens_per_s"]
        run = f" (run {s['run']})" if "run" in s else ""
        rows.append(
            f"| {s['batch']}{run} | {s['prompt']} + {s['new_tokens']} | {_m(tp['zoo'])} | {_m(tp.get('hf'))} | "
            f"{_r(s.get('zoo_speedup'))} | {_identical(s)} | {s['ceiling_tokens_per_s']:.0f} | "
            f"{s['zoo_fraction_of_ceiling']:.0%} | {_m(s.get('zoo_prefill_s'), 1, 2)} | "
            f"{_m(s.get('zoo_decode_tokens_per_s'))} | {_fraction(s.get('zoo_decode_fraction_of_ceiling'))} |"
        )
    return "\n".join(rows)


def compile_table(res: dict) -> str:
    c = res.get("compile_time")
    if not c:
        return "_not run_"
    rows = [
        f"{c['preset']} widths, forward + backward of a {c['batch']} x {c['length']} batch.",
        "",
        "| layers | scan compile (s) | unrolled compile (s) | scan step (ms) | unrolled step (ms) "
        "| unrolled / scan step |",
        "|---|---|---|---|---|---|",
    ]
    for r in c["rows"]:
        rows.append(
            f"| {r['layers']} | {r['scan_compile_s']:.2f} | {r['unrolled_compile_s']:.2f} | "
            f"{_m(r['step_s']['scan'], 1e3, 1)} | {_m(r['step_s']['unrolled'], 1e3, 1)} | "
            f"{_r(r['unrolled_over_scan_step'])} |"
        )
    if "scan_32_over_4" in c:
        rows.append(f"\nScanned compile time, 32 layers / 4 layers: **{c['scan_32_over_4']:.2f}x** (goal <= 1.5x).")
    return "\n".join(rows)


def memory_table(res: dict) -> str:
    m = res.get("memory")
    if not m:
        return "_not run_"
    rows = [
        f"{m['size']} LLaMA widths at {m['layers']} layers, forward + backward of {m['batch']} x {m['seq']} "
        "(`jit(...).lower(...).compile().memory_analysis()`; MiB).",
        "",
        "| remat policy | temporaries | arguments | outputs | peak (args + outputs - aliased + temps) |",
        "|---|---|---|---|---|",
    ]
    for p, v in m["policies"].items():
        rows.append(
            f"| {p} | {v['temp'] / 2**20:.0f} | {v['argument'] / 2**20:.0f} | {v['output'] / 2**20:.0f} | "
            f"{v['peak'] / 2**20:.0f} |"
        )
    rows.append(f"\nTemporaries (activations), none / full: **{m['none_over_full_temp']:.1f}x** (goal >= 3x).")
    return "\n".join(rows)


def knobs_table(res: dict) -> str:
    k = res.get("knobs")
    if not k:
        return "_not run_"
    names = {
        "layernorm_vs_rmsnorm": "LayerNorm instead of RMSNorm (train step)",
        "parallel_vs_serial": "parallel block instead of serial (train step)",
        "local_vs_global": "local attention (window {window}) instead of global (train step)",
        "gqa_vs_mha_decode": "GQA ({kv_heads[1]} KV heads) instead of MHA ({kv_heads[0]}) (greedy decode, batch 8)",
    }
    rows = [
        f"{k['size']} LLaMA widths; each pair interleaved in one process.",
        "",
        "| knob | shape | variant time / baseline time |",
        "|---|---|---|",
    ]
    for key, label in names.items():
        r = k.get(key)
        if not r:
            continue
        shape = (
            f"seq {r['seq']} x batch {r['batch']}"
            if "seq" in r
            else f"batch {r['batch']}, prompt {r['prompt']} + {r['new_tokens']}"
        )
        rows.append(f"| {label.format(**r)} | {shape} | {_r(r['variant_over_baseline'])} |")
    return "\n".join(rows)


def profile_tables(res: dict) -> str:
    p = res.get("profile")
    if not p:
        return "_not run_"
    out = []
    for name, r in p.items():
        shape = (
            f"batch {r['batch']} x seq {r['seq']}"
            if "seq" in r
            else f"batch {r['batch']}, prompt {r['prompt']} + {r['new_tokens']}"
        )
        out.append(
            f"**{name}** ({r['size']}, {shape}; {r['total_op_ms']:.0f} ms of op time over {r['runs']} "
            "run(s)). By component: "
            + ", ".join(f"{k} {v:.1%}" for k, v in r["component"].items())
            + ". By kind: "
            + ", ".join(f"{k} {v:.1%}" for k, v in r["kind"].items())
            + ". By phase: "
            + ", ".join(f"{k} {v:.1%}" for k, v in r["phase"].items())
            + "."
        )
        out += ["", "| share | HLO op | component | kind | contains | op name (tail) |", "|---|---|---|---|---|---|"]
        for row in r["top_ops"][:12]:
            out.append(
                f"| {row['share']:.1%} | {row['op']} | {row['component']} | {row['kind']} | "
                f"{' '.join(row['contains'])} | `{row['where']}` |"
            )
        out.append("")
    return "\n".join(out)


def gpu_section(res_gpu: dict | None) -> str:
    if not res_gpu:
        return "_Not measured yet: no accelerator was lent to a session that ran `benchmarks/accelerator.sh`._"
    return "\n\n".join([header(res_gpu), train_table(res_gpu), decode_table(res_gpu), memory_table(res_gpu)])


def scale_table(res: dict) -> str:
    """benchmarks/SCALE.md (written by tools/scale_table.py: its TPU compiles take an hour), without its title."""
    path = HERE / "SCALE.md"
    if not path.exists():
        return "_not run: python tools/scale_table.py_"
    return path.read_text().split("\n", 2)[2].strip()


SECTIONS = {
    "header": header,
    "scale": scale_table,
    "train": train_table,
    "decode": decode_table,
    "compile_time": compile_table,
    "memory": memory_table,
    "knobs": knobs_table,
    "moe": moe_tables,
    "profile": profile_tables,
}


def render(res: dict, res_gpu: dict | None = None) -> str:
    lines = []
    for line in (HERE / "template.md").read_text().splitlines():
        if line.startswith("<!-- generated: ") and line.endswith(" -->"):
            name = line[len("<!-- generated: ") : -4]
            lines.append(gpu_section(res_gpu) if name == "gpu" else SECTIONS[name](res))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def write_results(cpu_json: Path, gpu_json: Path | None = None) -> Path:
    res = json.loads(cpu_json.read_text())
    gpu = json.loads(gpu_json.read_text()) if gpu_json and gpu_json.exists() else None
    out = HERE / "RESULTS.md"
    out.write_text(render(res, gpu))
    return out


def merge(source: Path, into: Path, names=None) -> list[str]:
    """Copy sections of the run `source` (all it measured but peaks, or `names`) into the results file `into`,
    leaving every other section as it was; each merged section records the run it came from under
    `merged_sections` (a section measured alone carries its own date, cores and load: see moe)."""
    src, dst = json.loads(source.read_text()), json.loads(into.read_text())
    names = names or [n for n in src["sections"] if n != "peaks" and n in src]
    for name in names:
        if name not in src or name in src.get("errors", {}):
            raise SystemExit(f"{source} has no result for {name!r} (errors: {src.get('errors', {}).get(name)})")
        dst[name] = src[name]
        if name not in dst["sections"]:
            dst["sections"].append(name)
        dst.setdefault("section_s", {})[name] = src.get("section_s", {}).get(name)
        dst.setdefault("merged_sections", {})[name] = {
            "command": src["machine"]["command"],
            "date": src["machine"]["date"],
            "cores": src["machine"]["cores"],
            "matmul_peak_flops": src.get("peaks", {}).get("matmul", {}).get("peak_flops"),
        }
    into.write_text(json.dumps(dst, indent=1, default=str) + "\n")
    return names


def console(res: dict) -> str:
    """The table printed at the end of a run: every ratio with its spread."""
    rows = [("figure", "median (min-max)")]
    for s in res.get("train", {}).get("shapes", []):
        for k, r in s["zoo_speedup"].items():
            rows.append((f"train {s['size']} seq {s['seq']} x {s['batch']}: zoo speed-up vs {k}", _r(r)))
        for k, r in s["family_cost"].items():
            rows.append((f"train {s['size']} seq {s['seq']}: {k} time / llama time", _r(r)))
    for s in res.get("decode", {}).get("settings", []):
        if "zoo_speedup" in s:
            rows.append(
                (
                    f"decode b{s['batch']} p{s['prompt']}+{s['new_tokens']}: zoo speed-up vs HF "
                    f"(tokens match: {s['tokens_match']})",
                    _r(s["zoo_speedup"]),
                )
            )
        rows.append(
            (
                f"decode b{s['batch']} p{s['prompt']}: zoo / bandwidth ceiling",
                f"{s['zoo_fraction_of_ceiling']:.0%}"
                + (
                    f" (decode steps alone {s['zoo_decode_fraction_of_ceiling']:.0%})"
                    if "zoo_decode_fraction_of_ceiling" in s
                    else ""
                ),
            )
        )
    for key, r in res.get("knobs", {}).items():
        if isinstance(r, dict):
            rows.append((f"knob {key}: variant / baseline time", _r(r["variant_over_baseline"])))
    m = res.get("moe", {})
    for hf, by_zoo in m.get("zoo_speedup", {}).items():
        z = "dense" if hf == "hf_dense" else "dropless"
        rows.append((f"moe: zoo {z} speed-up vs HF {'dense twin' if z == 'dense' else hf[3:]}", _r(by_zoo[z])))
    for k, r in m.get("capacity_over_dropless", {}).items():
        rows.append((f"moe: {k} time / dropless time (dropped {m['router'][k]['dropped_fraction']:.1%})", _r(r)))
    if "dropless" in m.get("over_dense", {}):
        rows.append(("moe: dropless time / dense same-active time", _r(m["over_dense"]["dropless"])))
    if "memory" in res:
        rows.append(("remat temporaries none / full", f"{res['memory']['none_over_full_temp']:.1f}x"))
    if "scan_32_over_4" in res.get("compile_time", {}):
        rows.append(("scan compile 32 / 4 layers", f"{res['compile_time']['scan_32_over_4']:.2f}x"))
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)
