"""load / save: a family's weight rules applied tensor by tensor between a checkpoint and a zoo param tree."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from zoo.config import ModelConfig
from zoo.hf.core import Family, Rule, Weights
from zoo.hf.families import config_from_hf, family_of, hf_family
from zoo.hf.safetensors_io import Checkpoint, Tensor, write_checkpoint
from zoo.layers.init import dtype_of
from zoo.model import abstract_params


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _get(tree: dict, path: str):
    for key in path.split("/"):
        if not isinstance(tree, dict) or key not in tree:
            raise ValueError(f"params have no {path!r}")
        tree = tree[key]
    return tree


def _path(keys) -> str:
    return "/".join(str(k.key) for k in keys)


@functools.lru_cache(maxsize=8)
def _model_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Param path ("a/b/c") -> shape for `cfg` (traced, never allocated; cached because load and save both ask)."""
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract_params(cfg)))[0]
    return {_path(k): tuple(v.shape) for k, v in flat}


def _check_shapes(cfg: ModelConfig, params: dict, what: str) -> None:
    """`params` must have exactly the tree and shapes the model builds for `cfg`."""
    want = _model_shapes(cfg)
    have = {_path(k): tuple(np.shape(v)) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    if want != have:
        diffs = sorted(
            f"{k}: {what} {have.get(k, 'missing')}, model {want.get(k, 'missing')}"
            for k in want.keys() | have.keys()
            if want.get(k) != have.get(k)
        )
        raise ValueError(f"{what} do not match the model for this config: " + "; ".join(diffs[:8]))


# ================================================================================================ load
class _Names:
    """HF tensor names as a checkpoint spells them: with or without the base-model prefix."""

    def __init__(self, ckpt: Checkpoint, prefix: str):
        self.ckpt, self.prefix = ckpt, prefix

    def has(self, name: str) -> bool:
        return name in self.ckpt or (name.startswith(self.prefix) and name[len(self.prefix) :] in self.ckpt)

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in self.ckpt and name.startswith(self.prefix) and name[len(self.prefix) :] in self.ckpt:
            name = name[len(self.prefix) :]
        return self.ckpt.get(name, shape)


def _decide_tying(cfg: ModelConfig, names: _Names, embed: str, head: str) -> ModelConfig:
    """The checkpoint decides tying, as in transformers 5: a stored head (`head`, lm_head.weight in most families)
    that differs from the embedding is its own matrix whatever the config says (T5 v1.1 under transformers 5
    writes tie_word_embeddings: true)."""
    if head not in names.ckpt:
        if not cfg.tie_word_embeddings:
            raise ValueError(f"HF config field tie_word_embeddings=false, but the checkpoint has no {head}")
        return cfg
    tied = cfg.tie_word_embeddings and np.array_equal(names.get(head), names.get(embed))
    return cfg.replace(tie_word_embeddings=bool(tied))


def _slots(cfg: ModelConfig, num_layers: int) -> list[tuple[str, int, str, list[int]]]:
    """Where each layer of a stack of `num_layers` lives: (group, j, its MLP kind, HF layer indices), one entry
    per block j of each group of cycles, the dense prefix's (`prefix_cycle`) then the rest's (`cycle`); cycle c
    of a group holds the group's c-th index."""
    k, prefix = cfg.cycle_length, cfg.dense_prefix_layers if cfg.is_moe else 0
    slots = []
    for group, first, layers, kinds in (
        ("prefix_cycle", 0, prefix, ("dense",) * k),
        ("cycle", prefix, num_layers - prefix, cfg.cycle_mlp_kinds()),
    ):
        for j in range(k if layers else 0):
            slots.append((group, j, kinds[j], list(range(first + j, first + layers, k))))
    return slots


def _read_params(cfg: ModelConfig, spec: Weights, names: _Names) -> dict:
    """The zoo param tree, one HF tensor read (and one zoo leaf on the device) at a time. Scanned: a stack's
    leaf [cycles, ...] is filled layer by layer into one preallocated host array; unrolled: one leaf per
    cycle_c/block_j. Every HF tensor is checked against the shape its zoo leaf needs before it is converted:
    numpy would broadcast a [1] norm or a [1, d] kernel into a layer of a stack."""
    dtype = np.dtype(dtype_of(cfg.param_dtype))
    shapes = _model_shapes(cfg)
    params: dict = {}

    def put(zoo_path: str, value):
        _set(params, zoo_path, jax.device_put(np.asarray(value, dtype)))  # device_put: no per-shape compile

    def reader(rule: Rule, where: str, stacked: bool) -> Callable[[int | None], tuple]:
        """(HF layer index) -> `rule`'s zoo values, its zoo paths under `where` (leaves [cycles, ...] when
        `stacked`); the HF shapes to check come from the rule's export direction applied to the leaves'."""
        zoo = [shapes[where + p][1:] if stacked else shapes[where + p] for p in rule.zoo]
        want = [x.shape for x in jax.eval_shape(rule.to_hf, *(jax.ShapeDtypeStruct(s, dtype) for s in zoo))]
        return lambda i: rule.to_zoo(*(names.get(n.format(i=i), s) for n, s in zip(rule.hf, want, strict=True)))

    for rule in spec.top:
        for zoo, value in zip(rule.zoo, reader(rule, "", False)(None), strict=True):
            put(zoo, value)
    for stack, num_layers, rules in spec.stacks:
        for group, j, kind, layers in _slots(cfg, num_layers):
            for rule in rules:
                if rule.mlp not in (None, kind):
                    continue
                where = f"{stack}/{group}s/block_{j}/" if cfg.scan_layers else f"{stack}/{group}_0/block_{j}/"
                read = reader(rule, where, cfg.scan_layers)
                if not cfg.scan_layers:
                    for c, i in enumerate(layers):
                        for zoo, value in zip(rule.zoo, read(i), strict=True):
                            put(f"{stack}/{group}_{c}/block_{j}/{zoo}", value)
                    continue
                buffers = None
                for c, i in enumerate(layers):
                    values = read(i)
                    if buffers is None:
                        buffers = [np.empty((len(layers), *np.shape(v)), dtype) for v in values]
                    for buffer, value in zip(buffers, values, strict=True):
                        buffer[c] = value
                assert buffers is not None  # a group has at least one cycle
                for zoo, buffer in zip(rule.zoo, buffers, strict=True):
                    put(f"{stack}/{group}s/block_{j}/{zoo}", buffer)
                del buffers  # before the next leaf's: one host stack at a time
    return params


def load_config(path: str | Path) -> tuple[ModelConfig, Family]:
    """The ModelConfig of an HF checkpoint directory as `load` decides it (config.json, and whether the files
    hold an output head of their own: tensor names only, no tensor read), and its family."""
    path = Path(path)
    values = json.loads((path / "config.json").read_text())
    cfg = config_from_hf(values)
    family = hf_family(values)
    return _decide_tying(cfg, _Names(Checkpoint(path), family.prefix), family.embedding, family.head), family


def load(path: str | Path, **overrides) -> tuple[ModelConfig, dict]:
    """Reads an HF checkpoint directory: config.json + model.safetensors (or shards with
    model.safetensors.index.json). Returns (ModelConfig, params) for `zoo.build(cfg).apply({"params": params},
    ...)`; `overrides` replace ModelConfig fields (scan_layers=False for the unrolled layout, dtype,
    param_dtype, ...). Raises ValueError naming the HF field for anything the zoo cannot express."""
    cfg, family = load_config(path)  # every config error before any weight is read
    cfg = cfg.replace(**overrides)
    ckpt = Checkpoint(Path(path))
    names = _Names(ckpt, family.prefix)
    spec = family.read_weights(cfg, names.has) if family.read_weights else family.weights(cfg)
    params = _read_params(cfg, spec, names)
    unused = [n for n in ckpt.unused() if not any(re.search(p, n) for p in family.ignored)]
    if unused:
        raise ValueError(
            f"checkpoint tensors with no place in the zoo {family.model_type} model (an HF feature "
            f"the converter does not express?): {', '.join(unused[:10])}"
        )
    _check_shapes(cfg, params, "checkpoint tensors")
    return cfg, params


# ================================================================================================ save
def _host(x, index: int | None = None) -> np.ndarray:
    """A zoo leaf (or layer `index` of a stacked leaf) as numpy. np.asarray on a jax array that has to copy
    (accelerator or sharded) keeps the copy cached on the array for the array's lifetime, which over a whole
    save would be a second model in host memory; so such arrays are sliced where they live and cross shard
    by shard through temporary CPU arrays. A single-device CPU array is viewed in place."""
    if not isinstance(x, jax.Array):
        array = np.asarray(x)
    elif len(x.devices()) == 1 and next(iter(x.devices())).platform == "cpu":
        array = np.asarray(x)  # a view of the buffer: no copy, nothing cached
    else:
        if index is not None:
            x, index = x[index], None  # one layer crosses to the host
        array = np.empty(x.shape, x.dtype)
        cpu = jax.devices("cpu")[0]
        for shard in x.addressable_shards:
            if shard.replica_id == 0:
                array[shard.index] = np.asarray(jax.device_put(shard.data, cpu))
    return array if index is None else array[index]


def _leaves(arrays: list, index: int | None = None) -> list:
    return [_host(x, index) for x in arrays]


def _make(rule: Rule, leaves: Callable[[], list], index: int):
    return rule.to_hf(*leaves())[index]


def _tensors(cfg: ModelConfig, spec: Weights, params: dict, scanned: bool) -> list[Tensor]:
    """Every HF tensor with its shape and a function that converts it: nothing is converted before it is
    written, and a stacked leaf crosses to the host one layer at a time."""
    # (rule, format values for its names, zoo arrays' shapes, () -> zoo arrays on the host)
    jobs: list[tuple[Rule, dict, list, Callable[[], list]]] = []
    for rule in spec.top:
        leaves = [_get(params, p) for p in rule.zoo]
        jobs.append((rule, {}, leaves, functools.partial(_leaves, leaves)))
    for stack, num_layers, rules in spec.stacks:
        for group, j, kind, layers in _slots(cfg, num_layers):
            for rule in rules:
                if rule.mlp not in (None, kind):
                    continue
                for c, i in enumerate(layers):
                    if scanned:
                        stacked = [_get(params, f"{stack}/{group}s/block_{j}/{p}") for p in rule.zoo]
                        shapes = [jax.ShapeDtypeStruct(x.shape[1:], x.dtype) for x in stacked]
                        jobs.append((rule, {"i": i}, shapes, functools.partial(_leaves, stacked, c)))
                    else:
                        leaves = [_get(params, f"{stack}/{group}_{c}/block_{j}/{p}") for p in rule.zoo]
                        jobs.append((rule, {"i": i}, leaves, functools.partial(_leaves, leaves)))
    tensors: list[Tensor] = []
    for rule, fmt, shapes, load in jobs:
        abstract = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in shapes]
        for index, (name, spec_) in enumerate(zip(rule.hf, jax.eval_shape(rule.to_hf, *abstract), strict=True)):
            tensors.append((name.format(**fmt), spec_, functools.partial(_make, rule, load, index)))
    return tensors


