"""Starting from weights (init.hf, init.run) and freezing parameters (train.freeze): a tiny random Hugging
Face checkpoint of every supported family fine-tunes through the trainer and its loss falls; the run
starts from exactly the checkpoint's parameters; resuming it is exact; a preset that disagrees with the
checkpoint is refused naming the field."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers
from test_train import FAST, ROOT, _env

from zoo import hf
from zoo.hf import families as hf_families
from zoo.presets import family_sections, get_config, list_presets
from zoo.semantics import semantic_differences
from zoo.train.config import UserError, resolve
from zoo.train.init import _mtp_modules, resolve_from_weights
from zoo.train.loop import train
from zoo.train.tokenizer import ByteTokenizer

from conftest import TINY_PRESETS

ONE = jax.devices("cpu")[:1]


def _tiny_preset_per_family() -> dict[str, str]:
    """Every HF family zoo supports -> a -tiny preset it expresses exactly: the family's own (by name) if it has
    one, else the first in name order."""
    found = {}
    for family in hf_families.FAMILIES:
        stem = family.split("_")[0][:4]
        for name in sorted(TINY_PRESETS, key=lambda n: (not n.startswith(stem), n)):
            try:
                hf_families.family_of(get_config(name), family)
            except ValueError:
                continue
            found[family] = name
            break
    return found


FAMILIES = _tiny_preset_per_family()


def test_every_hf_family_has_a_tiny_preset():
    assert sorted(FAMILIES) == sorted(hf_families.FAMILIES)


def hf_checkpoint(directory, preset: str, family: str | None = None, **changes):
    """A random transformers model with the preset's architecture (zoo.hf.config_to_hf, as `family` when
    given) with `changes` to its ModelConfig, saved with save_pretrained, plus the byte tokenizer (T5: with
    100 sentinels)."""
    cfg = get_config(preset, **changes)
    torch.manual_seed(0)
    auto = transformers.AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else transformers.AutoModelForCausalLM
    model = auto.from_config(transformers.AutoConfig.for_model(**hf.config_to_hf(cfg, family)))
    with torch.no_grad():  # norm weights away from their init, so a wrong mapping shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
        embedding = model.get_input_embeddings().weight
        if not cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == embedding.data_ptr():
            # transformers 5 builds T5 tied whatever the config says; an untied checkpoint has its own head
            model.lm_head.weight = torch.nn.Parameter(0.05 * torch.randn_like(embedding))
    model.save_pretrained(directory)
    ByteTokenizer(100 if cfg.is_encoder_decoder else 0).save(directory)
    return directory


def fine_tune(run_dir, preset, *overrides):
    config = resolve(preset, [*FAST, f"run.dir={run_dir}", "mesh.data=1", *overrides])
    return train(config, devices=ONE, echo=lambda _: None)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _unlike_any_preset(family: str) -> dict:
    """Changes to the family's tiny preset that the family still expresses: another d_ff, or (where the family
    fixes d_ff, as BLOOM's 4 x d_model) one more attention-pattern cycle of layers."""
    tiny = get_config(FAMILIES[family])
    for changes in ({"d_ff": tiny.d_ff + 24}, {"num_layers": tiny.num_layers + tiny.cycle_length}):
        try:
            hf_families.family_of(tiny.replace(**changes), family)
        except ValueError:
            continue
        return changes
    raise AssertionError(f"no shape change that {family} expresses")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hf_checkpoint_fine_tunes_without_a_preset_and_its_loss_falls(family, tmp_path):
    """A checkpoint shaped like no preset (its family's tiny sizes with another d_ff) fine-tunes with init.hf
    and nothing but data and steps: the model is the checkpoint's, the recipe its family's."""
    directory = hf_checkpoint(tmp_path / "hf", FAMILIES[family], family, **_unlike_any_preset(family))
    checkpoint, _ = hf.load(directory)
    assert all(semantic_differences(get_config(name), checkpoint) for name in list_presets())
    # 60 steps: the smallest family learning rate (Cohere's 1.5e-4) moves the loss by about 0.5 nats in 30.
    config = resolve_from_weights(
        [*FAST, "train.total_steps=60", f"run.dir={tmp_path / 'run'}", "mesh.data=1", f"init.hf={directory}"]
    )
    recipe_family = hf_families.FAMILIES[family].preset_family
    _, recipe, where = family_sections(recipe_family)
    assert semantic_differences(config.model, checkpoint) == [] and config.preset == "hf"
    assert where in config.origin and recipe_family in config.origin
    fast = {
        o.split("=")[0].removeprefix("train."): o for o in [*FAST, "train.total_steps=60"] if o.startswith("train.")
    }
    assert all(getattr(config.train, k) == v for k, v in recipe.items() if k not in fast), family
    result = train(config, devices=ONE, echo=lambda _: None)
    losses = np.array(result.losses)
    assert np.isfinite(losses).all() and losses[-5:].mean() < losses[:5].mean() - 0.5, family


