"""Every named preset's exact parameter count, with its source: what tests/test_presets.py asserts
`zoo.count_params` against, and what the README's preset table (tools/readme_tables.py) shows."""

from __future__ import annotations

from typing import NamedTuple

# The families in the README's order (chronological).
FAMILY_ORDER = ("transformer", "gpt2", "gpt3", "t5", "llama", "palm", "gemma2", "olmo2")

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

