"""Prepare a run: everything train() needs, built and checked before anything in the run directory is written.

Order, so that bad input fails first and cheaply: mesh -> the run directory's latest checkpoint (read only)
-> corpus and tokenizer -> model fitted to the tokenizer, checked against the checkpoint -> objective and data
stream (at the checkpoint's position) -> validation batches -> compiled programs and the FLOP/s accounting.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from zoo import hf
from zoo.config import ModelConfig
from zoo.flops import flops_per_step
from zoo.model import count_params
from zoo.sharding import batch_sharding, check_batch_size, data_parallelism, make_mesh
from zoo.train import data as data_lib
from zoo.train import data_setup, run_files
from zoo.train import init as init_lib
from zoo.train import memory as memory_lib
from zoo.train import metrics as metrics_lib
from zoo.train.checkpoint import Checkpoints, model_mismatch
from zoo.train.config import Config, UserError, check_expert_axis
from zoo.train.data_sources import CorpusError
from zoo.train.objectives import make_objective, sentinels_needed
from zoo.train.state import Programs, process_rows, programs
from zoo.train.tokenizer import load_tokenizer, make_tokenizer, model_vocab_size


@dataclasses.dataclass(frozen=True)
class Setup:
    """A prepared run. `config.model` is the model actually trained (vocab_size fitted to the tokenizer)."""

    config: Config
    mesh: Mesh
    tokenizer: Any
    objective: Any
    programs: Programs
    stream: data_lib.TrainStream
    """Training batches, positioned after the resumed checkpoint's last batch."""
    val_batches: list[np.ndarray]
    resume_step: int | None
    """The latest complete checkpoint in the run directory, or None for a new run."""
    initial_params: Any
    """A new run's starting parameters (init.hf / init.run, host arrays), or None: a fresh init."""
    unigram_entropy: float
    """Of the train tokens, nats/token: the loss a model that ignores context can reach."""
    flops_per_step: float
    job_peak_flops: float
    messages: tuple[str, ...]
    """What the run says about itself before training (model, data, MFU basis)."""
    corpus: list[str] = dataclasses.field(default_factory=list)
    """The training data's contents (data_setup.TrainingData.contents), saved with each checkpoint."""
    recipe_changes: dict = dataclasses.field(default_factory=dict)
    """A resumed run's recipe fields that differ from its checkpoint's (allowed by run.allow_recipe_change)."""


def get_tokenizer(config: Config, corpus: data_lib.TrainTexts, saved: dict | None):
    """A resumed run reuses the tokenizer saved in its directory (a trained BPE is not retrained)."""
    data = config.data
    num_sentinels = sentinels_needed(config.train.seq_len) if config.model.is_encoder_decoder else 0
    saved_dir = config.run_dir / "tokenizer"
    if saved is not None and saved_dir.exists():
        before = saved["config"]["data"]
        spec = lambda d: (d["tokenizer"], d["bpe_vocab_size"] if d["tokenizer"] == "bpe" else None)  # noqa: E731
        if spec(before) != spec(data.to_dict()):
            raise UserError(
                f"{config.run_dir} was trained with data.tokenizer={before['tokenizer']} "
                f"(bpe_vocab_size {before['bpe_vocab_size']}), not {data.tokenizer} "
                f"(bpe_vocab_size {data.bpe_vocab_size}); use another run.dir"
            )
        return load_tokenizer(saved_dir)
    try:
        return make_tokenizer(
            data.tokenizer, train_texts=corpus.train, vocab_size=data.bpe_vocab_size, num_sentinels=num_sentinels
        )
    except CorpusError as e:  # read while training a BPE tokenizer: the data's fault, not the tokenizer's
        raise UserError(f"{'data.sources' if data.sources else 'data.path'}: {e}") from None
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"data.tokenizer: {e}") from None


