"""`python train.py`: argv -> a run Config (zoo/train/config.py) -> the training loop (zoo/train/loop.py).

    python train.py --preset gpt3-tiny model.num_layers=2 train.learning_rate=1e-3 mesh.fsdp=2 run.steps=100

Bad input of any kind (unknown key, bad value, missing data, invalid mesh, a checkpoint of another model) ends
with exit status 2 and one line on stderr; nothing in the run directory is written before the inputs are known
to be good. A non-finite loss or a failed checkpoint save ends with status 1, keeping the last good checkpoint;
SIGTERM or SIGINT with 128 + the signal's number (143, 130) once the step in flight is saved.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import jax

from zoo.fields import field_docs, field_names
from zoo.presets import list_presets
from zoo.train.checkpoint import CheckpointFailed
from zoo.train.config import DEFAULT_PRESET, SECTIONS, Config, UserError, resolve
from zoo.train.init import resolve_from_weights
from zoo.train.loop import TrainingInterrupted, TrainingStopped, train

USAGE = (
    "usage: python train.py [--preset NAME] [section.field=value ...] [--compile-only TOPOLOGY] [--list-presets] [-h]"
)


def help_text(config: Config) -> str:
    lines = [
        USAGE,
        "",
        "Train a zoo model on a corpus (default: llama-tiny on the embedded corpus), sharded over a device",
        "mesh, checkpointed and resumable: rerun with the same run.dir to continue.",
        "",
        "options:",
        f"  --preset NAME      model and training recipe (default {DEFAULT_PRESET}; --list-presets); with",
        "                     init.hf or init.run and no --preset: the checkpoint's model, and its family's",
        "                     recipe (init.hf) or its run's (init.run)",
        "  --compile-only TOPOLOGY",
        "                     compile the step for a TPU slice (e.g. v5p:4x4x4; needs libtpu) and print",
        "                     per-chip memory against HBM and the roofline step time; train nothing",
        "  -h, --help         this text; values shown are the chosen preset's",
        "",
        "overrides (section.field=value; defaults shown for the preset):",
    ]
    notes = {"model": " (vocab_size follows the tokenizer unless set)", "train": " (the preset's training recipe)"}
    values = config.to_dict()
    for section, cls in SECTIONS.items():
        lines.append(f"\n{section}{notes.get(section, '')}:")
        docs = field_docs(cls)
        for name in field_names(cls):
            value = values[section][name]
            shown = (
                "null"
                if value is None
                else str(value).lower()
                if isinstance(value, bool)
                else ",".join(value)
                if isinstance(value, list)
                else repr(value)
                if isinstance(value, str) and value != value.strip()
                else value
            )
            lines.append(f"  {section}.{name}={shown}")
            lines += textwrap.wrap(docs.get(name, ""), 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is a one-line UserError rather than usage text and exit."""

    def error(self, message):
        raise UserError(f"{message}. {USAGE}")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="train.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--list-presets", action="store_true")
    parser.add_argument("--compile-only", metavar="TOPOLOGY", default=None)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("overrides", nargs="*")
    return parser.parse_args(argv)


def parse_args(argv: list[str]) -> tuple[Config | None, str | None]:
    """(config, None) to train, or (None, text) to print and exit 0 (--help, --list-presets)."""
    args = _arguments(argv)
    if args.list_presets:
        return None, "\n".join(list_presets())
    config = resolve(args.preset, args.overrides) if args.preset is not None else resolve_from_weights(args.overrides)
    if args.help:
        return None, help_text(config)
    return config, None


def _export(config: Config, export_run: Callable | None) -> None:
    """run.export: the finished run as a Hugging Face checkpoint (zoo.export, handed in by train.py). In a
    multi-process job only process 0 exports: the run is complete on disk, and one writer is enough."""
    if config.run.export is None or jax.process_index() != 0:
        return
    if export_run is None:
        raise UserError("run.export: this entry point cannot export; use train.py or python -m zoo.export")
    out = config.run_dir / "hf" if config.run.export.strip().lower() == "true" else Path(config.run.export)
    try:
        print(
            f"exported {export_run(config.run_dir, out)}: load it with transformers' "
            "AutoModelFor*.from_pretrained and AutoTokenizer",
            flush=True,
        )
    except ValueError as e:  # a model no HF architecture expresses
        raise UserError(f"run.export: {e}") from None


def _prog() -> str:
    """The command's name in its messages: zoo-train when run as the console script, else train.py."""
    return "zoo-train" if Path(sys.argv[0]).name == "zoo-train" else "train.py"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None, export_run: Callable | None = None) -> int:
    """`export_run(run_dir, out_dir)` (zoo.export's, from train.py) serves run.export: the trainer sits
    below the applications and cannot import them."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        config, text = parse_args(argv)
        if text is not None or config is None:
            print(text)
            return 0
        topology = _arguments(argv).compile_only
        if topology is not None:
            if not os.environ.get("JAX_PLATFORMS"):  # compile on this host's CPU; never init libtpu's TPU client
                jax.config.update("jax_platforms", "cpu")
            from zoo.train.compile_only import main as compile_only

            return compile_only(config, topology)
        if config.run.export is not None and export_run is None:
            _export(config, None)  # refuse before training
        if config.run.distributed or os.environ.get("ZOO_DISTRIBUTED") == "1":
            jax.distributed.initialize()  # coordinator, process count and id from the environment
        try:
            train(config)
        except (TrainingStopped, CheckpointFailed) as e:
            print(f"{_prog()}: stopped: {_one_line(e)}", file=sys.stderr)
            return 1
        except TrainingInterrupted as e:
            print(f"{_prog()}: {_one_line(e)}", file=sys.stderr)
            return e.exit_status
        _export(config, export_run)
    except UserError as e:
        print(f"{_prog()}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{_prog()}: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0
