"""The README cannot rot: its generated tables are current, every Python block runs, every command runs
(the main job for real, sample.py on its result) or, where it needs a big machine, resolves to a valid
config, and the numbers its first paragraph states are the ones the main job prints."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.train.cli import parse_args

from conftest import without_test_flags
from tools import readme_tables

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PROSE = " ".join(README.split())  # the README's text with line breaks as spaces, for phrases that wrap
# Commands that are not run here, and why: installs (CI's own steps) and CI itself.
NOT_RUN = {
    "bash .ci/run": "CI: it runs this test",
    "python -m pytest": "CI's test command: it runs this test",
    'pip install -e ".[test,notebooks,eval]"': "CI's install step",
    'pip install -e ".[eval]"': "an install",
    'pip install -e ".[tensorboard]"': "an install",
    'pip install -e ".[test,lint]"': "an install",
    "ruff ": "CI's lint and format check (.ci/run)",
    "mypy": "CI's type check (.ci/run)",
}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def _commands() -> list[str]:
    """Every shell command the README shows: bash blocks (continuations joined, comments dropped) and inline
    `python ...` / `pip ...` commands."""
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    out += re.findall(r"`((?:python|pip) [^`]+)`", README)
    return out


def _train_commands() -> list[list[str]]:
    """The argv of every `python train.py` the README shows, including the Training table's override
    examples (each applied to `python train.py`)."""
    argvs = []
    for command in _commands():
        match = re.search(r"train\.py((?:\s+[^\s\"&]+)*)", command)
        if match and not re.search(r"\[|\bNAME\b", match.group(1)):  # a usage synopsis is not a command
            argvs.append(shlex.split(match.group(1)))
    table = README[README.index("| to | do |") : README.index("Encoder-decoder presets train")]
    for row in [r for r in table.splitlines()[2:] if r.startswith("|")]:
        for code in re.findall(r"`([^`]+)`", row.split("|")[2]):
            words = shlex.split(code)
            if all(re.fullmatch(r"\w+\.\w+=\S*", w) for w in words) or words[0] == "--preset":
                argvs.append(words)
    return argvs


def test_readme_tables_are_current():
    for key in readme_tables.MARKERS:
        assert readme_tables.block(key) in README, f"README {key} is stale: run `python tools/readme_tables.py --write`"


def _released_weights_block() -> list[str]:
    """The commands of the "Use released weights" section, in order."""
    section = README[README.index("## Use released weights") :]
    return [line for line in _blocks("bash") if line in section[: section.index("\n## ", 1)]][0].strip().splitlines()


@pytest.mark.slow
def test_released_weights_commands_run(tmp_path):
    """Make the tiny checkpoint, fine-tune, evaluate, export, evaluate the export, sample: in a scratch
    directory, in the README's order."""
    env = without_test_flags(dict(os.environ, PYTHONPATH=str(ROOT)))
    for command in _released_weights_block():
        for script in ("train.py", "evaluate.py", "sample.py"):
            command = command.replace(f"python {script}", f"python {ROOT / script}")
        command = sys.executable + command.removeprefix("python")
        out = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{command}\n{out.stderr[-3000:]}"
    evaluation = json.loads((tmp_path / "finetune-eval.json").read_text())
    assert evaluation["validation"]["loss"] < math.log(384) - 1.0  # fine-tuning learnt something
    assert (tmp_path / "finetune-hf" / "tokenizer.json").exists()


def test_every_command_is_covered():
    """Each command is run below, resolved below, or listed in NOT_RUN with its reason."""
    released = _released_weights_block()
    for command in _commands():
        synopsis = re.search(r"\b[A-Z]{3,}\b|\[", command)  # `python -m zoo.export RUN OUT`: a usage line
        covered = (
            synopsis
            or "train.py" in command
            or "sample.py" in command  # run or resolved below
            or command in released  # test_released_weights_commands_run
            or "tools/readme_tables.py" in command  # its output: test_readme_tables_are_current
            or any(command.startswith(skip) for skip in NOT_RUN)
        )
        assert covered, f"README command with no test: {command}"


