"""The training loop: corpus -> tokenizer -> objective -> sharded train state -> jitted steps -> checkpoints.

One `train(config)` call runs (or resumes) a run::

    config = zoo.train.cli.resolve("llama-tiny", ["run.steps=100", "mesh.fsdp=2"])
    result = train(config)          # result.losses: the loss of every step this call ran

Order of work, chosen so that bad input fails before anything in the run directory is written:
mesh -> existing checkpoint (read only) -> corpus and tokenizer -> model/checkpoint compatibility -> data
stream (and its saved position) -> write config.json and tokenizer/ -> init or restore the state -> loop.

SPMD: params are initialised directly into their shardings (a jitted init with out_shardings from the
logical-axis rules of zoo/sharding.py), batches are split over data x fsdp, and the model's activation
constraints are live because the step is traced inside `use_mesh(mesh)`.

Determinism, which makes a resumed run repeat the uninterrupted one exactly: the data order is a function
of (seed, epoch) and the stream position is checkpointed; dropout keys are fold_in(key(seed), step); span
corruption uses numpy default_rng((seed, step)).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from zoo.config import ModelConfig
from zoo.generate import generate
from zoo.model import abstract_params, build, count_params, dummy_inputs, path_names
from zoo.sharding import batch_sharding, data_parallelism, make_mesh, param_shardings, use_mesh
from zoo.train import data as data_lib
from zoo.train import metrics as metrics_lib
from zoo.train.checkpoint import Checkpoints, abstract_like, model_mismatch
from zoo.train.cli import Config, UserError
from zoo.train.objectives import (causal_lm_loss, encoder_decoder_loss, shift_right, span_corrupt,
                                  span_corruption_lengths)
from zoo.train.optim import make_optimizer
from zoo.train.recipe import TrainConfig
from zoo.train.tokenizer import load_tokenizer, make_tokenizer, model_vocab_size

NOISE_DENSITY, MEAN_SPAN_LENGTH = 0.15, 3.0  # T5 (Raffel et al. 2020 §3.1.4)
MIN_SENTINELS = 100  # T5's vocabulary reserves 100


class TrainingStopped(Exception):
    """The run stopped early (a non-finite loss); the last good checkpoint is kept."""


# --- objectives ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CausalLM:
    """Next-token prediction on packed rows of seq_len + 1 tokens (decoder-only models)."""

    seq_len: int
    label_smoothing: float = 0.0
    z_loss: float = 0.0

    @property
    def row_length(self) -> int:
        return self.seq_len + 1

    @property
    def stride(self) -> int:
        return self.seq_len  # consecutive rows share one token: every token is a target once

    decoder_len = None

    def make_batch(self, rows: np.ndarray, step: int, split: int = 0) -> dict[str, np.ndarray]:
        return {"inputs": rows[:, :-1], "targets": rows[:, 1:]}

    def loss(self, model, params, batch, rngs):
        logits = model.apply({"params": params}, batch["inputs"], rngs=rngs)
        return causal_lm_loss(logits, batch["targets"], label_smoothing=self.label_smoothing, z_loss=self.z_loss)


@dataclasses.dataclass(frozen=True)
class SpanCorruption:
    """T5 span corruption: rows of tokens_length raw tokens -> encoder inputs of seq_len tokens with noise
    spans replaced by sentinels, decoder targets listing the spans (zoo/train/objectives.py)."""

    seq_len: int
    sentinel_ids: tuple[int, ...]
    eos_id: int
    pad_id: int
    seed: int
    label_smoothing: float = 0.0
    z_loss: float = 0.0

    @property
    def lengths(self) -> tuple[int, int]:
        return span_corruption_lengths(self.seq_len, NOISE_DENSITY, MEAN_SPAN_LENGTH)

    @property
    def row_length(self) -> int:
        return self.lengths[0]

    @property
    def stride(self) -> int:
        return self.lengths[0]

    @property
    def decoder_len(self) -> int:
        return self.lengths[1]

    def make_batch(self, rows: np.ndarray, step: int, split: int = 0) -> dict[str, np.ndarray]:
        """Corrupt with default_rng((seed, split, step)): a resumed run corrupts step s exactly as before."""
        rng = np.random.default_rng((self.seed, split, step))
        inputs, targets = span_corrupt(rows, rng, sentinel_ids=self.sentinel_ids, eos_id=self.eos_id,
                                       pad_id=self.pad_id, noise_density=NOISE_DENSITY,
                                       mean_span_length=MEAN_SPAN_LENGTH, inputs_length=self.seq_len)
        return {"encoder_inputs": inputs, "encoder_mask": inputs != self.pad_id,
                "decoder_inputs": shift_right(targets, self.pad_id), "targets": targets}

    def loss(self, model, params, batch, rngs):
        logits = model.apply({"params": params}, batch["encoder_inputs"], batch["decoder_inputs"],
                             batch["encoder_mask"], rngs=rngs)
        return encoder_decoder_loss(logits, batch["targets"], self.pad_id, self.label_smoothing, self.z_loss)


def sentinels_needed(seq_len: int) -> int:
    """Sentinels the tokenizer must hold for span corruption of seq_len-token inputs: at least T5's 100, and
    at least one per span (a span puts a sentinel and >= 1 token in the targets, so spans <= targets / 2)."""
    _, targets_length = span_corruption_lengths(seq_len, NOISE_DENSITY, MEAN_SPAN_LENGTH)
    return max(MIN_SENTINELS, targets_length // 2)


def make_objective(cfg: ModelConfig, tc: TrainConfig, tokenizer, seed: int):
    if cfg.is_encoder_decoder:
        sentinels = tuple(tokenizer.sentinel_ids(sentinels_needed(tc.seq_len)))
        return SpanCorruption(tc.seq_len, sentinels, tokenizer.eos_id, tokenizer.pad_id, seed,
                              tc.label_smoothing, cfg.z_loss_multiplier)
    return CausalLM(tc.seq_len, tc.label_smoothing, cfg.z_loss_multiplier)


# --- sharded state and compiled programs ---------------------------------------------------------------------


def opt_state_shardings(abstract_opt_state, params_shardings, params_shapes, mesh):
    """A sharding for every optimizer-state leaf: a leaf shaped like the param whose path ends its own path
    (Adam's mu and nu, ...) takes that param's sharding; anything else (counts, Adafactor's factored row and
    column statistics) is small and replicated."""
    by_path = {}
    for (path, sharding), shape in zip(jax.tree_util.tree_flatten_with_path(params_shardings)[0],
                                       jax.tree.leaves(params_shapes)):
        by_path[path_names(path)] = (sharding, shape.shape)
    replicated = NamedSharding(mesh, P())

    def pick(path, leaf):
        names = path_names(path)
        for start in range(len(names)):
            hit = by_path.get(names[start:])
            if hit is not None and hit[1] == leaf.shape:
                return hit[0]
        return replicated

    return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


@dataclasses.dataclass
class Programs:
    """Everything compiled for one (model, recipe, objective, mesh): shared by every train() call in a
    process with the same key, so tests and restarts in one process compile once."""

    model: nn.Module
    tx: optax.GradientTransformation
    schedule: Callable
    state_shardings: Any
    batch_sharding: NamedSharding
    abstract_state: Any
    init: Callable
    step: Callable
    evaluate: Callable
    compiled: dict = dataclasses.field(default_factory=dict)

    def compiled_step(self, state, batch):
        """The AOT-compiled step (compile time measured apart from step time)."""
        if "step" not in self.compiled:
            self.compiled["step"] = self.step.lower(state, batch).compile()
        return self.compiled["step"]


@functools.lru_cache(maxsize=32)
def programs(cfg: ModelConfig, tc: TrainConfig, objective, mesh) -> Programs:
    model = build(cfg)
    boxed = abstract_params(cfg)
    # Gradient accumulation happens inside the step (a scan over micro-batches): one optimizer update per step.
    tx, schedule = make_optimizer(tc, boxed, cfg.d_model)
    p_shardings = param_shardings(boxed, mesh)
    replicated = NamedSharding(mesh, P())
    uses_dropout = max(cfg.embedding_dropout, cfg.attention_dropout, cfg.residual_dropout) > 0
    accum = tc.grad_accum_steps

    def init(key):
        params = nn.meta.unbox(model.init(key, *dummy_inputs(cfg))["params"])
        return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = {"params": p_shardings,
                 "opt_state": opt_state_shardings(abstract["opt_state"], p_shardings, abstract["params"], mesh),
                 "step": replicated, "rng": replicated}

    def init_state(seed):
        params_key, dropout_key = jax.random.split(jax.random.key(seed))
        return {**init(params_key), "rng": jax.random.key_data(dropout_key)}

    abstract_state = jax.eval_shape(init_state, 0)

    def grads_and_metrics(params, batch, key):
        rngs = {"dropout": key} if uses_dropout else None
        loss_fn = lambda p: objective.loss(model, p, batch, rngs)  # noqa: E731
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, metrics

    def step(state, batch):
        params, n = state["params"], state["step"]
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), n)
        if accum == 1:
            grads, metrics = grads_and_metrics(params, batch, key)
        else:
            # Micro-batch i = rows i, i + accum, ...: the split keeps each micro-batch spread over the devices.
            micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1),
                                 batch)

            def body(total, xs):
                i, mb = xs
                g, m = grads_and_metrics(params, mb, jax.random.fold_in(key, i))
                return jax.tree.map(jnp.add, total, (g, m)), None

            zeros = jax.eval_shape(grads_and_metrics, params, jax.tree.map(lambda x: x[0], micro), key)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
            (grads, metrics), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
            tokens = metrics["tokens"]
            grads, metrics = jax.tree.map(lambda x: x / accum, (grads, metrics))
            metrics["tokens"] = tokens
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        params = optax.apply_updates(params, updates)
        # param_norm is of the updated params: a finite loss can still produce an overflowing update, and the
        # loop must not checkpoint that state.
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads), "lr": schedule(n),
                   "param_norm": optax.tree.norm(params)}
        return {"params": params, "opt_state": opt_state, "step": n + 1, "rng": state["rng"]}, metrics

    def evaluate(params, batch):
        return objective.loss(model, params, batch, None)[1]

    b_sharding = batch_sharding(mesh)
    return Programs(
        model=model, tx=tx, schedule=schedule, state_shardings=shardings, batch_sharding=b_sharding,
        abstract_state=abstract_like(abstract_state, shardings),
        init=jax.jit(init_state, static_argnums=0, out_shardings=shardings),
        step=jax.jit(step, in_shardings=(shardings, b_sharding), out_shardings=(shardings, replicated),
                     donate_argnums=0),
        evaluate=jax.jit(evaluate, in_shardings=(p_shardings, b_sharding), out_shardings=replicated))


def device_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Host arrays (the global batch, identical on every host) -> global arrays split over data x fsdp."""
    return {k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx]) for k, v in batch.items()}


