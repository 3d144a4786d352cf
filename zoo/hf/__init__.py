"""Hugging Face transformers checkpoints <-> zoo (config + params), one mapping table per family.

    cfg, params = zoo.hf.load("hf_dir")           # config.json + *.safetensors (sharded or not)
    zoo.hf.save(cfg, params, "out_dir")             # AutoModelFor{CausalLM,Seq2SeqLM}.from_pretrained("out_dir")

Families: gpt2, t5 (v1.0 relu/tied/rescaled and v1.1 gated-gelu/untied), llama (GQA, MQA, explicit head_dim,
linear and llama3 RoPE scaling, biases; also Yi), gemma2, olmo2, mistral, qwen2 (Qwen2.5), qwen3, phi3 (fused
qkv_proj / gate_up_proj), opt, bloom, falcon, cohere, cohere2, gpt_neox (GPT-NeoX, Pythia), gptj, gemma3_text
(Gemma 3's text model), nemotron; mixtures of experts: mixtral, qwen2_moe, qwen3_moe, olmoe, dbrx.
A family is data (`core.Family`), one module each (`zoo/hf/<model_type>.py`, listed in `families.FAMILIES`),
holding:
  * `renames`: HF config field <-> ModelConfig field, copied as is (with HF's default when absent);
  * `fixed`: the ModelConfig values the HF architecture hard-codes (where norms sit, which norm, ...);
  * `unsupported`: HF fields whose other values the zoo cannot express;
  * `to_zoo` / `to_hf`: the few fields that need more than a rename (activations, RoPE, layer types);
  * `weights`: HF tensor name(s) <-> zoo param path(s), each with the reshape/transpose between them;
  * `ignored`: tensors some checkpoints carry that HF ignores too (buffers, tied copies).

An HF config value the zoo cannot express raises ValueError naming the HF field. `save` maps the config to
HF and back and refuses a ModelConfig that would not come back unchanged, naming the ModelConfig field
(training-only fields such as dropout rates are exported where HF has them, and otherwise not checked).

Memory: tensors are read one at a time from memory-mapped safetensors files; a scanned stack's leaf is
assembled in one preallocated array; `save` converts and writes one tensor at a time. No pickle, no torch:
files are read with the `safetensors` library's numpy reader and written by `safetensors_io`'s streaming
writer.
"""

from zoo.hf.convert import load, load_config, save
from zoo.hf.families import FAMILIES, config_from_hf, config_to_hf, family_of

__all__ = ["FAMILIES", "config_from_hf", "config_to_hf", "family_of", "load", "load_config", "save"]