def fit_model(config: Config, tokenizer) -> ModelConfig:
    """model.vocab_size follows the tokenizer (rounded up to 128) unless set explicitly."""
    cfg = config.model
    if "model.vocab_size" not in config.explicit:
        return cfg.replace(vocab_size=model_vocab_size(tokenizer, 128))
    if cfg.vocab_size < tokenizer.vocab_size:
        raise UserError(
            f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size} tokens"
        )
    return cfg


def check_micro_batch(micro_batch_size: int, mesh) -> None:
    """UserError unless every device of `mesh` gets the same number of whole sequences per micro-step."""
    try:
        check_batch_size(micro_batch_size, mesh)
    except ValueError as e:
        raise UserError(
            f"invalid mesh for a micro-batch of {micro_batch_size} sequences (train.batch_size / "
            f"train.grad_accum_steps): {e}"
        ) from None


def build_mesh(config: Config, devices=None) -> Mesh:
    """The run's mesh over `devices` (default: all); UserError if it cannot be built, or if its expert axis
    (known only now when mesh.expert is -1) does not split model.num_experts into whole groups."""
    try:
        mesh = make_mesh(
            config.mesh.data, config.mesh.fsdp, config.mesh.tensor, expert=config.mesh.expert, devices=devices
        )
    except ValueError as e:
        raise UserError(f"invalid mesh: {e}") from None
    check_mesh_experts(config.model, mesh)
    return mesh


def check_mesh_experts(cfg: ModelConfig, mesh: Mesh) -> None:
    """UserError unless `mesh`'s expert axis splits cfg's experts into whole groups (config.py checks the size
    given; this checks the size built, which differs when mesh.expert is -1)."""
    try:
        check_expert_axis(cfg.num_experts, mesh.shape["expert"])
    except ValueError as e:
        raise UserError(f"{e} (mesh {dict(mesh.shape)})") from None