def save(
    cfg: ModelConfig,
    params: dict,
    out_dir: str | Path,
    *,
    family: str | None = None,
    max_shard_size: int | str = "5GB",
    extra_config: dict | None = None,
) -> Path:
    """Writes config.json + model.safetensors (sharded with an index above `max_shard_size`) that
    transformers' AutoModelForCausalLM / AutoModelForSeq2SeqLM.from_pretrained reads. `family` (a model_type
    in zoo.hf.FAMILIES: gpt2, t5, llama, ..., phi3) defaults to the first that expresses `cfg` exactly; a
    config no family expresses raises ValueError naming the ModelConfig field. `params` may be scanned or unrolled;
    `extra_config` adds HF config fields the zoo does not track (token ids, ...)."""
    fam = family_of(cfg, family)
    params = nn.meta.unbox(params)
    scanned = "cycles" in params["decoder"]
    _check_shapes(cfg.replace(scan_layers=scanned), params, "params")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_checkpoint(out, _tensors(cfg, fam.weights(cfg), params, scanned), max_shard_size)
    dtype = str(np.dtype(_get(params, "token_embed/embedding").dtype))
    hf_config = {**(extra_config or {}), **fam.config_to_hf(cfg), "dtype": dtype, "torch_dtype": dtype}
    (out / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return out
