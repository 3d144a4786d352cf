"""Presets: every YAML preset loads and validates, the loader's errors name file and key, inheritance
resolves, tiny presets keep their family's knobs, and every named preset has its published parameter count.

The parameter counts below are the single source for the README's preset table:
`python tests/test_presets.py --write-readme` regenerates the README tables from EXPECTED and the
YAML files, and test_readme_tables_are_current fails when they drift.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

if __name__ == "__main__":      # run as a script from a source checkout: make `zoo` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zoo import presets  # noqa: E402
from zoo.config import ACTIVATIONS, CHOICES, LAYER_KINDS, ModelConfig  # noqa: E402
from zoo.presets import family_presets, get_config, get_recipe, list_families, list_presets, preset_family  # noqa: E402
from zoo.recipe import TrainConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REF = "reference_configs.md"   # shared/reference/reference_configs.md: `computed` in its YAML summary


class Count(NamedTuple):
    params: int          # exact count of our architecture, asserted against zoo.count_params
    published: str       # the label the source publishes
    source: str          # where `params` comes from
    note: str = ""       # why our count and the label differ, when they do


# Every named preset's exact parameter count, with its source. Tiny presets are our own sizes (pinned so a
# change is deliberate). The README's preset table is generated from this dict.
EXPECTED: dict[str, Count] = {
    # --- Vaswani et al. 2017, Table 3 ----------------------------------------------------------------
    "transformer-base": Count(63_082_496, "65M", f"{REF} transformer-base [C]; Table 3 [S12]",
                              "vocab 37000 assumed (paper: 'about 37000'); the 65M label is unexplained"),
    "transformer-big": Count(214_245_376, "213M", f"{REF} transformer-big [C]; Table 3 [S12]",
                             "vocab 37000 assumed"),
    # --- GPT-2: not in the reference file; HF checkpoint numel ------------------------------------
    "gpt2": Count(124_439_808, "117M (paper) / 124M", "HF `gpt2` numel",
                  "the paper's Table 2 labels undercount the released checkpoints"),
    "gpt2-medium": Count(354_823_168, "345M (paper) / 355M", "HF `gpt2-medium` numel"),
    "gpt2-large": Count(774_030_080, "762M (paper) / 774M", "HF `gpt2-large` numel"),
    "gpt2-xl": Count(1_557_611_200, "1542M (paper) / 1.5B", "HF `gpt2-xl` numel"),
    # --- Brown et al. 2020, Table 2.1 --------------------------------------------------------------------
    "gpt3-small": Count(125_226_240, "125M", f"{REF} gpt3-small [C]; Table 2.1 [S13]"),
    "gpt3-medium": Count(355_871_744, "350M", f"{REF} gpt3-medium [C]; Table 2.1 [S13]"),
    "gpt3-large": Count(760_300_032, "760M", f"{REF} gpt3-large [C]; Table 2.1 [S13]"),
    "gpt3-xl": Count(1_315_723_264, "1.3B", f"{REF} gpt3-xl [C]; Table 2.1 [S13]",
                     "16 heads of 128 (the table's 24 x 128 != d_model 2048)"),
    "gpt3-2.7b": Count(2_651_553_280, "2.7B", f"{REF} gpt3-2.7b [C]; Table 2.1 [S13]"),
    "gpt3-6.7b": Count(6_658_404_352, "6.7B", f"{REF} gpt3-6.7b [C]; Table 2.1 [S13]"),
    "gpt3-13b": Count(12_853_386_240, "13.0B", f"{REF} §2 GPT-3 13B row, d=5120 [C]; Table 2.1 [S13]",
                      "d_model 5120; the table prints 5140 (12.95B), not divisible by 40 heads"),
    "gpt3-175b": Count(174_604_259_328, "175.0B", f"{REF} gpt3-175b [C]; Table 2.1 [S13]"),
    # --- T5 v1.0 (gin files; = HF t5-* numel) -------------------------------------------------------
    "t5-small": Count(60_506_624, "60M", f"{REF} t5-v1_0-small [C] (= HF t5-small numel); README [S8]"),
    "t5-base": Count(222_903_552, "220M", f"{REF} t5-v1_0-base [C]; README [S8]"),
    "t5-large": Count(737_668_096, "770M", f"{REF} t5-v1_0-large [C]; README [S8]",
                      "the exact count is 4% below the label"),
    "t5-3b": Count(2_851_598_336, "3B", f"{REF} t5-v1_0-3b [C]; README [S8]"),
    "t5-11b": Count(11_307_321_344, "11B", f"{REF} t5-v1_0-11b [C]; README [S8]"),
    # --- T5 v1.1 (released_checkpoints.md) ---------------------------------------------------------
    "t5-v1_1-small": Count(76_961_152, "~77M", f"{REF} t5-v1_1-small [C]; released_checkpoints.md [S8]"),
    "t5-v1_1-base": Count(247_577_856, "~250M", f"{REF} t5-v1_1-base [C]; released_checkpoints.md [S8]"),
    "t5-v1_1-large": Count(783_150_080, "~800M", f"{REF} t5-v1_1-large [C]; released_checkpoints.md [S8]"),
    "t5-v1_1-xl": Count(2_849_757_184, "~3B", f"{REF} t5-v1_1-xl [C]; released_checkpoints.md [S8]"),
    "t5-v1_1-xxl": Count(11_135_332_352, "~11B", f"{REF} t5-v1_1-xxl [C]; released_checkpoints.md [S8]"),
    # --- LLaMA 1 (Table 2), Llama 2 / 3 / 3.1 (model cards) --------------------------------------------
    "llama-7b": Count(6_738_415_616, "6.7B", f"{REF} llama1-7b [C]; LLaMA Table 2 [S15]"),
    "llama-13b": Count(13_015_864_320, "13.0B", f"{REF} llama1-13b [C]; LLaMA Table 2 [S15]"),
    "llama-33b": Count(32_528_943_616, "32.5B", f"{REF} llama1-33b [C]; LLaMA Table 2 [S15]"),
    "llama-65b": Count(65_285_660_672, "65.2B", f"{REF} llama1-65b [C]; LLaMA Table 2 [S15]"),
    "llama2-7b": Count(6_738_415_616, "7B", f"{REF} llama2-7b [C]; Llama 2 model card [S1]"),
    "llama2-13b": Count(13_015_864_320, "13B", f"{REF} llama2-13b [C]; Llama 2 model card [S1]"),
    "llama2-70b": Count(68_976_648_192, "70B", f"{REF} llama2-70b [C]; Llama 2 model card [S1]",
                        "the exact count is 68.98B"),
    "llama3-8b": Count(8_030_261_248, "8B", f"{REF} llama3-8b [C]; Llama 3 model card [S1]"),
    "llama3-70b": Count(70_553_706_496, "70B", f"{REF} llama3-70b [C]; Llama 3 model card [S1]"),
    "llama3.1-8b": Count(8_030_261_248, "8B", f"{REF} llama3.1-8b [C]; Llama 3.1 model card [S1]"),
    "llama3.1-70b": Count(70_553_706_496, "70B", f"{REF} llama3.1-70b [C]; Llama 3.1 model card [S1]"),
    "llama3.1-405b": Count(405_853_388_800, "405B", f"{REF} llama3.1-405b [C]; Llama 3.1 model card [S1]"),
    # --- PaLM Table 1 -----------------------------------------------------------------------------------------
    "palm-8b": Count(8_632_012_800, "8.63B", f"{REF} palm-8b [C]; PaLM Table 1 [R]"),
    "palm-62b": Count(62_495_662_080, "62.50B", f"{REF} palm-62b [C]; PaLM Table 1 [R]"),
    "palm-540b": Count(540_356_474_880, "540.35B", f"{REF} palm-540b [C]; PaLM Table 1 [R]",
                       "540.356B with LayerNorm scales; the label matches without them (540.354B)"),
    # --- Gemma 2 report Table 2 (embedding + non-embedding, V = 256128) --------------------------------------
    "gemma2-2b": Count(2_614_636_800, "2.61B", f"{REF} gemma2-2b [C] = Table 2 590,118,912 + 2,024,517,888 [S21]",
                       "exact; HF's 256000-row vocab gives 2,614,341,888"),
    "gemma2-9b": Count(9_242_164_736, "9.24B", f"{REF} gemma2-9b [C] = Table 2 917,962,752 + 8,324,201,984 [S21]",
                       "exact; HF: 9,241,705,984"),
    "gemma2-27b": Count(27_227_718_144, "27.2B",
                        f"{REF} gemma2-27b [C] = Table 2 1,180,237,824 + 26,047,480,320 [S21]",
                        "exact; HF: 27,227,128,320"),
    # --- OLMo 2 (official configs; HF model cards) --------------------------------------------------------
    "olmo2-1b": Count(1_484_916_736, "1B", f"{REF} olmo2-1b [C]; OLMo README / HF [S6]",
                      "the exact count is 1.48B"),
    "olmo2-7b": Count(7_298_617_344, "7.3B", f"{REF} olmo2-7b [C]; HF model card [R]"),
    "olmo2-13b": Count(13_716_198_400, "13.7B", f"{REF} olmo2-13b [C]; HF model card [R]"),
    "olmo2-32b": Count(32_234_279_936, "32B", f"{REF} olmo2-32b [C]; HF model card [R]"),
    # --- tiny presets: our sizes ------------------------------------------------------------------------------
    "transformer-tiny": Count(3_817_472, "-", "zoo (Appendix A formula)"),
    "gpt2-tiny": Count(3_356_160, "-", "zoo (Appendix A formula)"),
    "gpt3-tiny": Count(3_356_160, "-", "zoo (Appendix A formula)"),
    "t5-tiny": Count(4_197_440, "-", "zoo (Appendix A formula)"),
    "llama-tiny": Count(3_410_176, "-", "zoo (Appendix A formula)"),
    "palm-tiny": Count(3_933_440, "-", "zoo (Appendix A formula)"),
    "gemma2-tiny": Count(4_067_584, "-", "zoo (Appendix A formula)"),
    "olmo2-tiny": Count(3_411_712, "-", "zoo (Appendix A formula)"),
}

REQUIRED = """
transformer-base transformer-big transformer-tiny
gpt2 gpt2-medium gpt2-large gpt2-xl
gpt3-small gpt3-medium gpt3-large gpt3-xl gpt3-2.7b gpt3-6.7b gpt3-13b gpt3-175b gpt3-tiny
t5-small t5-base t5-large t5-3b t5-11b t5-v1_1-small t5-v1_1-base t5-v1_1-large t5-v1_1-xl t5-v1_1-xxl t5-tiny
llama-7b llama-13b llama-33b llama-65b llama2-7b llama2-13b llama2-70b llama3-8b llama3-70b
llama3.1-8b llama3.1-70b llama3.1-405b llama-tiny
palm-8b palm-62b palm-540b palm-tiny
gemma2-2b gemma2-9b gemma2-27b gemma2-tiny
olmo2-1b olmo2-7b olmo2-13b olmo2-32b olmo2-tiny
""".split()

FAMILY_ORDER = ("transformer", "gpt2", "gpt3", "t5", "llama", "palm", "gemma2", "olmo2")
NAMED = [n for n in list_presets() if not n.endswith("-tiny")]


# ---------------------------------------------------------------------------------------------- loading
def test_required_presets_exist():
    assert not set(REQUIRED) - set(list_presets())
    assert set(list_families()) == set(FAMILY_ORDER)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads_and_validates(name):
    cfg = get_config(name)
    assert isinstance(cfg, ModelConfig)
    recipe = get_recipe(name)
    assert set(recipe) == {f.name for f in dataclasses.fields(TrainConfig)}
    tc = TrainConfig.from_dict(recipe)
    assert tc.seq_len <= cfg.max_seq_len, "the recipe trains on sequences the model cannot take"
    assert preset_family(name) in FAMILY_ORDER
    assert name in family_presets(preset_family(name))


def test_every_preset_has_an_expected_count():
    assert set(EXPECTED) == set(list_presets())


def test_presets_ship_as_package_data():
    # pyproject maps the package zoo.configs to configs/; every family file must be there.
    import tomllib
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    assert setuptools["package-dir"]["zoo.configs"] == "configs" and "zoo.configs" in setuptools["packages"]
    assert "*.yaml" in setuptools["package-data"]["zoo.configs"]
    assert {p.stem for p in (REPO / "configs").glob("*.yaml")} == set(FAMILY_ORDER)


# ---------------------------------------------------------------------------------------- tiny presets
# Fields a tiny preset may change relative to its family's reference preset; every other knob must match.
SIZE_FIELDS = {"vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "d_ff",
               "max_seq_len", "num_decoder_layers", "sliding_window_size", "relative_num_buckets",
               "relative_max_distance", "query_scale"}
TINY_REFERENCE = {"transformer": "transformer-base", "gpt2": "gpt2", "gpt3": "gpt3-small",
                  "t5": "t5-v1_1-small", "llama": "llama2-7b", "palm": "palm-8b",
                  "gemma2": "gemma2-2b", "olmo2": "olmo2-7b"}


@pytest.mark.parametrize("family", FAMILY_ORDER)
def test_tiny_preset_keeps_the_family_knobs(family):
    name = f"{family}-tiny"
    assert preset_family(name) == family
    tiny, ref = get_config(name), get_config(TINY_REFERENCE[family])
    differ = {f.name for f in dataclasses.fields(ModelConfig) if getattr(tiny, f.name) != getattr(ref, f.name)}
    assert not differ - SIZE_FIELDS, f"{name} changes knobs of {TINY_REFERENCE[family]}: {differ - SIZE_FIELDS}"
    # CPU-sized and byte-tokenizer friendly.
    assert tiny.vocab_size == 512 and tiny.max_seq_len <= 256 and 128 <= tiny.d_model <= 256
    assert 2 <= tiny.num_layers <= 4 and 1_000_000 <= EXPECTED[name].params <= 5_000_000
    tc = TrainConfig.from_dict(get_recipe(name))
    assert tc.total_steps <= 1000 and tc.batch_size <= 16 and tc.seq_len <= 128


def test_tiny_presets_exercise_the_exotic_knobs():
    # Test sequences of 64 tokens must cross the local windows and the T5 bucket range.
    g = get_config("gemma2-tiny")
    assert g.sliding_window_size < 64 and g.attention_pattern == ("local", "global")
    assert g.attn_logits_soft_cap and g.final_logits_soft_cap and g.norm_position == "double"
    assert 1 < g.num_kv_heads < g.num_heads and g.norm_scale_plus_one
    assert g.num_heads * g.head_dim != g.d_model and g.query_scale != g.head_dim ** -0.5
    o = get_config("olmo2-tiny")
    assert o.norm_position == "output" and o.qk_norm == "full" and o.z_loss_multiplier > 0
    assert o.num_kv_heads < o.num_heads    # k's QK-norm is narrower than q's
    p = get_config("palm-tiny")
    assert p.parallel_layers and p.parallel_shared_norm and p.num_kv_heads == 1 and p.z_loss_multiplier > 0
    g3 = get_config("gpt3-tiny")
    assert g3.attention_pattern == ("global", "local") and g3.sliding_window_size < 64
    t5 = get_config("t5-tiny")
    assert t5.position_embedding == "relative_bias" and t5.relative_max_distance < 64
    assert t5.relative_num_buckets == 8
    tr = get_config("transformer-tiny")
    assert tr.norm_position == "post" and tr.position_embedding == "sinusoidal" and tr.is_encoder_decoder


# ------------------------------------------------------------------------------------- lookup and errors
def test_unknown_preset_suggests_close_matches():
    with pytest.raises(ValueError, match="unknown preset 'llama-7'.*llama-7b"):
        get_config("llama-7")
    with pytest.raises(ValueError, match="gpt3-small"):
        get_recipe("gpt3-smal")
    with pytest.raises(ValueError, match="gemma2-9b"):
        preset_family("gemma-9b")


def test_overrides():
    assert get_config("llama-tiny", num_layers=2).num_layers == 2
    assert get_config("llama-tiny", norm_eps=1).norm_eps == 1.0            # ints are fine for floats
    with pytest.raises(ValueError, match="norm_position"):
        get_config("llama-tiny", norm_postion="post")
    with pytest.raises(ValueError, match="norm_position"):
        get_config("llama-tiny", norm_position="sandwich")                 # ModelConfig validation


def test_inheritance_resolves_recursively():
    # llama2-70b <- llama2-7b <- llama-7b <- llama.yaml defaults
    c = get_config("llama2-70b")
    assert (c.max_seq_len, c.norm_eps, c.num_kv_heads, c.d_ff) == (4096, 1e-5, 8, 28672)
    assert c.vocab_size == 32000 and not c.tie_word_embeddings
    r = get_recipe("llama2-70b")
    assert (r["learning_rate"], r["batch_size"], r["seq_len"], r["warmup_steps"]) == (1.5e-4, 1024, 4096, 2000)
    # llama3.1-405b <- llama3.1-8b <- llama3-8b: RoPE scaling and the Llama 3 vocab come through.
    c = get_config("llama3.1-405b")
    assert (c.rope_scaling, c.rope_scaling_factor, c.rope_low_freq_factor, c.rope_high_freq_factor,
            c.rope_original_max_len, c.max_seq_len) == ("llama3", 8.0, 1.0, 4.0, 8192, 131072)
    assert (c.vocab_size, c.rope_theta, c.num_layers) == (128256, 500000.0, 126)
    # T5 v1.1 sizes inherit the v1.1 knobs from t5-v1_1-small; v1.0 keeps the family defaults.
    xl, small = get_config("t5-v1_1-xl"), get_config("t5-small")
    assert xl.mlp_activations == ("gelu_tanh", "linear") and not xl.tie_word_embeddings
    assert xl.residual_dropout == 0.0 and not xl.scale_logits_by_inv_sqrt_d_model
    assert small.mlp_activations == ("relu",) and small.tie_word_embeddings and small.residual_dropout == 0.1
    big = get_config("transformer-big")
    assert big.residual_dropout == 0.3 and big.norm_position == "post"
    assert get_recipe("transformer-big")["total_steps"] == 300_000
    assert get_recipe("transformer-big")["label_smoothing"] == 0.1


# --- loader errors, on throwaway config directories ---------------------------------------------------
FAMILY_TRAIN = "train: {optimizer: adamw, learning_rate: 1.0e-3}\n"
FAMILY_DEFAULTS = "defaults: {vocab_size: 64, d_model: 32, num_layers: 2, num_heads: 2, d_ff: 64, max_seq_len: 16}\n"


@pytest.fixture
def config_files(tmp_path, monkeypatch):
    """Write YAML files into a temporary config dir and point the loader at it."""
    def write(**files):
        for stem, text in files.items():
            (tmp_path / f"{stem}.yaml").write_text(text)
        presets._registry.cache_clear()
        return tmp_path
    monkeypatch.setattr(presets, "config_dir", lambda: tmp_path)
    presets._registry.cache_clear()
    yield write
    presets._registry.cache_clear()


def test_loader_accepts_a_minimal_family(config_files):
    config_files(fam=FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {model: {norm_eps: 1e-6}}\n"
                     "  b: {inherits: a, train: {learning_rate: 2e-3}}\n")
    assert presets.list_presets() == ["a", "b"] and preset_family("b") == "fam"
    assert get_config("b").norm_eps == 1e-6                   # `1e-6` is a float, not YAML 1.1's string
    assert get_recipe("b")["learning_rate"] == 2e-3 and get_recipe("a")["learning_rate"] == 1e-3


@pytest.mark.parametrize("text, match", [
    (FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {model: {norm_postion: post}}\n",
     r"bad\.yaml: preset 'a': unknown model key 'norm_postion'.*norm_position"),
    (FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {train: {learning_rat: 0.1}}\n",
     r"bad\.yaml: preset 'a': unknown train key 'learning_rat'.*learning_rate"),
    ("defaults: {d_modle: 32}\n" + FAMILY_TRAIN + "presets: {}\n",
     r"bad\.yaml: defaults: unknown model key 'd_modle'.*d_model"),
    (FAMILY_DEFAULTS + "training: {}\npresets: {}\n", r"bad\.yaml: unknown top-level key 'training'"),
    (FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {modle: {}}\n", r"bad\.yaml: preset 'a': unknown key 'modle'"),
    (FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {inherits: c}\n  b: {}\n",
     r"bad\.yaml: preset 'a' inherits unknown preset 'c'"),
    (FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {model: {norm_eps: '1e-6'}}\n",
     r"bad\.yaml: preset 'a': model\.norm_eps: expected float"),
    (FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {}\n  a: {}\n", r"bad\.yaml: invalid YAML.*duplicate key 'a'"),
])
def test_loader_errors_name_the_file_and_key(config_files, text, match):
    config_files(bad=text)
    with pytest.raises(ValueError, match=match):
        presets.list_presets()


def test_inheritance_cycle_is_an_error(config_files):
    config_files(fam=FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {inherits: b}\n  b: {inherits: c}\n"
                     "  c: {inherits: a}\n  d: {inherits: d}\n")
    with pytest.raises(ValueError, match="inheritance cycle: a -> b -> c -> a"):
        get_config("a")
    with pytest.raises(ValueError, match="inheritance cycle: d -> d"):
        get_recipe("d")


def test_duplicate_preset_across_files_is_an_error(config_files):
    config_files(one=FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {}\n",
                 two=FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {}\n")
    with pytest.raises(ValueError, match=r"two\.yaml: preset 'a': preset name already defined in configs/one\.yaml"):
        presets.list_presets()


def test_invalid_values_name_the_preset(config_files):
    config_files(fam=FAMILY_DEFAULTS + FAMILY_TRAIN + "presets:\n  a: {model: {num_heads: 3}}\n"
                     "  b: {train: {schedule: cosin}}\n")
    with pytest.raises(ValueError, match=r"fam\.yaml: preset 'a': ModelConfig\.num_heads"):
        get_config("a")
    with pytest.raises(ValueError, match=r"fam\.yaml: preset 'b': TrainConfig\.schedule"):
        get_recipe("b")


# ------------------------------------------------------------------------------------- published recipes
def test_gpt3_steps_are_the_papers_token_counts():
    # Appendix B: warmup over 375M tokens, cosine over 260B tokens; Table 2.1 batch sizes in tokens.
    batch_tokens = {"gpt3-small": 0.5e6, "gpt3-medium": 0.5e6, "gpt3-large": 0.5e6, "gpt3-xl": 1e6,
                    "gpt3-2.7b": 1e6, "gpt3-6.7b": 2e6, "gpt3-13b": 2e6, "gpt3-175b": 3.2e6}
    for name, tokens in batch_tokens.items():
        r = get_recipe(name)
        step = r["batch_size"] * r["seq_len"]
        assert step == pytest.approx(tokens, rel=0.05)
        assert abs(r["warmup_steps"] - 375e6 / step) <= 0.5 and abs(r["total_steps"] - 260e9 / step) <= 0.5
        assert (r["final_lr_fraction"], r["beta2"], r["weight_decay"], r["grad_clip_norm"]) == (0.1, 0.95, 0.1, 1.0)


def test_gpt3_lr_and_shapes_follow_table_2_1():
    table = {"gpt3-small": (12, 768, 12, 6.0e-4), "gpt3-medium": (24, 1024, 16, 3.0e-4),
             "gpt3-large": (24, 1536, 16, 2.5e-4), "gpt3-xl": (24, 2048, 16, 2.0e-4),
             "gpt3-2.7b": (32, 2560, 32, 1.6e-4), "gpt3-6.7b": (32, 4096, 32, 1.2e-4),
             "gpt3-13b": (40, 5120, 40, 1.0e-4), "gpt3-175b": (96, 12288, 96, 0.6e-4)}
    for name, (layers, d, heads, lr) in table.items():
        c = get_config(name)
        assert (c.num_layers, c.d_model, c.num_heads, c.d_ff) == (layers, d, heads, 4 * d)
        assert get_recipe(name)["learning_rate"] == pytest.approx(lr)


def test_gemma2_query_scale_is_query_pre_attn_scalar():
    for name, scalar in {"gemma2-2b": 256, "gemma2-9b": 256, "gemma2-27b": 144}.items():
        assert get_config(name).query_scale == pytest.approx(scalar ** -0.5, rel=1e-15)


# ------------------------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize("name", list(EXPECTED))
def test_param_count_matches_published_computation(name):
    from zoo import count_params      # the model; shape-only (jax.eval_shape), so 540B is fine
    assert count_params(get_config(name)) == EXPECTED[name].params, EXPECTED[name].source


# ---------------------------------------------------------------------------------------------- README
def _short(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M")):
        if n >= div:
            return f"{n / div:.2f}{unit}" if n < 100 * div else f"{n / div:.1f}{unit}"
    return f"{n / 1e3:.1f}K"


def preset_table() -> str:
    rows = ["| family | preset | published | our count | note |", "|---|---|---|---|---|"]
    for family in FAMILY_ORDER:
        for name in family_presets(family):
            c = EXPECTED[name]
            rows.append(f"| {family} | `{name}` | {c.published} | {c.params:,} ({_short(c.params)}) | {c.note} |")
    return "\n".join(rows)


# The paper(s) behind each knob, for the README's knob table.
PAPERS = {
    "architecture": "Vaswani 2017 (encoder-decoder); Radford 2018 (decoder-only)",
    "num_kv_heads": "MQA: Shazeer 2019; GQA: Ainslie 2023",
    "head_dim": "decoupled from d_model: PaLM (Chowdhery 2022), Gemma (Gemma Team 2024)",
    "num_decoder_layers": "Raffel 2020 (T5)",
    "norm_position": "post: Vaswani 2017; pre: Radford 2019, Xiong 2020; double: Gemma Team 2024; "
                     "output: OLMo 2 (2024)",
    "norm_type": "LayerNorm: Ba 2016; RMSNorm: Zhang & Sennrich 2019",
    "norm_eps": "",
    "norm_use_scale": "Ba 2016",
    "norm_use_bias": "Ba 2016; dropped by PaLM (Chowdhery 2022)",
    "norm_scale_plus_one": "Gemma (Gemma Team 2024)",
    "final_norm": "Radford 2019 (GPT-2's final LayerNorm)",
    "mlp_activations": "ReLU: Vaswani 2017; GELU: Hendrycks & Gimpel 2016; GLU variants: Shazeer 2020; "
                       "squared ReLU: So 2021",
    "mlp_bias": "Vaswani 2017; dropped by T5, PaLM, LLaMA",
    "parallel_layers": "GPT-J (Wang & Komatsuzaki 2021); PaLM (Chowdhery 2022)",
    "parallel_shared_norm": "shared: GPT-J, PaLM; separate: GPT-NeoX (Black 2022)",
    "attention_bias": "Vaswani 2017; dropped by T5, PaLM, LLaMA",
    "query_scale": "1/sqrt(d_k): Vaswani 2017; none: Raffel 2020; query_pre_attn_scalar: Gemma Team 2024",
    "qk_norm": "Henry 2020; Dehghani 2023; full: OLMo 2 (2024); per_head: Gemma 3 (2025)",
    "attn_logits_soft_cap": "Bello 2016; Gemma Team 2024",
    "attention_pattern": "alternating dense/local: Child 2019, Brown 2020; local/global: Gemma Team 2024",
    "sliding_window_size": "Child 2019; Beltagy 2020; Jiang 2023 (Mistral)",
    "position_embedding": "sinusoidal: Vaswani 2017; learned: Gehring 2017, Radford 2018; rope: Su 2021; "
                          "relative_bias: Raffel 2020; alibi: Press 2022; none: Kazemnejad 2023",
    "rope_theta": "Su 2021; 500000: Llama Team 2024",
    "rope_local_theta": "Gemma 3 (Gemma Team 2025)",
    "rope_fraction": "GPT-J (Wang & Komatsuzaki 2021); GPT-NeoX (Black 2022)",
    "rope_scaling": "linear: Chen 2023; llama3: Llama Team 2024",
    "rope_scaling_factor": "Chen 2023; Llama Team 2024",
    "rope_low_freq_factor": "Llama Team 2024",
    "rope_high_freq_factor": "Llama Team 2024",
    "rope_original_max_len": "Llama Team 2024",
    "relative_num_buckets": "Raffel 2020 (T5)",
    "relative_max_distance": "Raffel 2020 (T5)",
    "relative_bias_shared": "Raffel 2020 (T5)",
    "tie_word_embeddings": "Press & Wolf 2017; Inan 2017",
    "scale_embeddings": "Vaswani 2017 §3.4",
    "scale_logits_by_inv_sqrt_d_model": "Mesh TensorFlow T5; PaLM (Chowdhery 2022)",
    "final_logits_soft_cap": "Gemma Team 2024",
    "z_loss_multiplier": "PaLM (Chowdhery 2022); OLMo 2 (2024)",
    "embedding_dropout": "Srivastava 2014; Vaswani 2017 §5.4",
    "attention_dropout": "Srivastava 2014",
    "residual_dropout": "Srivastava 2014; Vaswani 2017 §5.4",
    "init_scheme": "xavier: Glorot & Bengio 2010; gpt2_scaled: Radford 2019; t5: Mesh TensorFlow; "
                   "fan_in: Chowdhery 2022; truncated_normal: OLMo 2 (2024)",
    "init_std": "",
    "scan_layers": "",
    "remat_policy": "Chen 2016 (gradient checkpointing)",
    "dtype": "Micikevicius 2018 (mixed precision)",
    "param_dtype": "",
    "attention_impl": "FlashAttention (Dao 2022)",
}
TABLE_SKIP = {"vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_seq_len"}   # sizes


def _allowed(field: dataclasses.Field) -> str:
    if field.name in CHOICES:
        return ", ".join(CHOICES[field.name])
    if field.name == "mlp_activations":
        return "1 or 2 of: " + ", ".join(ACTIVATIONS)
    if field.name == "attention_pattern":
        return "a cycle of: " + ", ".join(LAYER_KINDS)
    kind = str(field.type).replace(" | None", " or null").replace("tuple[str, ...]", "list")
    return {"bool": "true, false"}.get(kind, kind)


def _value_key(cfg: ModelConfig, name: str):
    """How a preset's value is shown: derived fields as categories, tuples as lists."""
    value = getattr(cfg, name)
    if name == "num_kv_heads":
        return "MHA" if value == cfg.num_heads else ("MQA (1)" if value == 1 else "GQA")
    if name == "head_dim":
        return "d_model / num_heads" if value * cfg.num_heads == cfg.d_model else "decoupled"
    if name == "num_decoder_layers":
        return "num_layers" if value == cfg.num_layers else value
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else format(value, ".4g").replace("e-0", "e-")
    return "null" if value is None else value


