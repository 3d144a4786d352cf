"""safetensors checkpoints: read with the `safetensors` library, written by a streaming writer.

The format: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
then the raw little-endian tensor bytes (https://github.com/huggingface/safetensors). A checkpoint directory
holds model.safetensors, or shards model-0000k-of-0000n.safetensors listed in model.safetensors.index.json.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes  # also registers bfloat16 with numpy, which safetensors' numpy reader looks up by name
import numpy as np
from safetensors import SafetensorError, safe_open

INDEX = "model.safetensors.index.json"
# A tensor to write: (HF name, its shape and dtype, a function that builds it as a numpy array).
Tensor = tuple[str, jax.ShapeDtypeStruct, Callable[[], np.ndarray]]
_DTYPE_NAMES = {
    np.dtype("<f8"): "F64",
    np.dtype("<f4"): "F32",
    np.dtype("<f2"): "F16",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype("<i8"): "I64",
    np.dtype("<i4"): "I32",
    np.dtype("<i2"): "I16",
    np.dtype("i1"): "I8",
    np.dtype("u1"): "U8",
    np.dtype("?"): "BOOL",
}


@contextlib.contextmanager
def _reading(file: Path) -> Iterator:
    """`file` opened with safetensors; its errors (a corrupt header, a truncated file, a missing shard) as one-line
    ValueErrors naming the file."""
    try:
        with safe_open(file, framework="numpy") as f:
            yield f
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{file}: not a readable safetensors file: {' '.join(str(e).split())}") from None


def _indexed_files(path: Path) -> list[Path]:
    """The files the index's weight_map names; an entry that names a file outside the checkpoint directory (an
    absolute path, a `..`) is refused, naming it. The names are checked, not where symlinks lead: the Hugging
    Face cache's snapshot directories hold symlinks into its blobs/ directory, put there by the user's own
    download."""
    index = path / INDEX
    try:
        values = json.loads(index.read_text())
    except ValueError as e:  # also UnicodeDecodeError
        raise ValueError(f"{index}: not JSON: {e}") from None
    weight_map = values.get("weight_map") if isinstance(values, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise ValueError(f"{index}: needs a weight_map of tensor name -> file name")
    for name, file in weight_map.items():
        if Path(file).is_absolute() or ".." in Path(file).parts:
            raise ValueError(f"{index}: weight_map entry {name!r} -> {file!r} is outside the checkpoint directory")
    return [path / f for f in sorted(set(weight_map.values()))]


class Checkpoint:
    """The tensors of a checkpoint directory by name, each read only when asked for, so the checkpoint is
    never in memory at once; `used` records what was read."""

    def __init__(self, path: Path):
        files = _indexed_files(path) if (path / INDEX).exists() else sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(
                f"{path}: no *.safetensors files (pickled pytorch_model.bin checkpoints are "
                "not read; convert them with safetensors first)"
            )
        self._files: dict[str, Path] = {}
        for file in files:
            with _reading(file) as f:
                self._files.update(dict.fromkeys(f.keys(), file))
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The tensor `name` in its stored shape and dtype (bfloat16 as ml_dtypes.bfloat16). With `shape` it is a
        weight: ValueError, naming it and its file, unless it is floating point and of exactly that shape (a
        wrong shape could otherwise broadcast into a stacked parameter, an integer be cast silently)."""
        if name not in self._files:
            raise ValueError(f"checkpoint has no tensor {name!r}")
        self.used.add(name)
        file = self._files[name]
        # Mapped for this one tensor only (get_tensor copies it out): a map held for the whole load keeps every
        # page read so far resident. Measured loading a 457 MB llama (456 MiB of params): peak RSS +1003 MiB
        # with the files held open, +572 MiB mapped per tensor (+559 MiB with the former np.memmap reader).
        with _reading(file) as f:
            array = f.get_tensor(name)
        if shape is not None and not jnp.issubdtype(array.dtype, jnp.floating):
            raise ValueError(f"{name}: dtype {array.dtype}, a weight must be floating point (file {file})")
        if shape is not None and array.shape != tuple(shape):
            raise ValueError(f"{name}: shape {array.shape}, expected {tuple(shape)} (file {file})")
        return array

    def unused(self) -> list[str]:
        """The names no `get` has asked for, sorted."""
        return sorted(name for name in self._files if name not in self.used)


def _nbytes(spec: jax.ShapeDtypeStruct) -> int:
    return math.prod(spec.shape) * np.dtype(spec.dtype).itemsize


# Streaming rather than safetensors.numpy.save_file, which takes a dict of finished arrays: with it a whole
# shard of converted tensors (up to max_shard_size, 5 GB by default) sits in host memory at once. Measured
# writing 384 MiB as one file (24 float32 [2048, 2048] tensors, each built as a transpose like a Linear's):
# peak RSS +16 MiB above the source arrays here (one tensor), +384 MiB with save_file (all of them).
def _write_file(path: Path, tensors: list[Tensor]) -> None:
    """Writes `tensors` to one file, building each only when its bytes are written and dropping it after."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, spec, _ in tensors:
        header[name] = {
            "dtype": _DTYPE_NAMES[np.dtype(spec.dtype)],
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + _nbytes(spec)],
        }
        offset += _nbytes(spec)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, spec, make in tensors:
            array = np.ascontiguousarray(np.asarray(make()))
            if array.shape != tuple(spec.shape) or array.dtype != np.dtype(spec.dtype):
                raise AssertionError(f"{name}: built {array.shape} {array.dtype}, expected {spec}")
            f.write(array.reshape(-1).view(np.uint8).data)  # a byte view: buffers reject bfloat16
            del array  # before the next one is built: one converted tensor in memory at a time


def _parse_size(size: int | str) -> int:
    """5_000_000_000, "5GB" (powers of 10, as HF) or "4GiB" -> bytes."""
    if isinstance(size, int):
        return size
    units = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]+)\s*", size)
    if not match or match.group(2).upper() not in units:
        raise ValueError(f"max_shard_size: cannot read {size!r}; use bytes or e.g. '5GB', '500MB'")
    return int(float(match.group(1)) * units[match.group(2).upper()])


def write_checkpoint(out: Path, tensors: list[Tensor], max_shard_size: int | str) -> None:
    """Writes `tensors` in order as out/model.safetensors, or as shards of at most `max_shard_size` bytes
    (a tensor larger than that gets a shard of its own) with an index; replaces any earlier checkpoint."""
    limit = _parse_size(max_shard_size)
    shards: list[list[Tensor]] = [[]]
    size = 0
    for tensor in tensors:
        nbytes = _nbytes(tensor[1])
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += nbytes
    for stale in [*out.glob("model*.safetensors"), out / INDEX]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        _write_file(out / "model.safetensors", shards[0])
        return
    weight_map = {}
    for n, shard in enumerate(shards, 1):
        file = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        _write_file(out / file, shard)
        weight_map.update(dict.fromkeys((name for name, _, _ in shard), file))
    total = sum(_nbytes(spec) for _, spec, _ in tensors)
    (out / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