def prepare(config: Config, devices=None) -> Setup:
    """The Setup of `config` (see the module docstring); UserError for bad input, nothing written."""
    tc, run = config.train, config.run
    if run.wandb and importlib.util.find_spec("wandb") is None:
        raise UserError('run.wandb=true needs the wandb package: pip install -e ".[wandb]"')
    mesh = build_mesh(config, devices)
    check_micro_batch(tc.micro_batch_size, mesh)
    ways = data_parallelism(mesh)
    if run.export is not None:  # refused now rather than after training
        try:
            hf.family_of(config.model)
        except ValueError as e:
            raise UserError(f"run.export: {' '.join(str(e).split())}") from None

    run_files.check_available(config.run_dir)
    latest = Checkpoints(config.run_dir, read_only=True).latest_step()
    saved = Checkpoints(config.run_dir, read_only=True).meta(latest) if latest is not None else None

    try:
        corpus = data_setup.train_texts(config.data)  # lazy: read only to train a BPE tokenizer
    except FileNotFoundError as e:
        raise UserError(f"{'data.sources' if config.data.sources else 'data.path'}: {e}") from None
    start = None
    source = init_lib.source(config.init)  # ("init.hf" | "init.run", directory), or None for a fresh init
    if source is None:
        tokenizer = get_tokenizer(config, corpus, saved)
        cfg = fit_model(config, tokenizer)
    else:
        key = source[0]
        if "data.tokenizer" in config.explicit:
            raise UserError(f"data.tokenizer: the tokenizer is {key}'s; leave data.tokenizer unset")
        if saved is None:
            start = init_lib.load(config, mesh)
            tokenizer, cfg = start.tokenizer, start.cfg
        else:  # a run that started from weights resumes from its own checkpoint, with its saved tokenizer
            tokenizer = get_tokenizer(config, corpus, saved)
            cfg = init_lib.agreed_model(config, ModelConfig.from_dict(saved["model"]), key)
        if tokenizer.vocab_size > cfg.vocab_size:
            raise UserError(
                f"{key}: the tokenizer has {tokenizer.vocab_size} tokens, the model {cfg.vocab_size} embedding rows"
            )
    if saved is not None and (mismatch := model_mismatch(saved["model"], cfg)):
        raise UserError(
            f"{config.run_dir} holds a checkpoint (step {latest}) of a different model ({mismatch}); "
            "refusing to touch it: choose another run.dir or the same model config"
        )
    objective = make_objective(cfg, tc, tokenizer, run.seed)
    try:  # the token cache of every source (built on first use); this process reads its rows of each batch
        data = data_setup.open_training_data(
            config.data,
            tokenizer,
            objective.row_length,
            objective.stride,
            tc.batch_size,
            run.seed,
            index=process_rows(batch_sharding(mesh), tc.batch_size),
            val_limit=tc.micro_batch_size * run.eval_batches,
            progress=run.progress,
        )
    except (FileNotFoundError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{'data.sources' if config.data.sources else 'data.path'}: {e}") from None
    stream, val_rows = data.stream, data.val_rows
    changes = run_files.check_recipe(config, saved, latest, data.contents)  # after the inputs' own errors
    try:
        if saved is not None:
            stream.restore(saved["data_state"])
    except ValueError as e:
        raise UserError(str(e)) from None
    # Evaluate in micro-batches; a small validation split gets smaller batches (a multiple of data x fsdp x expert).
    eval_batch = min(tc.micro_batch_size, len(val_rows) // ways * ways)
    val_batches = (
        []
        if run.eval_interval < 0 or eval_batch == 0
        else data_lib.validation_batches(val_rows, eval_batch, run.eval_batches)
    )

    peak, peak_note = (
        (run.peak_flops, "run.peak_flops")
        if run.peak_flops is not None
        else metrics_lib.default_peak_flops(mesh.devices.flat[0])
    )
    job_peak = metrics_lib.job_peak_flops(peak)
    flops = flops_per_step(cfg, tc.batch_size, tc.seq_len, objective.decoder_len)
    entropy = data.unigram_entropy
    messages = [
        f"run {config.run_dir}: {config.preset}, {cfg.architecture}, {count_params(cfg):,} params, "
        f"vocab {cfg.vocab_size} ({config.data.tokenizer}), mesh {dict(mesh.shape)} over {mesh.devices.size} "
        f"{jax.devices()[0].platform} devices",
        f"{data.message}; {tc.batch_size} x {tc.seq_len} tokens per step",
    ]
    if run.eval_interval >= 0 and not val_batches:
        messages.append(
            f"no evaluation: the validation split has {len(val_rows)} sequences of "
            f"{objective.row_length} tokens, fewer than data x fsdp x expert = {ways}"
        )
    messages.append(
        f"MFU: {flops / tc.batch_size / tc.seq_len / 1e6:.1f} MFLOPs/token (6N + attention, "
        f"fwd+bwd) over a peak of {job_peak:.3g} FLOP/s ({peak_note})"
    )
    try:
        prog = programs(cfg, tc, objective, mesh)
    except ValueError as e:  # train.freeze naming no parameter
        raise UserError(str(e)) from None
    # Compile the step now, from abstract inputs, so a step that cannot fit is refused before any state exists.
    t0 = time.perf_counter()
    compiled = memory_lib.compile_step(prog, objective, tc.batch_size, mesh, np.int32)
    messages.append(f"compiled the train step in {time.perf_counter() - t0:.1f}s")
    messages.append(run_files.check_space(config.run_dir, prog.abstract_state))
    if run.memory_check:
        messages.append(memory_lib.check_fits(memory_lib.StepMemory.of(compiled), config.replace(model=cfg), mesh))
    if start is not None and source is not None:
        messages.append(f"starting from the parameters of {source[0]}={source[1]}")
    if config.origin:
        messages.append(config.origin)
    return Setup(
        config.replace(model=cfg),
        mesh,
        tokenizer,
        objective,
        prog,
        stream,
        val_batches,
        latest,
        None if start is None else start.params,
        entropy,
        flops,
        job_peak,
        tuple(messages),
        data.contents,
        changes,
    )
