"""The scale table (benchmarks/SCALE.md): the largest presets compiled for TPU slices on this CPU host.

    PYTHONPATH=/path/holding/libtpu python tools/scale_table.py [--only PRESET ...] [--out benchmarks/SCALE.md]

For each preset, candidates (topology, mesh, remat, gradient accumulation) are tried in order, each in a
subprocess of its own (the step, plus the FLOPs count's two small unrolled compiles, zoo/train/compile_only.py:
those only for a step that fits), until one fits the chip's HBM. Each compile's record (with its date and jax
version) is appended to benchmarks/results/scale.jsonl, committed beside the table: a rerun skips the cases
already there, --only PRESET compiles that preset alone, and the table is always written whole, every preset from
its records (--table-only: from the records alone, compiling nothing). The seven dense rows of 2026-11-28 are
records rebuilt from the table of that day (their run's own records were not kept): the table's precision, marked
"rebuilt".
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "scale.jsonl"
COMMON = ["model.dtype=bfloat16"]
REMAT = "model.remat_policy=full"

# preset -> (hardware the paper names, [(topology, overrides), ...] in the order tried)
CASES: dict[str, tuple[str, list[tuple[str, list[str]]]]] = {
    "gpt3-175b": (
        "V100 GPUs (Brown et al. 2020, sec. 2.3); TPU v4 has the same 32 GiB per chip",
        [
            ("v4:8x8x8", ["mesh.fsdp=128", "mesh.tensor=4", REMAT, "train.grad_accum_steps=6"]),
            ("v4:8x8x8", ["mesh.fsdp=128", "mesh.tensor=4", REMAT, "train.grad_accum_steps=12"]),
        ],
    ),
    "palm-540b": (
        "TPU v4, 2 pods x 3072 chips (Chowdhery et al. 2022, sec. 4)",
        [
            ("v4:8x8x16", ["mesh.fsdp=256", "mesh.tensor=4", REMAT, "train.grad_accum_steps=8"]),
            ("v4:8x16x16", ["mesh.fsdp=512", "mesh.tensor=4", REMAT, "train.grad_accum_steps=4"]),
        ],
    ),
    "llama3.1-405b": (
        "16K H100 80GB (Llama 3 report, sec. 3.3); nearest: TPU v5p, 95 GiB",
        [
            ("v5p:8x8x16", ["mesh.fsdp=256", "mesh.tensor=4", REMAT, "train.grad_accum_steps=8"]),
            ("v5p:8x16x16", ["mesh.fsdp=512", "mesh.tensor=4", REMAT, "train.grad_accum_steps=4"]),
        ],
    ),
    "llama3.1-70b": (
        "H100 80GB (Llama 3 report); nearest: TPU v5p",
        [
            ("v5p:4x4x8", ["mesh.fsdp=32", "mesh.tensor=4", REMAT, "train.grad_accum_steps=8"]),
            ("v5p:4x4x8", ["mesh.fsdp=32", "mesh.tensor=4", REMAT, "train.grad_accum_steps=16"]),
        ],
    ),
    "gemma2-27b": (
        "TPU v5p, 6144 chips (Gemma 2 report, sec. 3.2)",
        [
            ("v5p:4x4x8", ["mesh.fsdp=32", "mesh.tensor=4", REMAT, "train.grad_accum_steps=8"]),
            ("v5p:4x4x8", ["mesh.fsdp=32", "mesh.tensor=4", REMAT, "train.grad_accum_steps=16"]),
        ],
    ),
    "olmo2-32b": (
        "H100 80GB (OLMo 2 report); nearest: TPU v5p",
        [
            ("v5p:4x4x8", ["mesh.fsdp=32", "mesh.tensor=4", REMAT, "train.grad_accum_steps=16"]),
            ("v5p:4x4x8", ["mesh.fsdp=32", "mesh.tensor=4", REMAT, "train.grad_accum_steps=32"]),
        ],
    ),
    "t5-11b": (
        "TPU v3 slices (Raffel et al. 2020, sec. 3.1.2); libtpu describes v4 and newer: v4",
        [
            ("v4:4x4x8", ["mesh.fsdp=32", "mesh.tensor=4", REMAT]),
            ("v4:4x4x8", ["mesh.fsdp=32", "mesh.tensor=4", REMAT, "train.grad_accum_steps=4"]),
        ],
    ),
    # Mixtures of experts: the experts split over the mesh's expert axis (each chip holds E / expert whole
    # experts, zoo/sharding.py), the rest of the mesh as for the dense rows; dropless, as the presets are.
    "mixtral-8x22b": (
        "not published (none named in the Mixtral paper, recalled); TPU v5p",
        [
            ("v5p:4x4x8", ["mesh.expert=8", "mesh.fsdp=4", "mesh.tensor=4", REMAT, "train.grad_accum_steps=8"]),
            ("v5p:4x4x8", ["mesh.expert=8", "mesh.fsdp=4", "mesh.tensor=4", REMAT, "train.grad_accum_steps=16"]),
        ],
    ),
    "qwen3-235b-a22b": (
        "not published (none named in the Qwen3 report, recalled); TPU v5p",
        [
            ("v5p:4x8x8", ["mesh.expert=16", "mesh.fsdp=4", "mesh.tensor=4", REMAT, "train.grad_accum_steps=8"]),
            ("v5p:4x8x8", ["mesh.expert=16", "mesh.fsdp=4", "mesh.tensor=4", REMAT, "train.grad_accum_steps=16"]),
        ],
    ),
    "grok-1": (
        "not published (xAI released weights and inference code only); TPU v5p",
        [
            ("v5p:4x8x8", ["mesh.expert=8", "mesh.fsdp=8", "mesh.tensor=4", REMAT, "train.grad_accum_steps=8"]),
            ("v5p:8x8x8", ["mesh.expert=8", "mesh.fsdp=16", "mesh.tensor=4", REMAT, "train.grad_accum_steps=4"]),
        ],
    ),
    # DeepSeek-V3's batch of 15360 rows over the 512 batch shards (expert x fsdp) leaves 30 rows a shard: gradient
    # accumulation divides 30. Each chip gathers its expert group's tokens (zoo/layers/experts.py), so the group's
    # size bounds the experts' rows per chip.
    "deepseek-v3": (
        "2048 H800 GPUs (DeepSeek-V3 report, sec. 3.1, recalled); nearest: TPU v5p",
        [
            ("v5p:8x16x16", ["mesh.expert=32", "mesh.fsdp=16", "mesh.tensor=4", REMAT, "train.grad_accum_steps=30"]),
            ("v5p:8x16x16", ["mesh.expert=64", "mesh.fsdp=8", "mesh.tensor=4", REMAT, "train.grad_accum_steps=30"]),
        ],
    ),
    "llama4-maverick": (
        "H100-80GB GPUs, 2.38M GPU hours, count not published (Llama 4 model card); nearest: TPU v5p",
        [
            ("v5p:4x8x8", ["mesh.expert=16", "mesh.fsdp=4", "mesh.tensor=4", REMAT, "train.grad_accum_steps=8"]),
            ("v5p:4x8x8", ["mesh.expert=16", "mesh.fsdp=4", "mesh.tensor=4", REMAT, "train.grad_accum_steps=16"]),
        ],
    ),
    "switch-c-2048": (
        "TPU v3 (Fedus et al. 2021); libtpu describes v4 and newer: v4",
        [
            ("v4:8x8x16", ["mesh.expert=128", "mesh.fsdp=8", REMAT]),
            ("v4:8x16x16", ["mesh.expert=256", "mesh.fsdp=4", "mesh.tensor=2", REMAT, "train.grad_accum_steps=2"]),
        ],
    ),
}


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def one(preset: str, topology: str, overrides: list[str], flops: bool) -> dict:
    """Run in a subprocess: one compile, its report as a dict."""
    import jax

    jax.config.update("jax_platforms", "cpu")
    from zoo.model import count_params
    from zoo.train.compile_only import compile_for
    from zoo.train.config import resolve

    config = resolve(preset, COMMON + overrides)
    t0 = time.perf_counter()
    r = compile_for(config, topology, flops="if_fits" if flops else False)
    m = r.memory
    return {
        "preset": preset,
        "topology": topology,
        "overrides": overrides,
        "chips": r.chips,
        "mesh": r.mesh,
        "params": r.params,
        "active_params": count_params(config.model, active=True),
        "moe_matmul": r.moe_matmul,
        "capacity_factor": config.model.capacity_factor if config.model.is_moe else None,
        "arguments": m.arguments,
        "temporaries": m.temporaries,
        "total": m.total,
        "hbm": r.hbm_bytes,
        "fits": r.fits,
        "step_flops": r.step_flops,
        "model_flops": r.model_flops,
        "peak": r.peak_flops,
        "compile_s": r.compile_s,
        "wall_s": time.perf_counter() - t0,
        "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "batch": config.train.batch_size,
        "seq_len": config.train.seq_len,
        "flops": flops,
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "libtpu": _version("libtpu"),
        "host": platform.processor() or platform.machine(),
    }


def read_records() -> list[dict]:
    return [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []


def _same_case(row: dict, preset: str, topology: str, overrides: list[str], flops: bool) -> bool:
    return (row["preset"], row["topology"], row["overrides"], row["flops"]) == (preset, topology, overrides, flops)


def _error(stderr: str) -> str:
    """The line of a failed compile's stderr that says why (libtpu prints its own warnings after it)."""
    lines = stderr.strip().splitlines()
    said = [line for line in lines if "Error" in line or "RESOURCE_EXHAUSTED" in line]
    return " ".join((said or lines or ["no output"])[-1].split())[:300]