def _who(names: list[str], by_family: dict[str, list[str]]) -> str:
    out = []
    for family in FAMILY_ORDER:
        members = [n for n in by_family[family] if n in names]
        if members and members == by_family[family]:
            out.append(f"{family} (all)")
        else:
            out.extend(members)
    return ", ".join(out)


def knob_table() -> str:
    by_family = {f: [n for n in family_presets(f) if not n.endswith("-tiny")] for f in FAMILY_ORDER}
    configs = {n: get_config(n) for names in by_family.values() for n in names}
    rows = ["| field | values | presets that use it | paper |", "|---|---|---|---|"]
    for field in dataclasses.fields(ModelConfig):
        if field.name in TABLE_SKIP:
            continue
        users: dict = {}
        for name, cfg in configs.items():
            users.setdefault(_value_key(cfg, field.name), []).append(name)
        ordered = sorted(users.items(), key=lambda kv: -len(kv[1]))
        if len(ordered) == 1:
            used = f"`{ordered[0][0]}` (all)"
        else:
            used = "; ".join([f"`{ordered[0][0]}`: the rest"] +
                             [f"`{value}`: {_who(names, by_family)}" for value, names in ordered[1:]])
        rows.append(f"| `{field.name}` | {_allowed(field)} | {used} | {PAPERS.get(field.name, '')} |")
    return "\n".join(rows)


MARKERS = {
    "preset-table": preset_table,
    "knob-table": knob_table,
}


def _block(key: str) -> str:
    return (f"<!-- BEGIN {key}: generated by `python tests/test_presets.py --write-readme`; do not edit -->\n"
            f"{MARKERS[key]()}\n<!-- END {key} -->")


def test_readme_tables_are_current():
    readme = (REPO / "README.md").read_text()
    for key in MARKERS:
        assert _block(key) in readme, f"README {key} is stale: run `python tests/test_presets.py --write-readme`"


def write_readme() -> None:
    import re
    path = REPO / "README.md"
    text = path.read_text()
    for key in MARKERS:
        pattern = re.compile(rf"<!-- BEGIN {key}:.*?<!-- END {key} -->", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no {key} markers")
        text = pattern.sub(lambda _: _block(key), text)
    path.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-readme"]:
        write_readme()
    else:
        print(preset_table() + "\n\n" + knob_table())
