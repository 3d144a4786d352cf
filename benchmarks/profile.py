"""Where the time goes: per-HLO-op times from a `jax.profiler` trace (XLA's CPU thunk executor records one
event per op, named by its HLO instruction), joined with the optimised HLO's op names (flax module paths such
as .../attention/query/dot_general) to sum the time by component, by kind of op and by phase.

Train step: the issue's shape (25M LLaMA, sequence 512, batch 4, AdamW). Decode: greedy zoo.generate at
batch 8, prompt 128 + 256 new tokens, with the share spent on concatenating and writing the KV cache.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

import zoo

from benchmarks import models
from benchmarks.train import zoo_step

CONTAINERS = {"while", "conditional", "call", "async-start", "async-done"}
LAYOUT = {
    "copy",
    "transpose",
    "bitcast",
    "concatenate",
    "dynamic-update-slice",
    "dynamic-slice",
    "slice",
    "pad",
    "broadcast",
    "reshape",
    "parameter",
    "tuple",
    "get-tuple-element",
    "constant",
    "iota",
    "copy-start",
    "copy-done",
    "select",
    "compare",
    "convert",
    "gather",
    "scatter",
}
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (.*)$")
_OPCODE = re.compile(r"(?:^|[\s)}\]])([a-z][a-z0-9\-]*)\(")


def parse_hlo(text: str) -> dict:
    """instruction name -> {opcode, op_name, ops (opcodes inside it and in what it calls)}."""
    comps, instrs, current = collections.defaultdict(list), {}, None
    for line in text.splitlines():
        if line.endswith("{") and " = " not in line.split("(")[0]:
            current = line.split("(")[0].replace("ENTRY", "").strip().lstrip("%")
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, rest = m.groups()
        op = _OPCODE.search(rest)
        opcode = op.group(1) if op else "?"
        meta = re.search(r'op_name="([^"]*)"', rest)
        calls = re.findall(r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)", rest)
        instrs[name] = {"opcode": opcode, "op_name": meta.group(1) if meta else "", "calls": calls}
        comps[current].append(opcode)
    for info in instrs.values():
        info["ops"] = {info["opcode"]}.union(*[set(comps.get(c, ())) for c in info["calls"]])
    return instrs


def trace_op_times(fn, runs: int) -> dict[tuple[str, str], float]:
    """(HLO module, op name) -> total microseconds over `runs` calls of fn (each blocks), from a trace."""
    fn()
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(runs):
                fn()
        (path,) = glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True)
        with gzip.open(path) as f:
            data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    times = collections.Counter()
    for e in events:
        args = e.get("args") or {}
        if e.get("ph") == "X" and args.get("hlo_op"):
            times[(args.get("hlo_module", ""), args["hlo_op"])] += e.get("dur", 0.0)
    return dict(times)


def dumped_modules(dump_dir: str, names: set[str]) -> dict[str, dict]:
    """module name -> parsed optimised HLO, from XLA's dump (the newest dump of each name)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))):
        base = os.path.basename(path)
        for name in names:
            if f".{name}." in base:
                out[name] = parse_hlo(Path(path).read_text())
    return out


def classify(info: dict) -> tuple[str, str, str]:
    """(phase, component, kind) of one HLO instruction."""
    name, ops = info["op_name"], info["ops"]
    phase = "backward" if "transpose(" in name else "forward" if "jvp(" in name else "other"
    path = name.lower()
    if "attention/query" in path or "attention/key" in path or "attention/value" in path or "attention/out" in path:
        component = "attention projections"
    elif "_update_cache" in path or "cached_" in path:
        component = "KV cache update"
    elif "rope" in path:
        component = "RoPE"
    elif "attention" in path:
        component = "attention core (scores, mask, softmax, PV)"
    elif "/mlp/" in path:
        component = "MLP"
    elif "norm" in path:
        component = "norms"
    elif "lm_head" in path or "token_embed" in path:
        component = "LM head / embedding"
    elif "decoderonly" in path:
        component = "residual / other model"
    elif phase in ("forward", "backward"):
        component = "loss (log-softmax, cross-entropy)"
    else:
        component = "optimizer / other"
    if ops & {"dot", "convolution", "custom-call"} and "dot" in ops | {"custom-call"}:
        kind = "matmul"
    elif ops <= LAYOUT:
        kind = "copy / layout"
    else:
        kind = "elementwise / reduce"
    return phase, component, kind