# --- data ------------------------------------------------------------------------------------------------------


def load_documents(data) -> data_lib.Corpus:
    """The corpus of a DataConfig, capped at data.max_documents."""
    try:
        if data.max_documents is None:
            return data_lib.load_corpus(data.path, text_field=data.text_field,
                                        validation_percent=data.validation_percent)
        docs = (data_lib.stdlib_documents() if data.path is None
                else data_lib.read_documents(data.path, data.text_field))[:data.max_documents]
        if not docs:
            raise ValueError(f"no documents in {data.path}")
        return data_lib.split_documents(docs, data.validation_percent)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"data.path: {e}") from None


def get_tokenizer(config: Config, corpus: data_lib.Corpus, saved: dict | None):
    """A resumed run reuses the tokenizer saved in its directory (a trained BPE is not retrained)."""
    data = config.data
    num_sentinels = sentinels_needed(config.train.seq_len) if config.model.is_encoder_decoder else 0
    saved_dir = config.run_dir / "tokenizer"
    if saved is not None and saved_dir.exists():
        before = saved["config"]["data"]
        spec = lambda d: (d["tokenizer"], d["bpe_vocab_size"] if d["tokenizer"] == "bpe" else None)  # noqa: E731
        if spec(before) != spec(dataclasses.asdict(data)):
            raise UserError(f"{config.run_dir} was trained with data.tokenizer={before['tokenizer']} "
                            f"(bpe_vocab_size {before['bpe_vocab_size']}), not {data.tokenizer} "
                            f"(bpe_vocab_size {data.bpe_vocab_size}); use another run.dir")
        return load_tokenizer(saved_dir)
    try:
        return make_tokenizer(data.tokenizer, train_texts=corpus.train, vocab_size=data.bpe_vocab_size,
                              num_sentinels=num_sentinels)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"data.tokenizer: {e}") from None