def run_case(preset, topology, overrides, flops) -> dict:
    for row in read_records():
        if _same_case(row, preset, topology, overrides, flops) and "error" not in row:
            return row
    cmd = [sys.executable, __file__, "--one", json.dumps([preset, topology, overrides, flops])]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    row = (
        json.loads(lines[-1])
        if out.returncode == 0 and lines
        else {
            "preset": preset,
            "topology": topology,
            "overrides": overrides,
            "flops": flops,
            "fits": False,
            "error": _error(out.stderr),
            "wall_s": time.perf_counter() - t0,
            "date": datetime.date.today().isoformat(),
        }
    )
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def chosen(preset: str, records: list[dict]) -> dict:
    """The preset's row: its first candidate (in CASES order) with a record that fits, else the last one tried,
    else a placeholder."""
    candidates = CASES[preset][1]
    tried = []
    for topology, overrides in candidates:
        rows = [r for r in records if _same_case(r, preset, topology, overrides, True)]
        ok = [r for r in rows if "error" not in r]
        if ok and ok[-1]["fits"]:
            return ok[-1]
        if rows:
            tried.append(ok[-1] if ok else rows[-1])
    if tried:
        return tried[-1]
    return {
        "preset": preset,
        "topology": candidates[0][0],
        "overrides": candidates[0][1],
        "error": "not compiled yet (rerun tools/scale_table.py)",
    }


