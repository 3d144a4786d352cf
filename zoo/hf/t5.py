"""T5 (T5ForConditionalGeneration): encoder-decoder, pre-RMSNorm, unscaled attention, one relative-position
bias table per stack. v1.0: ReLU MLP, head tied to the embedding and its input rescaled by d_model**-0.5;
v1.1 / flan-t5: gated-GELU MLP, separate head, no rescale."""

from __future__ import annotations

from zoo.config import ModelConfig
from zoo.hf.core import (
    HF_ACTIVATIONS,
    SAME,
    Family,
    HFConfig,
    Weights,
    attention_rules,
    embedding_rules,
    hf_activation,
    mlp_rules,
    norm_rules,
    rule,
)


def _weights(cfg: ModelConfig) -> Weights:
    mlp = {"wi_0": "wi_0", "wi_1": "wi_1", "wo": "wo"} if cfg.is_gated else {"wi": "wi", "wo": "wo"}
    names = ("q", "k", "v", "o")
    stacks = []
    for stack, n in (("encoder", cfg.num_layers), ("decoder", cfg.num_decoder_layers)):
        p = f"{stack}.block.{{i}}.layer"
        rules = attention_rules(cfg, f"{p}.0.SelfAttention", "attention", names)
        rules += norm_rules(f"{p}.0.layer_norm", "attn_norm", cfg)
        ff = 1
        if stack == "decoder":
            rules += attention_rules(cfg, f"{p}.1.EncDecAttention", "cross_attention", names)
            rules += norm_rules(f"{p}.1.layer_norm", "cross_norm", cfg)
            ff = 2
        rules += mlp_rules(cfg, f"{p}.{ff}.DenseReluDense", mlp)
        rules += norm_rules(f"{p}.{ff}.layer_norm", "mlp_norm", cfg)
        stacks.append((stack, n, rules))
    top = embedding_rules(cfg, "shared.weight")
    for stack in ("encoder", "decoder"):
        # HF keeps the stack's one bias table in its first layer; the zoo keeps it on the stack.
        top.append(
            rule(
                f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", f"{stack}/relative_bias", SAME
            )
        )
        top += norm_rules(f"{stack}.final_layer_norm", f"{stack}/final_norm", cfg)
    return Weights(top, stacks)


def _to_zoo(hf: HFConfig) -> dict:
    proj = hf.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    act = parts[-1]
    if gated and act == "gelu":
        act = "gelu_new"  # HF: "gated-gelu" (T5 v1.1, flan-t5) means the tanh approximation
    if len(parts) > 2 or (len(parts) == 2 and not gated) or act not in HF_ACTIVATIONS:
        hf.fail("feed_forward_proj", "must be ACT or gated-ACT with ACT one of " + ", ".join(HF_ACTIVATIONS))
    act = HF_ACTIVATIONS[act]
    # transformers 4 rescaled the decoder output by d_model**-0.5 exactly when the head is tied (v1.0);
    # transformers 5 writes that choice as `scale_decoder_outputs`. Tying itself is decided by the checkpoint.
    tied = hf.get("tie_word_embeddings", True) is not False
    return {
        "mlp_activations": (act, "linear") if gated else (act,),
        "tie_word_embeddings": tied,
        "scale_logits_by_inv_sqrt_d_model": bool(hf.get("scale_decoder_outputs", tied)),
        **dropout_to_zoo(hf),
    }


def dropout_to_zoo(hf: HFConfig) -> dict:
    """HF's T5 (and Switch) apply dropout_rate at every Mesh TF site: embeddings, attention, sublayer outputs, the
    MLP's hidden activation (T5DenseActDense) and after each stack's final norm (T5Stack)."""
    return dict.fromkeys(
        ("embedding_dropout", "attention_dropout", "residual_dropout", "mlp_hidden_dropout", "final_norm_dropout"),
        hf.get("dropout_rate", 0.1),
    )


def check_rescale_when_tied(cfg: ModelConfig, family: str) -> None:
    """transformers 4.x's T5 and Switch rescale the decoder output by d_model**-0.5 exactly when the head is tied."""
    if cfg.scale_logits_by_inv_sqrt_d_model != cfg.tie_word_embeddings:
        raise ValueError(
            f"ModelConfig.scale_logits_by_inv_sqrt_d_model={cfg.scale_logits_by_inv_sqrt_d_model} with "
            f"tie_word_embeddings={cfg.tie_word_embeddings} cannot be expressed as HF {family}: it "
            "rescales the decoder output exactly when the head is tied"
        )


def _to_hf(cfg: ModelConfig) -> dict:
    check_rescale_when_tied(cfg, "t5")
    first = cfg.mlp_activations[0]
    # "gated-gelu" is the tanh approximation, an ungated "gelu_new" too (see _to_zoo).
    proj = f"gated-{hf_activation(first, 'gelu')}" if cfg.is_gated else hf_activation(first, "gelu_new")
    return {
        "feed_forward_proj": proj,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "scale_decoder_outputs": cfg.scale_logits_by_inv_sqrt_d_model,
        "dropout_rate": cfg.residual_dropout,
        "is_encoder_decoder": True,
    }


FAMILY = Family(
    model_type="t5",
    hf_class="T5ForConditionalGeneration",
    renames={
        "vocab_size": ("vocab_size", 32128),
        "d_model": ("d_model", 512),
        "d_kv": ("head_dim", 64),
        "d_ff": ("d_ff", 2048),
        "num_layers": ("num_layers", 6),
        "num_decoder_layers": ("num_decoder_layers", None),
        "num_heads": ("num_heads", 8),
        "relative_attention_num_buckets": ("relative_num_buckets", 32),
        "relative_attention_max_distance": ("relative_max_distance", 128),
        "layer_norm_epsilon": ("norm_eps", 1e-6),
        "n_positions": ("max_seq_len", 512),
    },
    fixed={
        "architecture": "encoder_decoder",
        "norm_position": "pre",
        "norm_type": "rmsnorm",
        "norm_use_bias": False,
        "norm_scale_plus_one": False,
        "final_norm": True,
        "attention_bias": False,
        "mlp_bias": False,
        "query_scale": 1.0,
        "qk_norm": "none",
        "position_embedding": "relative_bias",
        "relative_bias_shared": True,
        "attention_pattern": ("global",),
        "scale_embeddings": False,
        "attn_logits_soft_cap": None,
        "final_logits_soft_cap": None,
        "init_scheme": "t5",
    },
    unsupported={},
    to_zoo=_to_zoo,
    to_hf=_to_hf,
    weights=_weights,
    embedding="shared.weight",
    # Tied copies of shared.weight, and a cross-attention bias table T5 never reads.
    ignored=(
        r"^(encoder|decoder)\.embed_tokens\.weight$",
        r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$",
    ),
)
