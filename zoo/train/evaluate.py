"""Evaluate a model on text: the training loop's validation loss, and per-document loss and bits per byte.

    python evaluate.py --run runs/llama-tiny                       # the run's validation split
    python evaluate.py --hf out_dir --data docs.jsonl --json results.json

Two measures:
- `validation`: the training loop's own computation (packed rows, the first `eval_batches` batches, the same
  compiled program), so a run's checkpoint evaluates to the val_loss its log reports for that step.
- `documents` (decoder-only models): every document scored alone (its tokens then EOS, in windows of seq_len
  targets, each window starting fresh), summed per document: nats/token, perplexity, and bits per byte =
  nats / ln 2 / UTF-8 bytes, which compares models with different tokenizers.
Data: the run's validation split (an HF checkpoint: the embedded corpus's), or every document of --data.
Batches are split over all devices (a data-parallel mesh), as in training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from zoo import hf
from zoo.config import ModelConfig
from zoo.model import build
from zoo.recipe import TrainConfig
from zoo.sharding import batch_sharding, data_parallelism, make_mesh, use_mesh
from zoo.train import data as data_lib
from zoo.train import data_setup
from zoo.train.config import UserError
from zoo.train.objectives import make_objective, token_nll
from zoo.train.restore import load_run
from zoo.train.sections import DataConfig
from zoo.train.state import device_batch, programs
from zoo.train.tokenizer import load_tokenizer


def validation_loss(
    cfg,
    params,
    tokenizer,
    corpora,
    recipe: TrainConfig,
    eval_batches: int,
    seed: int = 0,
    mesh=None,
    split: str = "validation",
) -> dict:
    """The training loop's validation metrics on a split of the opened sources `corpora`
    (zoo.train.data_setup.open_sources): the same rows, batches and program (mean over batches of nll and
    accuracy)."""
    mesh = mesh or make_mesh()
    objective = make_objective(cfg, recipe, tokenizer, seed)
    rows = data_setup.validation_rows(
        corpora, objective.row_length, objective.stride, recipe.micro_batch_size * eval_batches, split
    )
    ways = data_parallelism(mesh)
    batch = min(recipe.micro_batch_size, len(rows) // ways * ways)
    batches = data_lib.validation_batches(rows, batch, eval_batches) if batch else []
    if not batches:
        raise UserError(f"validation: {len(rows)} sequences of {objective.row_length} tokens do not fill a batch")
    prog = programs(cfg, recipe, objective, mesh)
    params = jax.device_put(params, prog.state_shardings["params"])
    with use_mesh(mesh):
        totals = [
            jax.device_get(
                prog.evaluate(params, device_batch(objective.make_batch(r, i, split=1), prog.batch_sharding))
            )
            for i, r in enumerate(_progress(batches, "validation"))
        ]
    nll = float(np.mean([t["nll"] for t in totals]))
    return {
        "loss": nll,
        "perplexity": math.exp(min(nll, 700.0)),
        "accuracy": float(np.mean([t["accuracy"] for t in totals])),
        "batches": len(batches),
        "tokens": int(sum(t["tokens"] for t in totals)),
    }


def _progress(items, what: str):
    """A progress bar on a terminal (tqdm), the plain iterable otherwise."""
    return tqdm(items, desc=what, unit="batch", disable=not sys.stderr.isatty(), leave=False)


def document_losses(
    cfg, params, tokenizer, documents: list[np.ndarray], seq_len: int, batch_size: int, mesh=None
) -> dict:
    """Per-document summed NLL (nats), target tokens and UTF-8 bytes, and their totals (decoder-only).
    `documents`: each document's ids (zoo.train.data_setup.documents); its bytes are those of its decoded text."""
    mesh = mesh or make_mesh()
    ways = data_parallelism(mesh)
    batch_size = -(-batch_size // ways) * ways
    rows, owners = [], []
    for index, ids in enumerate(documents):
        ids = np.append(ids, tokenizer.eos_id).astype(np.int32)
        for start in range(0, len(ids) - 1, seq_len):  # windows of seq_len targets, each from a fresh context
            row = np.full(seq_len + 1, -1, np.int32)
            row[: min(seq_len + 1, len(ids) - start)] = ids[start : start + seq_len + 1]
            rows.append(row)
            owners.append(index)
    rows += [np.full(seq_len + 1, -1, np.int32)] * (-len(rows) % batch_size)
    model, sharding = build(cfg), batch_sharding(mesh)
    params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

    @jax.jit
    def score(params, tokens):
        inputs, targets = jnp.maximum(tokens[:, :-1], 0), tokens[:, 1:]
        nll = token_nll(model.apply({"params": params}, inputs), jnp.maximum(targets, 0))
        mask = targets >= 0
        return (nll * mask).sum(-1), mask.sum(-1)

    nll_sum, counts = np.zeros(len(documents)), np.zeros(len(documents), np.int64)
    with use_mesh(mesh):
        for i in _progress(range(0, len(owners), batch_size), "documents"):
            chunk = jax.device_put(np.stack(rows[i : i + batch_size]), sharding)
            sums, n = jax.device_get(score(params, chunk))
            for j, owner in enumerate(owners[i : i + batch_size]):
                nll_sum[owner] += sums[j]
                counts[owner] += n[j]
    sizes = [len(tokenizer.decode(ids.tolist()).encode("utf-8")) for ids in documents]
    per_doc = [
        {
            "document": i,
            "tokens": int(counts[i]),
            "bytes": sizes[i],
            "nll": float(nll_sum[i]),
            "bits_per_byte": float(nll_sum[i] / math.log(2) / max(sizes[i], 1)),
        }
        for i in range(len(documents))
    ]
    total, tokens, size = float(nll_sum.sum()), int(counts.sum()), sum(sizes)
    return {
        "loss": total / tokens,
        "perplexity": math.exp(min(total / tokens, 700.0)),
        "bits_per_byte": total / math.log(2) / size,
        "tokens": tokens,
        "bytes": size,
        "documents": len(documents),
        "per_document": per_doc,
    }


@dataclasses.dataclass(frozen=True)
class Loaded:
    cfg: ModelConfig
    params: object
    tokenizer: object
    recipe: TrainConfig
    data: DataConfig
    eval_batches: int
    seed: int


def load(run: str | None, hf_dir: str | None, step: int | None, seq_len: int | None, batch_size: int | None) -> Loaded:
    """The model, its tokenizer and the evaluation settings: a run's own (its recipe's seq_len and micro-batch,
    its data split, its eval_batches), or for an HF checkpoint the defaults; --seq-len/--batch-size override."""
    if run is not None:
        trained = load_run(run, step)
        config, cfg, params, tokenizer = trained.config, trained.config.model, trained.params, trained.tokenizer
        # The run's micro-batch is its evaluation batch.
        recipe = config.train.replace(batch_size=config.train.micro_batch_size, grad_accum_steps=1)
        data, eval_batches, seed = config.data, config.run.eval_batches, config.run.seed
    else:
        assert hf_dir is not None, "one of run and hf_dir"
        try:
            cfg, params = hf.load(hf_dir)
            tokenizer = load_tokenizer(hf_dir)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(f"--hf: {e}") from None
        recipe = TrainConfig(seq_len=min(cfg.max_seq_len, 1024), batch_size=8, warmup_steps=0)
        data, eval_batches, seed = DataConfig(), 8, 0
    changes = {k: v for k, v in {"seq_len": seq_len, "batch_size": batch_size}.items() if v is not None}
    try:
        recipe = recipe.replace(**changes, grad_accum_steps=1)
    except ValueError as e:
        raise UserError(str(e)) from None
    return Loaded(cfg, params, tokenizer, recipe, data, eval_batches, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a zoo run directory (its latest checkpoint, or --step)")
    source.add_argument("--hf", help="a Hugging Face checkpoint directory (config.json, safetensors, tokenizer.json)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of --run (default: the latest)")
    parser.add_argument(
        "--data",
        default=None,
        help="a text file, folder or .jsonl: evaluate all its documents (default: the validation split)",
    )
    parser.add_argument("--text-field", default="text", help="JSONL field holding the text (default %(default)s)")
    parser.add_argument("--max-documents", type=int, default=None, help="use only the first N documents")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per batch (default: the run's)")
    parser.add_argument("--json", default=None, help="write the results (with per-document stats) here")
    args = parser.parse_args(argv)
    try:
        loaded = load(args.run, args.hf, args.step, args.seq_len, args.batch_size)
        data, split = loaded.data, "validation"
        if args.data is not None:  # every document of --data: all of it in the train split
            data = DataConfig(
                path=args.data,
                text_field=args.text_field,
                validation_percent=0,
                max_documents=args.max_documents,
                cache_dir=data.cache_dir,
            )
            split = "train"
        elif args.max_documents is not None:
            data = dataclasses.replace(data, max_documents=args.max_documents)
        try:
            corpora = data_setup.open_sources(data, loaded.tokenizer, progress=sys.stderr.isatty())
        except (FileNotFoundError, ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{'--data' if args.data is not None else 'data'}: {e}") from None
        results = {}
        try:
            results["validation"] = validation_loss(
                loaded.cfg,
                loaded.params,
                loaded.tokenizer,
                corpora,
                loaded.recipe,
                loaded.eval_batches,
                loaded.seed,
                split=split,
            )
        except UserError as e:
            if loaded.cfg.is_encoder_decoder:  # the only measure there is
                raise
            results["validation"] = {"skipped": str(e)}
        if not loaded.cfg.is_encoder_decoder:
            docs = [d for _, _, c in corpora for d in data_setup.documents(getattr(c, split))]
            results["documents"] = document_losses(
                loaded.cfg, loaded.params, loaded.tokenizer, docs, loaded.recipe.seq_len, loaded.recipe.micro_batch_size
            )
    except UserError as e:
        print(f"evaluate.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    v = results["validation"]
    print(
        f"validation: skipped ({v['skipped']})"
        if "skipped" in v
        else f"validation ({v['batches']} batches, {v['tokens']:,} tokens): loss {v['loss']:.4f} nats/token, "
        f"perplexity {v['perplexity']:.2f}, accuracy {v['accuracy']:.3f}"
    )
    if "documents" in results:
        d = results["documents"]
        print(
            f"documents ({d['documents']}, {d['tokens']:,} tokens, {d['bytes']:,} bytes): loss {d['loss']:.4f} "
            f"nats/token, perplexity {d['perplexity']:.2f}, {d['bits_per_byte']:.4f} bits/byte"
        )
    if args.json is not None:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0