def breakdown(op_times: dict, modules: dict, top: int = 15) -> dict:
    """Shares of op time by component, kind and phase, and the top ops; op_times from trace_op_times."""
    lookup = lambda key: modules.get(key[0], {}).get(key[1])  # noqa: E731
    total = sum(t for key, t in op_times.items() if (lookup(key) or {}).get("opcode") not in CONTAINERS)
    groups = {"component": collections.Counter(), "kind": collections.Counter(), "phase": collections.Counter()}
    rows = []
    for (module, op), t in op_times.items():
        info = lookup((module, op)) or {"opcode": "?", "op_name": "", "ops": set(), "calls": []}
        if info["opcode"] in CONTAINERS:
            continue
        phase, component, kind = classify(info)
        groups["component"][component] += t
        groups["kind"][kind] += t
        groups["phase"][phase] += t
        rows.append(
            {
                "op": f"{module}/{op}",
                "share": t / total,
                "ms": t / 1e3,
                "opcode": info["opcode"],
                "contains": sorted(info["ops"] - {"parameter", "bitcast", "constant", "tuple", "get-tuple-element"})[
                    :6
                ],
                "where": "/".join(info["op_name"].split("/")[-4:]),
                "component": component,
                "kind": kind,
            }
        )
    rows.sort(key=lambda r: -r["share"])
    return {
        "total_op_ms": total / 1e3,
        **{k: {n: v / total for n, v in c.most_common()} for k, c in groups.items()},
        "top_ops": rows[:top],
    }


def profile_train(size: str, batch: int, seq: int, runs: int, dump_dir: str) -> dict:
    cfg = models.llama(size, max_seq_len=seq)
    step, _ = zoo_step(cfg, batch, seq)
    times = trace_op_times(step, runs)
    out = breakdown(times, dumped_modules(dump_dir, {m for m, _ in times}))
    out.update(size=size, batch=batch, seq=seq, runs=runs)
    return out


def profile_decode(size: str, batch: int, prompt_len: int, new: int, runs: int, dump_dir: str) -> dict:
    """zoo.generate as a user calls it; the share of ops that concatenate (the KV cache, if it is rebuilt
    every step) and of dynamic-update-slice (the cache write)."""
    cfg = models.llama(size, max_seq_len=2048, init_std=0.1)
    model, params = zoo.build(cfg), zoo.init_params(cfg, jax.random.key(0))
    prompt = np.asarray(jax.random.randint(jax.random.key(1), (batch, prompt_len), 0, cfg.vocab_size), np.int32)
    times = trace_op_times(lambda: np.asarray(zoo.generate(model, params, prompt, new)), runs)
    modules = dumped_modules(dump_dir, {m for m, _ in times})
    out = breakdown(times, modules)
    total = sum(
        t for key, t in times.items() if modules.get(key[0], {}).get(key[1], {}).get("opcode") not in CONTAINERS
    )
    for opcode in ("concatenate", "dynamic-update-slice"):
        share = sum(t for key, t in times.items() if opcode in modules.get(key[0], {}).get(key[1], {}).get("ops", ()))
        out[f"share_in_ops_with_{opcode}"] = share / total if total else 0.0
    out.update(size=size, batch=batch, prompt=prompt_len, new_tokens=new, runs=runs)
    return out


def _child(quick: bool, dump_dir: str) -> dict:
    if quick:
        return {
            "train": profile_train("smoke", 2, 32, 1, dump_dir),
            "decode": profile_decode("smoke", 2, 16, 4, 1, dump_dir),
        }
    return {
        "train": profile_train("25m", 4, 512, 3, dump_dir),
        "decode": profile_decode("25m", 8, 128, 256, 1, dump_dir),
    }


def run(quick: bool, device: str, log=print) -> dict:
    """In a child process whose XLA_FLAGS dump the optimised HLO (the flag is read once per process)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_dump_to={tmp}/hlo --xla_dump_hlo_as_text".strip()
        cmd = [sys.executable, "-m", "benchmarks.profile", f"{tmp}/out.json"] + (["--quick"] if quick else [])
        subprocess.run(cmd, env=env, check=True, cwd=Path(__file__).resolve().parent.parent)
        res = json.loads(Path(f"{tmp}/out.json").read_text())
    for name, r in res.items():
        log(f"  profile {name}: " + ", ".join(f"{k} {v:.0%}" for k, v in list(r["component"].items())[:5]))
    return res


if __name__ == "__main__":
    out_path = sys.argv[1]
    dump = os.path.join(os.path.dirname(out_path), "hlo")
    Path(out_path).write_text(json.dumps(_child("--quick" in sys.argv, dump), default=sorted))