def fit_model(config: Config, tokenizer) -> ModelConfig:
    """model.vocab_size follows the tokenizer (rounded up to 128) unless set explicitly; lengths must fit."""
    cfg, tc = config.model, config.train
    if "model.vocab_size" in config.explicit:
        if cfg.vocab_size < tokenizer.vocab_size:
            raise UserError(f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer's "
                            f"{tokenizer.vocab_size} tokens")
    else:
        cfg = cfg.replace(vocab_size=model_vocab_size(tokenizer, 128))
    if tc.seq_len > cfg.max_seq_len:
        raise UserError(f"train.seq_len={tc.seq_len} exceeds model.max_seq_len={cfg.max_seq_len}")
    return cfg


# --- the loop -------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    start_step: int
    step: int
    history: list[dict]
    """Metrics of every step this call ran (dicts with step, loss, nll, lr, grad_norm, ...)."""
    evals: list[dict]
    unigram_entropy: float
    sample: str | None = None
    state: Any = None
    """The final train state {"params", "opt_state", "step", "rng"} (sharded arrays)."""

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]


class _Console:
    """Progress bar on a terminal (tqdm), plain log lines otherwise. Only process 0 speaks."""

    def __init__(self, enabled: bool, total: int, initial: int, bar: bool, echo: Callable | None):
        self.enabled, self.echo = enabled, echo
        self.bar = None
        if enabled and bar and echo is None and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        if self.echo is not None:
            self.echo(message)
        elif self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def train(config: Config, *, devices=None, echo: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume) the run `config` describes; see the module docstring. Raises UserError for bad
    input (before writing anything) and TrainingStopped on a non-finite loss."""
    is_main = jax.process_index() == 0
    tc, run, run_dir = config.train, config.run, config.run_dir
    console = _Console(is_main, 0, 0, False, echo)

    # 1. Mesh and batch layout.
    try:
        mesh = make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices=devices)
    except ValueError as e:
        raise UserError(f"invalid mesh: {e}") from None
    ways = data_parallelism(mesh)
    if tc.micro_batch_size % ways:
        raise UserError(f"invalid mesh: batch of {tc.micro_batch_size} sequences per micro-step is not divisible "
                        f"by data x fsdp = {mesh.shape['data']} x {mesh.shape['fsdp']} = {ways}")

    # 2. What the run directory already holds (read only).
    latest = Checkpoints(run_dir, read_only=True).latest_step()
    saved = Checkpoints(run_dir, read_only=True).meta(latest) if latest is not None else None

    # 3. Corpus, tokenizer, model, objective.
    corpus = load_documents(config.data)
    tokenizer = get_tokenizer(config, corpus, saved)
    cfg = fit_model(config, tokenizer)
    if saved is not None:
        mismatch = model_mismatch(saved["model"], cfg)
        if mismatch:
            raise UserError(f"{run_dir} holds a checkpoint (step {latest}) of a different model ({mismatch}); "
                            "refusing to touch it: choose another run.dir or the same model config")
    objective = make_objective(cfg, tc, tokenizer, run.seed)
    train_tokens = data_lib.tokenize_documents(tokenizer, corpus.train)
    rows = data_lib.pack(train_tokens, objective.row_length, objective.stride)
    try:
        stream = data_lib.TrainStream(rows, tc.batch_size, run.seed)
        if saved is not None:
            stream.restore(saved["data_state"])
    except ValueError as e:
        raise UserError(str(e)) from None
    val_rows = data_lib.pack(data_lib.tokenize_documents(tokenizer, corpus.validation), objective.row_length,
                             objective.stride)
    # Evaluate in micro-batches; a small validation split gets smaller batches (a multiple of data x fsdp).
    eval_batch = min(tc.micro_batch_size, len(val_rows) // ways * ways)
    val_batches = [] if run.eval_interval < 0 or eval_batch == 0 else data_lib.validation_batches(
        val_rows, eval_batch, run.eval_batches)
    entropy = data_lib.unigram_entropy(train_tokens)

    # 4. Inputs are good: write the run directory.
    resolved = config.replace(model=cfg)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(resolved.to_dict(), indent=2) + "\n")
        if not (run_dir / "tokenizer").exists():
            tokenizer.save(run_dir / "tokenizer")
    checkpoints = Checkpoints(run_dir, keep=run.keep, async_save=run.async_checkpoint)
    writer = None
    end = config.steps
    history, evals = [], []
    stats = corpus.stats()
    console.say(f"run {run_dir}: {config.preset}, {cfg.architecture}, {count_params(cfg):,} params, "
                f"vocab {cfg.vocab_size} ({config.data.tokenizer}), mesh {dict(mesh.shape)} over {mesh.devices.size} "
                f"{jax.devices()[0].platform} devices")
    console.say(f"data: {stats['train_documents']:,} train / {stats['validation_documents']:,} validation documents, "
                f"{len(train_tokens):,} train tokens, unigram entropy {entropy:.3f} nats/token; "
                f"{tc.batch_size} x {tc.seq_len} tokens per step")

    prog = programs(cfg, tc, objective, mesh)
    peak, peak_note = ((run.peak_flops, "run.peak_flops") if run.peak_flops is not None
                       else metrics_lib.default_peak_flops(mesh.devices.flat[0]))
    job_peak = metrics_lib.job_peak_flops(peak)
    flops = metrics_lib.flops_per_step(cfg, tc.batch_size, tc.seq_len, objective.decoder_len)
    if run.eval_interval >= 0 and not val_batches:
        console.say(f"no evaluation: the validation split has {len(val_rows)} sequences of {objective.row_length} "
                    f"tokens, fewer than data x fsdp = {ways}")
    console.say(f"MFU: {flops / tc.batch_size / tc.seq_len / 1e6:.1f} MFLOPs/token (6N + attention, fwd+bwd) "
                f"over a peak of {job_peak:.3g} FLOP/s ({peak_note})")

    try:
        # Params land in their shardings straight away: init is jitted with out_shardings, and restore reads
        # each array onto its target sharding (whatever mesh wrote the checkpoint).
        if latest is not None:
            state, _ = checkpoints.restore(latest, prog.abstract_state)
            start = int(jax.device_get(state["step"]))
            console.say(f"resumed from checkpoint step {start} (data epoch {stream.epoch}, batch {stream.step})")
        else:
            state, start = prog.init(run.seed), 0
        writer = metrics_lib.MetricWriter(run_dir, start_step=start)
        with use_mesh(mesh):
            if start >= end:
                console.say(f"already at step {start} >= run.steps={end}; nothing to train")
            else:
                state = _loop(config, cfg, prog, objective, state, stream, val_batches, checkpoints, writer,
                              console, start, end, flops, job_peak, history, evals, latest)
                if run.eval_interval >= 0 and val_batches and (not evals or evals[-1]["step"] != end):
                    evals.append(_evaluate(prog, objective, state, val_batches, end, writer, console.say))
        checkpoints.wait()
        if history:
            tail = history[-min(10, len(history)):]
            seconds = sum(h["step_time_s"] for h in history)
            val = f", val loss {evals[-1]['val_loss']:.4f}" if evals and evals[-1]["step"] == end else ""
            console.say(f"done: step {end}, train loss {np.mean([h['loss'] for h in tail]):.4f} (mean of the last "
                        f"{len(tail)} steps){val}; {len(history) * tc.batch_size * tc.seq_len / seconds:,.0f} "
                        f"tokens/s, MFU {np.mean([h['mfu'] for h in history]):.2%}; checkpoints in "
                        f"{checkpoints.directory}")
        sample = None
        if run.sample_tokens > 0 and jax.process_count() == 1:
            sample = generate_text(prog.model, state["params"], tokenizer, run.sample_prompt, run.sample_tokens,
                                   temperature=run.sample_temperature, seed=run.seed)
            console.say(f"sample ({run.sample_tokens} tokens, temperature {run.sample_temperature}):\n"
                        f"{run.sample_prompt}{sample}")
    finally:
        checkpoints.close()
        if writer is not None:
            writer.close()
    return TrainResult(run_dir, start, max(start, end), history, evals, entropy, sample, state)


def _evaluate(prog, objective, state, val_batches, step, writer, say) -> dict:
    totals = []
    for i, rows in enumerate(val_batches):
        batch = device_batch(objective.make_batch(rows, i, split=1), prog.batch_sharding)
        totals.append(jax.device_get(prog.evaluate(state["params"], batch)))
    nll = float(np.mean([t["nll"] for t in totals]))
    acc = float(np.mean([t["accuracy"] for t in totals]))
    result = {"step": step, "val_loss": nll, "val_ppl": math.exp(min(nll, 700.0)), "val_accuracy": acc}
    writer.write(step, {k: v for k, v in result.items() if k != "step"})
    say(f"step {step}: val loss {nll:.4f}, ppl {result['val_ppl']:.2f}, accuracy {acc:.3f} "
                f"({len(val_batches)} batches)")
    return result


def _loop(config, cfg, prog, objective, state, stream, val_batches, checkpoints, writer, console, start, end,
          flops, job_peak, history, evals, last_saved):
    tc, run = config.train, config.run
    tokens_per_step = tc.batch_size * tc.seq_len

    def next_batch(step):
        return device_batch(objective.make_batch(next(stream), step), prog.batch_sharding)

    batch = next_batch(start)
    t0 = time.perf_counter()
    step_fn = prog.compiled_step(state, batch)
    console.say(f"compiled the train step in {time.perf_counter() - t0:.1f}s; training steps {start} -> {end}")
    bar = _Console(console.enabled, end, start, run.progress, console.echo)
    say = bar.say if bar.bar is not None else console.say
    data_states = {}  # stream position after each in-flight step (checkpointed with that step's state)
    pending = None
    last_time = time.perf_counter()
    run_start = last_time

    def flush(pending):
        """Fetch a finished step's metrics (one step behind the dispatch, so the host never idles the
        devices), check them, log them."""
        nonlocal last_time
        done, metrics = pending
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        dt, last_time = now - last_time, now
        if not all(math.isfinite(m[k]) for k in ("loss", "grad_norm", "param_norm")):
            kept = (f"the last good checkpoint is step {last_saved}" if last_saved is not None
                    else "no checkpoint was saved")
            raise TrainingStopped(f"non-finite loss at step {done} (loss {m['loss']}, gradient norm "
                                  f"{m['grad_norm']}, parameter norm {m['param_norm']}); {kept} in {config.run_dir}")
        row = {"loss": m["loss"], "nll": m["nll"], "accuracy": m["accuracy"], "z_loss": m["z_loss"],
               "lr": m["lr"], "grad_norm": m["grad_norm"], "param_norm": m["param_norm"], "step_time_s": dt,
               "tokens_per_s": tokens_per_step / dt, "mfu": flops / dt / job_peak}
        writer.write(done, row)
        history.append({"step": done, **row})
        eta = (end - done) * (now - run_start) / max(done - start, 1)
        if bar.bar is not None:
            bar.bar.update(done - bar.bar.n)
            bar.bar.set_postfix_str(f"loss={m['loss']:.3f} tok/s={row['tokens_per_s']:,.0f} mfu={row['mfu']:.2%}",
                                    refresh=True)
        elif done % run.log_interval == 0 or done == end or done == start + 1:
            say(f"step {done}/{end}  loss {m['loss']:.4f}  lr {m['lr']:.2e}  grad norm {m['grad_norm']:.3f}  "
                f"{row['tokens_per_s']:,.0f} tok/s  MFU {row['mfu']:.2%}  {dt * 1e3:.0f} ms/step  "
                f"ETA {_fmt_time(eta)}")

    try:
        for step in range(start, end):
            state, metrics = step_fn(state, batch)
            done = step + 1
            data_states[done] = stream.state
            if pending is not None:
                flush(pending)
            pending = (done, metrics)
            if done < end:
                batch = next_batch(done)  # host work overlaps the step in flight
            do_eval = (run.eval_interval > 0 and done % run.eval_interval == 0 and val_batches)
            do_save = done % run.checkpoint_interval == 0 or done == end
            if do_eval or do_save:
                flush(pending)  # never save or evaluate a state whose loss was not checked
                pending = None
                if do_eval:
                    evals.append(_evaluate(prog, objective, state, val_batches, done, writer, say))
                if do_save:
                    meta = {"step": done, "data_state": data_states[done], "model": cfg.to_dict(),
                            "config": config.replace(model=cfg).to_dict()}
                    checkpoints.save(done, state, meta)
                    last_saved = done
            data_states.pop(done - 1, None)
        if pending is not None:
            flush(pending)
    finally:
        bar.close()
    return state


# --- sampling ----------------------------------------------------------------------------------------------------


def generate_text(model, params, tokenizer, prompt: str, max_new_tokens: int, *, temperature: float = 0.8,
                  top_k: int | None = 40, top_p: float | None = 0.95, seed: int = 0) -> str:
    """Decoded continuation of `prompt` (decoder-only), or the decoder's output for the encoder input
    `prompt + <extra_id_0>` (encoder-decoder: the model fills in the masked span)."""
    cfg = model.cfg
    ids = tokenizer.encode(prompt) or [tokenizer.eos_id]
    top_k = None if top_k is None else min(top_k, cfg.vocab_size)
    kwargs = dict(temperature=temperature, top_k=top_k, top_p=top_p, rng=jax.random.key(seed),
                  eos_id=tokenizer.eos_id)
    if cfg.is_encoder_decoder:
        encoder = np.asarray([ids[:cfg.max_seq_len - 2] + tokenizer.sentinel_ids(1) + [tokenizer.eos_id]],
                             np.int32)
        n = min(max_new_tokens, cfg.max_seq_len - 1)
        out = generate(model, params, np.asarray([[tokenizer.pad_id]], np.int32), n, encoder_tokens=encoder,
                       **kwargs)
        new = np.asarray(out)[0, 1:]
        if len(new) and new[0] == tokenizer.sentinel_ids(1)[0]:
            new = new[1:]  # the targets open with the sentinel of the span they fill
    else:
        ids = ids[-(cfg.max_seq_len - 1):]
        n = min(max_new_tokens, cfg.max_seq_len - len(ids))
        out = generate(model, params, np.asarray([ids], np.int32), n, **kwargs)
        new = np.asarray(out)[0, len(ids):]
    if tokenizer.eos_id in new.tolist():
        new = new[:new.tolist().index(tokenizer.eos_id)]
    return tokenizer.decode(new)


def load_for_sampling(run_dir, step: int | None = None):
    """(model, params, tokenizer) from a run directory's config, tokenizer and checkpoint (default: latest),
    restored onto one device."""
    from zoo.train.cli import load_run_config

    config = load_run_config(run_dir)
    checkpoints = Checkpoints(run_dir, read_only=True)
    steps = checkpoints.all_steps()
    if not steps:
        raise UserError(f"no checkpoint in {run_dir}")
    step = max(steps) if step is None else step
    if step not in steps:
        raise UserError(f"no checkpoint of step {step} in {run_dir}; saved: {', '.join(map(str, steps))}")
    tokenizer = load_tokenizer(Path(run_dir) / "tokenizer")
    cfg = config.model
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    prog = programs(cfg, config.train, make_objective(cfg, config.train, tokenizer, config.run.seed), mesh)
    state, _ = checkpoints.restore(step, prog.abstract_state)
    checkpoints.close()
    return prog.model, state["params"], tokenizer