@pytest.mark.parametrize("argv", _train_commands(), ids=" ".join)
def test_train_commands_resolve(argv):
    """Every train.py command line (big presets included) parses and validates; nothing is trained."""
    argv = [a for a in argv if a not in ("-h", "--help")]
    if "--preset" not in argv and any(a.startswith(("init.hf=", "init.run=")) for a in argv):
        argv = ["--preset", "llama-tiny", *argv]  # a placeholder path: without a preset its checkpoint is read
    config, text = parse_args(argv)
    assert text is None and config is not None


@pytest.mark.slow
def test_python_blocks_run(tmp_path):
    """Each ```python block, in a fresh namespace, with the placeholder paths pointing at a tiny random
    LLaMA checkpoint that transformers wrote."""
    import torch
    import transformers

    torch.manual_seed(0)
    hf_dir = tmp_path / "hf_checkpoint"
    transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=128,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    ).save_pretrained(hf_dir)
    blocks = _blocks("python")
    assert len(blocks) >= 2
    for block in blocks:
        code = block.replace('"path/to/hf_checkpoint"', repr(str(hf_dir))).replace(
            '"out_dir"', repr(str(tmp_path / "out"))
        )
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "out" / "config.json").exists()


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """The README's first command, `python train.py`, as it stands (300 steps of llama-tiny), in a fresh run
    directory."""
    run_dir = tmp_path_factory.mktemp("main_job") / "llama-tiny"
    env = without_test_flags(dict(os.environ, PYTHONPATH=str(ROOT)))
    out = subprocess.run(
        [sys.executable, "train.py", f"run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir, out.stdout, env


@pytest.mark.slow
def test_main_job_numbers_are_the_readmes(main_job):
    run_dir, stdout, _ = main_job
    entropy = float(re.search(r"unigram entropy ([\d.]+) nats/token", stdout).group(1))
    stated = float(re.search(r"unigram entropy of ([\d.]+) nats/token", PROSE).group(1))
    assert abs(entropy - stated) <= 0.005 + 1e-9  # the README rounds to two decimals (3.235 -> 3.24)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r["loss"] for r in rows if "loss" in r)
    val = [r["val_loss"] for r in rows if "val_loss" in r][-1]
    vocab = json.loads((run_dir / "config.json").read_text())["model"]["vocab_size"]
    assert f"uniform over the {vocab}-row byte vocabulary: ln {vocab} = {math.log(vocab):.2f}" in PROSE
    assert first == pytest.approx(math.log(vocab), abs=0.1)  # the untrained model is near uniform
    figures = r"about ([\d.]+) train / ([\d.]+) validation nats per token \(([\d.]+) / ([\d.]+) at seed 0"
    about_train, about_val, seed0_train, seed0_val = map(float, re.search(figures, PROSE).groups())
    assert (about_train, about_val) == (round(seed0_train, 1), round(seed0_val, 1))  # the rounding is the figure's
    assert val == pytest.approx(seed0_val, abs=0.05)  # float rounding differs between CPUs (see the README)
    train = float(re.search(r"train loss ([\d.]+) \(mean of the last 10 steps\)", stdout).group(1))
    assert train == pytest.approx(seed0_train, abs=0.05)
    assert val < entropy - 0.5, f"validation loss {val} is not well below the unigram entropy {entropy}"
    assert re.search(r"^sample \(200 tokens", stdout, re.M)


@pytest.mark.slow
def test_sample_command_runs(main_job):
    run_dir, _, env = main_job
    # the Training table's sample command, which reads the main job's run (the released-weights one is run above)
    command = next(c for c in _commands() if c.startswith("python sample.py") and "runs/llama-tiny" in c)
    argv = [str(run_dir) if a == "runs/llama-tiny" else a for a in shlex.split(command)]
    out = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("def ")


@pytest.mark.slow
def test_sample_reads_prompts_from_stdin_stops_and_streams(main_job):
    """sample.py --prompt-file - (one batch of prompts from stdin) with a stop string, and --stream: each
    continuation ends before the stop string, and the streamed text is the same as the batched one."""
    run_dir, _, env = main_job
    common = ["sample.py", "--run", str(run_dir), "--max-new-tokens", "60", "--temperature", "0", "--stop", "\n"]
    out = subprocess.run(
        [sys.executable, *common, "--prompt-file", "-"],
        input="def \n\nclass \nimport \n",
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["def", "class", "import"], out.stdout
    streamed = subprocess.run(
        [sys.executable, *common, "--prompt", "class ", "--stream"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    assert streamed.stdout.rstrip("\n") == lines[1]
