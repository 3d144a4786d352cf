"""Writes the README's generated tables: the presets with their published and exact parameter counts, and
every ModelConfig knob with the presets that use each value and the paper behind it.

    python tools/readme_tables.py --write     # rewrite the tables in README.md
    python tools/readme_tables.py             # print them

tests/test_readme.py fails when the README's tables differ from what this writes.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # a source checkout's zoo

from zoo.config import ModelConfig  # noqa: E402
from zoo.config_checks import ACTIVATIONS, CHOICES, LAYER_KINDS  # noqa: E402
from zoo.model import count_params  # noqa: E402
from zoo.presets import family_presets, get_config, list_families, published  # noqa: E402


def _short(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M")):
        if n >= div:
            return f"{n / div:.2f}{unit}" if n < 100 * div else f"{n / div:.1f}{unit}"
    return f"{n / 1e3:.1f}K"


def preset_table() -> str:
    rows = ["| family | preset | published | our count | note |", "|---|---|---|---|---|"]
    for family in list_families():
        for name in family_presets(family):
            cfg = get_config(name)
            record, params = published(name), count_params(cfg)
            label, note = (record.label, record.note) if record is not None else ("-", "our size")
            ours = f"{params:,} ({_short(params)})"
            if cfg.is_moe:  # mixture of experts: the parameters one token uses, after the total
                active = count_params(cfg, active=True)
                ours += f"; active {active:,} ({_short(active)})"
                label += f"; active {record.active_label}" if record is not None and record.active_label else ""
            rows.append(f"| {family} | `{name}` | {label} | {ours} | {note} |")
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
    "mlp_glu_limit": "gpt-oss (OpenAI 2025)",
    "mlp_glu_linear_offset": "gpt-oss (OpenAI 2025)",
    "parallel_layers": "GPT-J (Wang & Komatsuzaki 2021); PaLM (Chowdhery 2022)",
    "num_experts": "Shazeer 2017; GShard (Lepikhin 2020); Switch (Fedus 2021)",
    "experts_per_token": "top-2: Shazeer 2017, GShard; top-1: Switch (Fedus 2021)",
    "d_expert": "fine-grained experts: DeepSeekMoE (Dai 2024), OLMoE (Muennighoff 2024)",
    "moe_pattern": "every other layer: GShard (Lepikhin 2020), Switch (Fedus 2021)",
    "dense_prefix_layers": "DeepSeekMoE (Dai 2024, §5.1)",
    "router": "softmax then top-k: Shazeer 2017, Switch; top-k then softmax: Mixtral (Jiang 2024); sigmoid: "
    "DeepSeek-V3 (DeepSeek-AI 2024, eq. 15)",
    "router_renormalize": "Qwen-MoE, OLMoE, DeepSeek-V3 (norm_topk_prob)",
    "router_balance_bias": "auxiliary-loss-free balancing: DeepSeek-V3 (DeepSeek-AI 2024, §2.1.2); Wang 2024",
    "router_groups": "device-limited routing: DeepSeek-V2 (DeepSeek-AI 2024, §2.2.2)",
    "router_groups_per_token": "DeepSeek-V2 (DeepSeek-AI 2024, §2.2.2)",
    "router_group_score_experts": "best one: DeepSeek-V2; best two: DeepSeek-V3 (DeepSeek-AI 2024)",
    "router_weight_scale": "DeepSeek-V2 (DeepSeek-AI 2024, routed_scaling_factor)",
    "router_bias": "",
    "router_weights_input": "Llama 4 (Meta 2025; meta-llama/llama-models models/llama4/moe.py)",
    "router_jitter": "Switch (Fedus 2021, §2.4)",
    "shared_expert_d_ff": "DeepSeekMoE (Dai 2024); Qwen1.5-MoE (Qwen Team 2024)",
    "shared_expert_gate": "Qwen1.5-MoE (Qwen Team 2024)",
    "capacity_factor": "GShard (Lepikhin 2020); Switch (Fedus 2021); dropless: MegaBlocks (Gale 2022)",
    "eval_capacity_factor": "Switch (Fedus 2021); ST-MoE (Zoph 2022)",
    "load_balancing_multiplier": "Switch (Fedus 2021, eq. 4)",
    "load_balancing_per_sequence": "DeepSeek-V3 (DeepSeek-AI 2024, eqs. 17-20)",
    "router_z_loss_multiplier": "ST-MoE (Zoph 2022, eq. 5)",
    "moe_matmul": "grouped matmul: MegaBlocks (Gale 2022)",
    "parallel_shared_norm": "shared: GPT-J, PaLM; separate: GPT-NeoX (Black 2022)",
    "attention_bias": "Vaswani 2017; dropped by T5, PaLM, LLaMA",
    "attention_out_bias": "q/k/v bias without an output bias: Qwen2 (Yang 2024), Qwen2.5 (Qwen Team 2024)",
    "query_scale": "1/sqrt(d_k): Vaswani 2017; none: Raffel 2020; query_pre_attn_scalar: Gemma Team 2024",
    "qk_norm": "Henry 2020; Dehghani 2023; full: OLMo 2 (2024); per_head: Gemma 3 (2025); "
    "per_head_untied: Command R+ (Cohere 2024); per_head_no_gain: Llama 4 (Meta 2025)",
    "qk_norm_nope_layers": "RoPE layers only: Llama 4 (Meta 2025)",
    "kv_latent_dim": "multi-head latent attention: DeepSeek-V2 (DeepSeek-AI 2024, §2.1)",
    "q_latent_dim": "DeepSeek-V2 (DeepSeek-AI 2024, §2.1.2)",
    "rope_head_dim": "decoupled RoPE: DeepSeek-V2 (DeepSeek-AI 2024, §2.1.3)",
    "value_head_dim": "DeepSeek-V2 (DeepSeek-AI 2024)",
    "attention_sinks": "learned sinks: gpt-oss (OpenAI 2025); sinks: Xiao 2023",
    "attn_logits_soft_cap": "Bello 2016; Gemma Team 2024",
    "clip_qkv": "DBRX (Databricks 2024)",
    "attention_pattern": "alternating dense/local: Child 2019, Brown 2020; local/global: Gemma Team 2024; "
    "chunked/NoPE: Llama 4 (Meta 2025)",
    "sliding_window_size": "Child 2019; Beltagy 2020; Jiang 2023 (Mistral)",
    "attention_chunk_size": "Llama 4 (Meta 2025; transformers' attention_chunk_size)",
    "attention_temperature_floor": "Llama 4 (Meta 2025); scalable softmax: Nakanishi 2025",
    "attention_temperature_scale": "Llama 4 (Meta 2025)",
    "position_embedding": "sinusoidal: Vaswani 2017; learned: Gehring 2017, Radford 2018; rope: Su 2021; "
    "relative_bias: Raffel 2020; alibi: Press 2022; transformer_xl: Dai 2019 (Gopher, "
    "Rae 2021); none: Kazemnejad 2023",
    "rope_theta": "Su 2021; 500000: Llama Team 2024",
    "rope_local_theta": "Gemma 3 (Gemma Team 2025)",
    "rope_fraction": "GPT-J (Wang & Komatsuzaki 2021); GPT-NeoX (Black 2022)",
    "rope_interleaved": "GPT-J (Wang & Komatsuzaki 2021); Command R (Cohere 2024)",
    "rope_scaling": "linear: Chen 2023; llama3: Llama Team 2024; yarn: Peng 2023",
    "rope_scaling_factor": "Chen 2023; Llama Team 2024",
    "rope_scaling_local": "global layers only: Gemma 3 (Gemma Team 2025)",
    "rope_low_freq_factor": "Llama Team 2024",
    "rope_high_freq_factor": "Llama Team 2024",
    "rope_original_max_len": "Llama Team 2024; YaRN (Peng 2023)",
    "rope_yarn_beta_fast": "YaRN (Peng 2023, §3.2)",
    "rope_yarn_beta_slow": "YaRN (Peng 2023, §3.2)",
    "rope_yarn_truncate": "transformers' YaRN (truncate)",
    "rope_attention_factor": "YaRN (Peng 2023, §3.4)",
    "relative_num_buckets": "Raffel 2020 (T5)",
    "relative_max_distance": "Raffel 2020 (T5)",
    "relative_bias_shared": "Raffel 2020 (T5)",
    "position_offset": "OPT (Zhang 2022; fairseq's padding offset)",
    "tie_word_embeddings": "Press & Wolf 2017; Inan 2017",
    "lm_head_bias": "GPT-J (Wang & Komatsuzaki 2021)",
    "embedding_dim": "OPT-350m (Zhang 2022): project_in / project_out",
    "embedding_norm": "BLOOM (BigScience 2022); Dettmers 2022 (StableEmbedding)",
    "scale_embeddings": "Vaswani 2017 §3.4",
    "scale_logits_by_inv_sqrt_d_model": "Mesh TensorFlow T5; PaLM (Chowdhery 2022)",
    "logits_scale": "Command R (Cohere 2024): logit_scale",
    "final_logits_soft_cap": "Gemma Team 2024",
    "z_loss_multiplier": "PaLM (Chowdhery 2022); OLMo 2 (2024)",
    "mtp_depth": "DeepSeek-V3 (DeepSeek-AI 2024, §2.2); Gloeckle 2024",
    "embedding_dropout": "Srivastava 2014; Vaswani 2017 §5.4",
    "attention_dropout": "Srivastava 2014",
    "residual_dropout": "Srivastava 2014; Vaswani 2017 §5.4",
    "mlp_hidden_dropout": "Mesh TensorFlow T5 (Raffel 2020)",
    "final_norm_dropout": "Mesh TensorFlow T5 (Raffel 2020)",
    "init_scheme": "xavier: Glorot & Bengio 2010; gpt2_scaled: Radford 2019; t5: Mesh TensorFlow; "
    "fan_in: Chowdhery 2022; truncated_normal: OLMo 2 (2024)",
    "init_std": "",
    "scan_layers": "",
    "remat_policy": "Chen 2016 (gradient checkpointing)",
    "dtype": "Micikevicius 2018 (mixed precision)",
    "param_dtype": "",
    "attention_impl": "FlashAttention (Dao 2022)",
}
TABLE_SKIP = {"vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_seq_len"}  # sizes


def _allowed(field: dataclasses.Field) -> str:
    if field.name in CHOICES:
        return ", ".join(CHOICES[field.name])
    if field.name == "mlp_activations":
        return "1 or 2 of: " + ", ".join(ACTIVATIONS)
    if field.name == "attention_pattern":
        return "a cycle of: " + ", ".join(LAYER_KINDS)
    kind = str(field.type).replace(" | None", " or null").replace("tuple[str, ...]", "list")
    if field.default is None and not kind.endswith(" or null"):  # a DERIVED field (zoo.fields.DERIVED)
        kind += " or null"
    return {"bool": "true, false"}.get(kind, kind)


# Fields ModelConfig derives when a preset leaves them unset (null; ModelConfig._derived), and how the knob
# table names the derived value: a preset with that value is shown under it, so the row lists only the presets
# that set something else.
DERIVED = {
    "num_kv_heads": "num_heads (MHA)",
    "head_dim": "d_model / num_heads",
    "num_decoder_layers": "num_layers",
    "attention_out_bias": "attention_bias",
    "embedding_dim": "d_model",
    "d_expert": "d_ff",
    "value_head_dim": "head_dim",
}


def _derived_value(cfg: ModelConfig, name: str):
    """What `name` would be were it left unset (ModelConfig's own rule), or None when it cannot be derived
    (head_dim when num_heads does not divide d_model)."""
    try:
        return getattr(cfg.replace(**{name: None}), name)
    except ValueError:
        return None


def _value_key(cfg: ModelConfig, name: str):
    """How a preset's value is shown: a derived field's derived value as ("derived", DERIVED[name]) (whether
    the preset leaves it unset or sets the same value), GQA / MQA and a decoupled head_dim as categories,
    tuples as lists."""
    value = getattr(cfg, name)
    if name in cfg._derived and name not in DERIVED:
        raise SystemExit(f"ModelConfig derives {name!r}: name its derived value in DERIVED (tools/readme_tables.py)")
    if name in DERIVED and value == _derived_value(cfg, name):
        return ("derived", DERIVED[name])
    if name == "num_kv_heads":
        return "MQA (1)" if value == 1 else "GQA"
    if name == "head_dim":
        return "decoupled"
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else format(value, ".4g").replace("e-0", "e-")
    return "null" if value is None else value


def _label(key, all_presets: bool = False) -> str:
    """`value`, or `rule` (derived) for a derived value (a ("derived", rule) key); "all" when every preset
    has it."""
    if isinstance(key, tuple):
        return f"`{key[1]}` (derived{', all' if all_presets else ''})"
    return f"`{key}`" + (" (all)" if all_presets else "")


def _who(names: list[str], by_family: dict[str, list[str]]) -> str:
    out = []
    for family in list_families():
        members = [n for n in by_family[family] if n in names]
        if members and members == by_family[family]:
            out.append(f"{family} (all)")
        else:
            out.extend(members)
    return ", ".join(out)


def knob_table() -> str:
    by_family = {f: [n for n in family_presets(f) if not n.endswith("-tiny")] for f in list_families()}
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
            used = _label(ordered[0][0], all_presets=True)
        else:
            used = "; ".join(
                [f"{_label(ordered[0][0])}: the rest"]
                + [f"{_label(value)}: {_who(names, by_family)}" for value, names in ordered[1:]]
            )
        rows.append(f"| `{field.name}` | {_allowed(field)} | {used} | {PAPERS.get(field.name, '')} |")
    return "\n".join(rows)


MARKERS = {
    "preset-table": preset_table,
    "knob-table": knob_table,
}


def block(key: str) -> str:
    """The README text between (and including) the markers of table `key`."""
    return (
        f"<!-- BEGIN {key}: generated by `python tools/readme_tables.py --write`; do not edit -->\n"
        f"{MARKERS[key]()}\n<!-- END {key} -->"
    )


def write_readme() -> None:
    path = REPO / "README.md"
    text = path.read_text()
    for key in MARKERS:
        pattern = re.compile(rf"<!-- BEGIN {key}:.*?<!-- END {key} -->", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no {key} markers")
        text = pattern.sub(lambda _, key=key: block(key), text)
    path.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_readme()
    else:
        print(preset_table() + "\n\n" + knob_table())