def _billions(n: float) -> str:
    return f"{n / 1e9:.0f}B" if n >= 10e9 else f"{n / 1e9:.1f}B"


def _ratios(rows: list[dict]) -> str:
    return ", ".join(f"{r['preset']} ({r['chips']} chips, {r['step_flops'] / r['model_flops']:.2f}x)" for r in rows)


def _written(rows: list[dict]) -> str:
    """When and with what the rows were compiled: one clause per (date, jax) group."""
    groups: dict[tuple, list[str]] = {}
    for r in rows:
        if "date" in r:
            groups.setdefault((r["date"], r.get("jax")), []).append(r["preset"])
    host = next((r["host"] for r in rows if r.get("host")), platform.processor() or platform.machine())
    if len(groups) <= 1:
        date, jax_version = next(iter(groups)) if groups else (datetime.date.today().isoformat(), None)
        return f'on {date} ({host}, jax {jax_version}, libtpu from `pip install -e ".[tpu]"`)'
    clauses = "; ".join(f"{', '.join(p)} on {d} with jax {v}" for (d, v), p in groups.items())
    return f'({host}, libtpu from `pip install -e ".[tpu]"`): {clauses}'


def table(rows: list[dict], hardware: dict, records: list[dict]) -> str:
    gib = 1024**3
    counted = [r for r in rows if "error" not in r and not math.isnan(r["step_flops"])]
    dense = [r for r in counted if not r.get("moe_matmul")]
    moe = [r for r in counted if r.get("moe_matmul")]
    low = [r for r in dense if r["step_flops"] < r["model_flops"]]
    high = [r for r in dense if r["step_flops"] >= r["model_flops"]]
    lines = [
        "# Scale by simulation: the largest presets compiled for TPU slices",
        "",
        f"Written by `tools/scale_table.py` {_written(rows)}. Every row is the exact train step "
        "`python train.py --preset NAME --compile-only TOPOLOGY ...` compiles (zoo/train/compile_only.py), with "
        f"`{' '.join(COMMON)}` (bf16 compute, fp32 params and optimizer state) and the preset's batch and "
        "sequence length. Memory is XLA's per-chip analysis (arguments + outputs + temporaries - aliased) "
        "against the chip's HBM (Google Cloud TPU docs: v4 32 GiB / 275 TFLOP/s, v5e 16 GiB / 197, v5p 95 GiB "
        "/ 459, v6e 32 GiB / 918 bf16). Roofline = compiled FLOPs per chip (cost_analysis counts a loop body "
        "once, so the scanned layers and the gradient-accumulation loop are multiplied out from two unrolled "
        "compiles of one and two layer cycles) / the chip's bf16 peak: a lower bound that ignores "
        "communication and memory bandwidth. Model FLOPs are zoo/flops.py's 6N + attention; their ratio to the "
        "compiled FLOPs is the MFU a roofline-speed step would show (full remat recomputes the forward pass). "
        "Not understood yet: "
        + (_ratios(low) or "none")
        + " compile to fewer FLOPs than the model count (MFU over 100%), where full remat should put them about "
        "1.2-1.3x above, as it is for "
        + (_ratios(high) or "none")
        + ". The sequence length is not the cause (T5 11B at 512 is as low as LLaMA 3.1 70B at 8192), and causal "
        "attention skipping masked blocks (fewer attention FLOPs than zoo/flops.py's full T x T) explains a few "
        "percent, not 15-25%; every low row is a 128-chip slice. Treat those roofline figures as unverified.",
    ]
    if moe:
        lines += ["", _moe_note(moe)]
    refused = _refused([r["preset"] for r in rows], records)
    if refused:
        lines += ["", refused]
    lines += [
        "",
        "| preset | paper's hardware | slice (chips) | mesh | remat, accumulation | per-chip args / temps / "
        "total (GiB) | HBM | fits | compiled / model TFLOPs per chip | roofline step | MFU at roofline |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ov = {k: v for k, v in (o.split("=") for o in row["overrides"])}
        mesh = f"fsdp {ov.get('mesh.fsdp', 1)} x tensor {ov.get('mesh.tensor', 1)}"
        if int(ov.get("mesh.expert", 1)) > 1:
            mesh = f"expert {ov['mesh.expert']} x {mesh}"
        how = f"{ov.get('model.remat_policy', 'none')}, {ov.get('train.grad_accum_steps', 1)} micro-batches"
        if row.get("moe_matmul"):
            factor = row.get("capacity_factor")
            how += f", dropless ({row['moe_matmul']})" if factor is None else f", capacity factor {factor}"
        if "error" in row:
            lines.append(
                f"| {row['preset']} | {hardware[row['preset']]} | {row['topology']} | {mesh} | {how} | "
                f"{'' if row['error'].startswith('not compiled') else 'failed: '}{row['error']} | | | | | |"
            )
            continue
        size = _billions(row["params"])
        if row.get("moe_matmul"):
            size += f", {_billions(row['active_params'])} active"
        memory = (
            f"{row['arguments'] / gib:.1f} / {row['temporaries'] / gib:.1f} / {row['total'] / gib:.1f} | "
            f"{row['hbm'] / gib:.0f} | {'yes' if row['fits'] else 'no'} | "
        )
        lines.append(
            f"| {row['preset']} ({size}, {row['batch']} x {row['seq_len']}) | "
            f"{hardware[row['preset']]} | {row['topology']} ({row['chips']}) | {mesh} | {how} | {memory}"
            + (
                "not counted (does not fit) | | |"
                if math.isnan(row["step_flops"])
                else f"{row['step_flops'] / 1e12:.0f} / {row['model_flops'] / 1e12:.0f} | "
                f"{row['step_flops'] / row['peak']:.2f} s | "
                f"{row['model_flops'] / row['step_flops']:.0%} |"
            )
        )
    return "\n".join(lines) + "\n"


def ragged_dot_count(row: dict) -> float:
    """The compiled / model FLOP ratio XLA's counting of ragged_dot alone predicts for a dropless MoE row (MOE_NOTE):
    the expert matmuls at (3 + E / n) n / 3 times their model FLOPs, n = the expert axis, the rest at 4 / 3."""
    from zoo.flops import flops_per_step
    from zoo.train.config import resolve
    from zoo.train.objectives import make_objective, sentinels_needed
    from zoo.train.tokenizer import make_tokenizer

    config = resolve(row["preset"], COMMON + row["overrides"])
    cfg, tc = config.model, config.train
    tokens = {"num_layers": tc.seq_len}
    if cfg.is_encoder_decoder:
        tokenizer = make_tokenizer("byte", num_sentinels=sentinels_needed(tc.seq_len))
        decoder_len = make_objective(cfg, tc, tokenizer, 0).decoder_len
        tokens["num_decoder_layers"] = decoder_len
    else:
        decoder_len = None
    # model FLOPs of the routed experts per token and MoE layer: k experts, the in-projections and the out
    per_token = 6 * cfg.experts_per_token * (len(cfg.mlp_activations) + 1) * cfg.d_model * cfg.d_expert
    expert = sum(
        per_token * tc.batch_size * length * cfg.mlp_kinds(getattr(cfg, stack)).count("moe")
        for stack, length in tokens.items()
    )
    share = expert / flops_per_step(cfg, tc.batch_size, tc.seq_len, decoder_len)
    n = row["mesh"]["expert"]
    return (1 - share) * 4 / 3 + share * (3 + cfg.num_experts / n) * n / 3


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s >= 0.95 else f"{s:.2g} s"


def _refused(presets: list[str], records: list[dict]) -> str:
    """The candidates tried before each preset's row that did not fit (or did not compile), as a sentence."""
    out = []
    for preset in presets:
        row = chosen(preset, records)
        for topology, overrides in CASES[preset][1]:
            if (topology, overrides) == (row["topology"], row["overrides"]):
                break
            tried = [r for r in records if _same_case(r, preset, topology, overrides, True)]
            if tried:
                r = tried[-1]
                why = (
                    r["error"].rstrip(".")
                    if "error" in r
                    else f"{r['total'] / 1024**3:.1f} GiB of {r['hbm'] / 1024**3:.0f}"
                )
                out.append(f"{preset} on {topology} ({', '.join(overrides)}): {why}")
    return ("Tried first, did not fit: " + "; ".join(out) + ".") if out else ""


def _moe_note(rows: list[dict]) -> str:
    counted = {r["preset"]: ragged_dot_count(r) for r in rows}
    off = max(abs(r["step_flops"] / r["model_flops"] / counted[r["preset"]] - 1) for r in rows)
    return MOE_NOTE.format(
        ratios=_ratios(rows),
        predicted=", ".join(f"{p} {x:.1f}x" for p, x in counted.items()),
        agree=f"the compiled counts to within {max(off, 0.01):.0%}"
        + (": the excess is XLA's counting" if off <= 0.05 else ", more than the counting explains"),
        roofline=", ".join(f"{r['preset']} {_seconds(r['model_flops'] * 4 / 3 / r['peak'])}" for r in rows),
    )


MOE_NOTE = (
    "Mixture-of-experts rows ({ratios}): the mesh adds the expert axis (zoo/sharding.py: each chip holds E / n "
    "whole experts for an expert axis of n; the batch is split over data x fsdp x expert). The dropless experts "
    "run as on a TPU, through ragged_dot (compile_only resolves moe_matmul auto for the slice; on this CPU host auto "
    "means the padded-blocks matmul). Model FLOPs count the active parameters (k of the E experts a token, "
    "zoo/flops.py). Their compiled FLOPs are XLA's count of ragged_dot, not the work: cost_analysis counts a "
    "ragged_dot as 2 M K N over all its M rows whatever the group sizes, and its weight gradient (the ragged "
    "contracting dimension) as G times that for G groups (checked on one v5e chip, M 1024, K 256, N 512: 1, 4 and 16 "
    "groups count 1.0x, 1.0x, 1.0x and 1.0x, 4.0x, 16.0x), and zoo/layers/experts.py gives each chip the rows of its "
    "whole expert group (the tokens all-gathered over the expert axis) with only its own E / n experts as groups. "
    "So the expert matmuls count (3 + E / n) n / 3 times their model FLOPs (the forward, its remat recompute and "
    "the input gradient once each, the weight gradient E / n times, all over n chips' rows), the rest 4 / 3 (full "
    "remat): that predicts {predicted}, {agree}. At 4 / 3 of the model count (full remat, as a dense step) the"
    " roofline steps would be {roofline}. Whether the"
    " TPU's ragged-dot also spends time on the rows in no group is not known here: read the roofline and MFU"
    " columns of these rows as bounds, not estimates."
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="+", default=None, metavar="PRESET", help="compile these presets only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "SCALE.md"))
    parser.add_argument("--table-only", action="store_true", help="write the table from the records so far")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*json.loads(args.one))), flush=True)
        return 0
    unknown = set(args.only or ()) - set(CASES)
    if unknown:
        parser.error(f"--only: no case for {', '.join(sorted(unknown))}; the presets are {', '.join(CASES)}")
    for preset, (_hardware, candidates) in CASES.items():
        if args.table_only or (args.only and preset not in args.only):
            continue
        for topology, overrides in candidates:
            if run_case(preset, topology, overrides, flops=True).get("fits"):
                break
    records = read_records()
    rows = [chosen(p, records) for p in CASES]
    Path(args.out).write_text(table(rows, {p: h for p, (h, _) in CASES.items()}, records))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
