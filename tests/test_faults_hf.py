"""Faulty Hugging Face checkpoints are refused, before any weight is placed, with one line naming the tensor or
file: a tensor of the wrong shape (which numpy would broadcast into a stacked layer), an integer or bool weight
(which would be cast silently), a truncated file or corrupt header, an index entry outside the checkpoint
directory. Through the trainer (init.hf) the same errors are one-line UserErrors starting "init.hf:"."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from test_train import FAST

import zoo
from zoo import hf
from zoo.presets import get_config
from zoo.train.config import UserError
from zoo.train.init import resolve_from_weights
from zoo.train.setup import prepare
from zoo.train.tokenizer import ByteTokenizer

D, FF = 64, 128
CFG = get_config("llama-tiny", d_model=D, d_ff=FF, num_heads=4, num_kv_heads=2)  # 4 layers, untied head
NORM = "model.layers.3.input_layernorm.weight"
UP = "model.layers.1.mlp.up_proj.weight"
QUERY = "model.layers.2.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny llama checkpoint written by zoo's exporter, with the byte tokenizer; tests corrupt copies of it."""
    directory = tmp_path_factory.mktemp("hf") / "llama"
    hf.save(CFG, zoo.init_params(CFG, jax.random.key(0)), directory)
    ByteTokenizer().save(directory)
    return directory


def _copy(checkpoint: Path, tmp_path: Path, replace: dict[str, np.ndarray] | None = None) -> Path:
    """A copy of `checkpoint` with the tensors named in `replace` swapped for other arrays."""
    directory = tmp_path / "ckpt"
    shutil.copytree(checkpoint, directory)
    if replace:
        tensors = load_file(directory / "model.safetensors") | replace
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def _refused(directory: Path, match: str, **overrides) -> None:
    with pytest.raises(ValueError, match=match) as info:
        hf.load(directory, **overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_a_layer_norm_of_shape_1_is_refused_naming_it(checkpoint, tmp_path, scan_layers):
    directory = _copy(checkpoint, tmp_path, {NORM: np.ones(1, np.float32)})
    file = re.escape(str(directory / "model.safetensors"))
    _refused(directory, rf"^{NORM}: shape \(1,\), expected \({D},\) \(file {file}\)$", scan_layers=scan_layers)


def test_an_up_proj_of_one_row_is_refused_naming_it(checkpoint, tmp_path):
    directory = _copy(checkpoint, tmp_path, {UP: np.ones((1, D), np.float32)})
    _refused(directory, rf"^{UP}: shape \(1, {D}\), expected \({FF}, {D}\) \(file .*model.safetensors\)$")


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_a_non_floating_weight_is_refused_naming_it_and_its_dtype(checkpoint, tmp_path, dtype):
    directory = _copy(checkpoint, tmp_path, {QUERY: np.ones((D, D), dtype)})
    _refused(directory, rf"^{QUERY}: dtype {dtype}, a weight must be floating point \(file .*model.safetensors\)$")


def test_every_float_dtype_is_read_and_converted(checkpoint, tmp_path):
    stored = load_file(checkpoint / "model.safetensors")
    narrow = {NORM: np.float16, UP: ml_dtypes.bfloat16, QUERY: np.float64}
    directory = _copy(checkpoint, tmp_path, {n: stored[n].astype(t) for n, t in narrow.items()})
    _, params = hf.load(directory, scan_layers=False)
    layer = lambda i: params["decoder"][f"cycle_{i}"]["block_0"]  # noqa: E731
    got = {
        NORM: layer(3)["attn_norm"]["scale"],
        UP: layer(1)["mlp"]["wi_1"]["kernel"].T,
        QUERY: layer(2)["attention"]["query"]["kernel"].reshape(D, -1).T,
    }
    for name, dtype in narrow.items():
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], stored[name].astype(dtype).astype(np.float32))


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-100])


def _garble_header(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[8:20] = b"not a header"
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [_truncate, _garble_header])
def test_a_corrupt_file_is_a_one_line_error_naming_it(checkpoint, tmp_path, corrupt):
    directory = _copy(checkpoint, tmp_path)
    corrupt(directory / "model.safetensors")
    file = re.escape(str(directory / "model.safetensors"))
    _refused(directory, rf"^{file}: not a readable safetensors file: Error while deserializing header")
    with pytest.raises(ValueError, match=rf"^{file}: not a readable safetensors file"):
        hf.load_config(directory)


def _index(directory: Path, outside: str) -> None:
    """An index mapping every tensor to model.safetensors but the embedding, mapped to `outside`."""
    names = load_file(directory / "model.safetensors").keys()
    weight_map = {name: "model.safetensors" for name in names} | {"model.embed_tokens.weight": outside}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("where", ["../outside.safetensors", "absolute"])
def test_an_index_entry_outside_the_directory_is_refused_naming_it(checkpoint, tmp_path, where):
    directory = _copy(checkpoint, tmp_path)
    outside = tmp_path / "outside.safetensors"
    shutil.copy(directory / "model.safetensors", outside)  # a readable file: refused for where it is
    if where == "absolute":
        where = str(outside)
    _index(directory, where)
    for read in (hf.load, hf.load_config):
        with pytest.raises(ValueError, match=r"weight_map entry 'model.embed_tokens.weight' -> .* is outside"):
            read(directory)


def test_an_index_inside_the_directory_still_loads_symlinked_shards_included(checkpoint, tmp_path):
    """The Hugging Face cache's snapshot directories hold symlinks into its blobs/: named inside, they load."""
    directory = _copy(checkpoint, tmp_path)
    _index(directory, "./model.safetensors")
    assert hf.load(directory)[0].num_layers == CFG.num_layers
    blob = tmp_path / "blobs" / "0123abcd"
    blob.parent.mkdir()
    shutil.copy(directory / "model.safetensors", blob)
    (directory / "shard.safetensors").symlink_to(blob)
    _index(directory, "shard.safetensors")
    assert hf.load(directory)[0].num_layers == CFG.num_layers


def _prepare(directory: Path, run_dir: Path):
    config = resolve_from_weights([*FAST, f"run.dir={run_dir}", "mesh.data=1", f"init.hf={directory}"])
    return prepare(config, devices=jax.devices("cpu")[:1])


def test_the_trainer_refuses_a_wrong_shape_with_one_line(checkpoint, tmp_path):
    directory = _copy(checkpoint, tmp_path, {UP: np.ones((1, D), np.float32)})
    with pytest.raises(UserError, match=rf"^init.hf: {UP}: shape \(1, {D}\), expected \({FF}, {D}\)") as info:
        _prepare(directory, tmp_path / "run")
    assert "\n" not in str(info.value)


def test_the_trainer_refuses_a_corrupt_file_or_index_with_one_line(checkpoint, tmp_path):
    directory = _copy(checkpoint, tmp_path)
    _garble_header(directory / "model.safetensors")
    with pytest.raises(UserError, match=r"^init.hf: .*model.safetensors: not a readable safetensors file") as info:
        _prepare(directory, tmp_path / "run")
    assert "\n" not in str(info.value)
    (directory / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(UserError, match=r"^init.hf: .*index.json: needs a weight_map"):
        _prepare(directory, tmp_path / "run")