def test_starts_from_exactly_the_checkpoint_and_freezes(tmp_path):
    """Everything frozen: after 3 steps the params are still the checkpoint's, bit for bit. Embeddings
    frozen: they stay, the rest moves."""
    directory = hf_checkpoint(tmp_path / "hf", "llama-tiny")
    _, loaded = hf.load(directory)
    frozen = fine_tune(tmp_path / "all", "llama-tiny", f"init.hf={directory}", "train.freeze=.*", "run.steps=3")
    for a, b in zip(leaves(frozen.state["params"]), leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)
    partly = fine_tune(
        tmp_path / "embed", "llama-tiny", f"init.hf={directory}", "train.freeze=token_embed/.*", "run.steps=3"
    )
    params = partly.state["params"]
    np.testing.assert_array_equal(params["token_embed"]["embedding"], loaded["token_embed"]["embedding"])
    assert not np.array_equal(params["lm_head"]["kernel"], loaded["lm_head"]["kernel"])


def test_an_hf_checkpoint_gains_fresh_multi_token_prediction_modules(tmp_path):
    """model.mtp_depth=1 over an HF checkpoint (which has no MTP module): the model's params are the checkpoint's
    (frozen here: still bit for bit after 3 steps), the module is drawn fresh and trains, and its loss is logged."""
    directory = hf_checkpoint(tmp_path / "hf", "llama-tiny")
    _, loaded = hf.load(directory)
    run = fine_tune(
        tmp_path / "mtp",
        "llama-tiny",
        f"init.hf={directory}",
        "model.mtp_depth=1",
        "train.freeze=^(?!mtp_).*",
        "run.steps=3",
    )
    params = run.state["params"]
    for a, b in zip(leaves({k: v for k, v in params.items() if k != "mtp_0"}), leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)
    drawn = _mtp_modules(get_config("llama-tiny", mtp_depth=1), {}, seed=0)["mtp_0"]  # run.seed 0: where it began
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(params["mtp_0"]), leaves(drawn), strict=True))
    assert all(np.isfinite(h["mtp_loss"]) for h in run.history)


def test_resuming_a_fine_tuning_run_is_exact(tmp_path):
    directory = hf_checkpoint(tmp_path / "hf", "llama-tiny")
    whole = fine_tune(tmp_path / "whole", "llama-tiny", f"init.hf={directory}", "run.steps=10")
    first = fine_tune(
        tmp_path / "split", "llama-tiny", f"init.hf={directory}", "run.steps=5", "run.checkpoint_interval=5"
    )
    second = fine_tune(
        tmp_path / "split", "llama-tiny", f"init.hf={directory}", "run.steps=10", "run.checkpoint_interval=5"
    )
    assert second.start_step == 5 and first.losses + second.losses == whole.losses


def test_init_run_starts_from_another_runs_parameters(tmp_path):
    base = fine_tune(tmp_path / "base", "llama-tiny", "run.steps=4")
    follow = fine_tune(
        tmp_path / "follow", "llama-tiny", f"init.run={tmp_path / 'base'}", "train.freeze=.*", "run.steps=2"
    )
    for a, b in zip(leaves(follow.state["params"]), leaves(base.state["params"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_disagreements_are_refused_naming_the_field(tmp_path):
    directory = hf_checkpoint(tmp_path / "hf", "llama-tiny")
    with pytest.raises(
        UserError,
        match=r"init.hf: the checkpoint has model.num_layers=4 but the command line "
        r"says 2",
    ):
        fine_tune(tmp_path / "a", "llama-tiny", f"init.hf={directory}", "model.num_layers=2")
    with pytest.raises(
        UserError,
        match=r"init.hf: the checkpoint has model.attention_bias=False but preset "
        r"'gpt2-tiny' says True \(also .*norm_type.*\)",
    ):
        fine_tune(tmp_path / "b", "gpt2-tiny", f"init.hf={directory}")
    with pytest.raises(UserError, match=r"init.hf: .* is not a directory"):
        fine_tune(tmp_path / "c", "llama-tiny", f"init.hf={tmp_path / 'nope'}")
    with pytest.raises(UserError, match=r"TrainConfig.freeze: 'tokn_embed/.\*' matches no parameter"):
        fine_tune(tmp_path / "d", "llama-tiny", f"init.hf={directory}", "train.freeze=tokn_embed/.*")
    out = subprocess.run(
        [sys.executable, "train.py", *FAST, f"run.dir={tmp_path / 'e'}", f"init.hf={directory}", "model.num_layers=2"],
        cwd=ROOT,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and "model.num_layers=4" in lines[0], out.stderr
