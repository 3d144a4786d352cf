"""Model FLOPs (zoo/flops.py, what MFU divides): matmul_params counts the dense kernels applied to every token
and nothing else (no norm gains, biases, Transformer-XL u/v/W_r, relative-bias tables or embeddings),
checked against hand counts."""

from zoo.config import ModelConfig
from zoo.flops import flops_per_step, matmul_params
from zoo.model import count_params
from zoo.presets import get_config


def test_tiny_transformer_xl_with_biases_counts_only_kernels():
    """Gopher's tiny sibling with LayerNorm (gain and bias), q/k/v/o and MLP biases: every other parameter
    is left out of the matmul count, and the two counts together add up to count_params."""
    cfg = get_config("gopher-tiny").replace(
        norm_type="layernorm", norm_use_bias=True, attention_bias=True, mlp_bias=True
    )
    assert cfg.position_embedding == "transformer_xl" and cfg.tie_word_embeddings and cfg.final_norm
    d, h, hd, ff, layers, vocab = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff, cfg.num_layers, cfg.vocab_size
    assert (d, h, cfg.num_kv_heads, hd, ff, layers, cfg.mlp_activations) == (256, 4, 4, 64, 1024, 4, ("gelu",))
    kernels = layers * (4 * d * h * hd + 2 * d * ff)  # q, k, v, o; wi, wo
    assert matmul_params(cfg) == {"encoder": 0, "decoder": kernels, "cross_kv": 0, "mtp": 0, "head": d * vocab}
    assert kernels == 3_145_728

    biases = layers * (3 * h * hd + d + ff + d)  # q, k, v; o; wi; wo
    norms = (2 * layers + 1) * 2 * d  # attn and mlp norms + the final norm: gain, bias
    transformer_xl = layers * (2 * h * hd + d * h * hd)  # u, v; W_r (applied to the sinusoid table)
    assert count_params(cfg) == kernels + biases + norms + transformer_xl + vocab * d  # tied embedding


def test_encoder_decoder_leaves_out_relative_bias_tables():
    cfg = get_config("t5-tiny")
    d, h, hd, ff, layers = cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff, cfg.num_layers
    assert cfg.position_embedding == "relative_bias" and len(cfg.mlp_activations) == 2 and not cfg.attention_bias
    attention, mlp = 4 * d * h * hd, 3 * d * ff  # gated MLP: wi_0, wi_1, wo
    cross_q_o = 2 * d * h * hd  # cross-attention's k, v go to cross_kv
    assert matmul_params(cfg) == {
        "encoder": layers * (attention + mlp),
        "decoder": cfg.num_decoder_layers * (attention + cross_q_o + mlp),
        "cross_kv": cfg.num_decoder_layers * 2 * d * h * hd,
        "mtp": 0,
        "head": d * cfg.vocab_size,
    }


def test_llama2_7b_is_count_params_less_embeddings_and_norm_gains():
    cfg = get_config("llama2-7b")
    d, layers, vocab, ff = cfg.d_model, cfg.num_layers, cfg.vocab_size, cfg.d_ff
    n = matmul_params(cfg)
    embeddings = 2 * vocab * d  # token embedding + untied lm_head
    norm_gains = (2 * layers + 1) * d
    assert n["decoder"] == count_params(cfg) - embeddings - norm_gains == layers * (4 * d * d + 3 * d * ff)
    assert n["decoder"] == 6_476_005_376 and n["head"] == vocab * d
    # 6N + attention (PaLM App. B): N = decoder kernels + head, 12 * d_attn * T per layer per token
    t = 2048
    per_token = 6 * (n["decoder"] + n["head"]) + 12 * d * layers * t
    assert flops_per_step(cfg, batch_size=3, seq_len=t) == 3 * t * per_token


def test_a_mixture_of_experts_counts_what_one_token_multiplies():
    """Grok's tiny sibling (GeGLU experts, k = 2 of E = 4) with a gated shared expert: a token multiplies the
    router, the shared expert and its gate, and k experts, so its matmul count is a dense model's with
    d_ff = k * d_expert + shared_expert_d_ff, plus the router and the gate; count_params(active=True) drops the
    same E - k experts from the total. Switch's dense-MoE interleave counts only its MoE layers' experts."""
    cfg = get_config("grok-tiny").replace(shared_expert_d_ff=64, shared_expert_gate=True)
    d, k, e, layers = cfg.d_model, cfg.experts_per_token, cfg.num_experts, cfg.num_layers
    assert (k, e, cfg.d_expert, cfg.is_gated) == (2, 4, 384, True)
    unset = ("experts_per_token", "d_expert", "shared_expert_d_ff", "shared_expert_gate", "load_balancing_multiplier")
    defaults = {f: ModelConfig.__dataclass_fields__[f].default for f in (*unset, "router_z_loss_multiplier")}
    dense = cfg.replace(num_experts=0, d_ff=k * cfg.d_expert + 64, **defaults)
    routing = layers * (d * e + d)  # router [d, E] and the shared expert's gate [d, 1]
    assert matmul_params(cfg)["decoder"] == matmul_params(dense)["decoder"] + routing
    unused = layers * (e - k) * 3 * d * cfg.d_expert  # the experts a token skips
    assert count_params(cfg, active=True) == count_params(cfg) - unused
    assert flops_per_step(cfg, 2, 64) == flops_per_step(dense, 2, 64) + 6 * routing * 2 * 64

    every_other = cfg.replace(
        num_layers=4, moe_pattern=("dense", "moe"), shared_expert_d_ff=0, shared_expert_gate=False
    )
    moe_layers = 2
    expected = 2 * 3 * d * cfg.d_ff + moe_layers * (d * e + k * 3 * d * cfg.d_expert)  # MLPs: 2 dense, 2 MoE
    attention = 4 * (2 * d * cfg.num_heads * cfg.head_dim + 2 * d * cfg.num_kv_heads * cfg.head_dim)
    assert matmul_params(every_other)["decoder"] == expected + attention


def test_multi_token_prediction_adds_its_modules_and_heads():
    """mtp_depth 2 on a dense model: each module's join (2d x d) and block count in "mtp"; the step adds, per token,
    6 x (those + 2 heads) and 2 more layers' attention, exactly as for two more layers of the stack."""
    cfg = get_config("llama-tiny")
    deep = cfg.replace(mtp_depth=2)
    d, layers = cfg.d_model, cfg.num_layers
    block = matmul_params(cfg)["decoder"] // layers
    assert matmul_params(deep)["mtp"] == 2 * (2 * d * d + block)
    extra = flops_per_step(deep, 4, 64) - flops_per_step(cfg, 4, 64)
    stack_layer = flops_per_step(cfg.replace(num_layers=layers + 1), 4, 64) - flops_per_step(cfg, 4, 64)
    assert extra == 2 * (stack_layer + 6 * (2 * d * d + matmul_params(cfg)["head"]) * 4 * 64)
