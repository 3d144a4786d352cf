"""ModelConfig: every architectural knob of the zoo as one frozen, validated dataclass.

A preset (``configs/*.yaml``) is nothing but values for these fields. Layers read the config and never
a model name, so any knob combines with any other. Validation runs once, in ``__post_init__``; every
error names the field and the values it accepts. The allowed values and the checks are in zoo/config_checks.py.
"""

from __future__ import annotations

import dataclasses
import math

from zoo import applicability
from zoo.config_checks import derivations, validate
from zoo.fields import DERIVED, Replaceable


@dataclasses.dataclass(frozen=True)
class ModelConfig(Replaceable):
    """Every knob of a zoo transformer. Field docs say what each value does; README has the paper map."""

    # --- sizes -------------------------------------------------------------------------------
    vocab_size: int
    """Rows of the token embedding (padded vocabularies count their padding rows)."""
    d_model: int
    """Width of the residual stream."""
    num_layers: int
    """Blocks in the decoder stack (decoder-only) or in the encoder stack (encoder-decoder)."""
    num_heads: int
    """Query heads per attention layer."""
    d_ff: int
    """Hidden width of the MLP (per branch for gated MLPs)."""
    max_seq_len: int
    """Longest sequence the model accepts (rows of learned positions; the context RoPE models were trained at)."""
    num_kv_heads: int = DERIVED
    """Key/value heads: num_heads (None) is MHA, 1 is MQA (Shazeer 2019), in between is GQA (Ainslie 2023)."""
    head_dim: int = DERIVED
    """Width of each head; independent of d_model (Gemma 2, PaLM). None = d_model // num_heads."""
    architecture: str = "decoder_only"
    """decoder_only (GPT, LLaMA, ...) or encoder_decoder (original Transformer, T5)."""
    num_decoder_layers: int = DERIVED
    """Blocks in the decoder of an encoder-decoder model. None = num_layers."""

    # --- normalisation -------------------------------------------------------------------------
    norm_position: str = "pre"
    """Where each sublayer's norm sits. pre: x + f(norm(x)) (GPT-2 onwards); post: norm(x + f(x))
    (Vaswani 2017); double: x + norm(f(norm(x))) (Gemma 2, Grok); output: x + norm(f(x)) (OLMo 2)."""
    norm_type: str = "rmsnorm"
    """layernorm (mean-centred, Ba 2016) or rmsnorm (Zhang & Sennrich 2019; T5's scale-only norm is this)."""
    norm_eps: float = 1e-5
    """Epsilon inside the norm's square root."""
    norm_use_scale: bool = True
    """Learned per-channel gain on every norm."""
    norm_use_bias: bool = False
    """Learned bias on LayerNorms (GPT-2, Vaswani). Must be False for rmsnorm."""
    norm_scale_plus_one: bool = False
    """Gemma's parametrisation: the gain is (1 + scale) with scale initialised at 0."""
    final_norm: bool = True
    """Norm after the last block (absent in post-norm stacks, whose blocks already end in a norm)."""

    # --- MLP -------------------------------------------------------------------------------------
    mlp_activations: tuple[str, ...] = ("silu", "linear")
    """One entry: plain MLP act(x W1) W2. Two entries: GLU, act0(x W) * act1(x V) W2 (Shazeer 2020):
    ("relu","linear") ReGLU, ("gelu_tanh","linear") GeGLU, ("silu","linear") SwiGLU."""
    mlp_glu_limit: float | None = None
    """Gated MLPs: the gate branch clamped above at the limit and the linear branch to [-limit, limit] before
    they meet (gpt-oss: 7; transformers models/gpt_oss/modeling_gpt_oss.py, GptOssExperts._apply_gate). None = off."""
    mlp_glu_linear_offset: float = 0.0
    """Gated MLPs: added to the linear branch, act0(gate) * (act1(linear) + offset) (gpt-oss: 1)."""
    mlp_bias: bool = False
    """Bias on the MLP's dense layers."""
    parallel_layers: bool = False
    """x + attn(norm(x)) + mlp(norm(x)) instead of the serial block (GPT-J, PaLM, GPT-NeoX, Cohere)."""
    parallel_shared_norm: bool = True
    """With parallel_layers: one norm feeds both branches (GPT-J, PaLM) or each has its own (NeoX)."""

    # --- mixture of experts ----------------------------------------------------------------------
    num_experts: int = 0
    """Routed expert MLPs in each MoE layer (Shazeer 2017; GShard; Switch). 0 = a dense MLP in every layer."""
    experts_per_token: int = 2
    """k: the experts each token is sent to, the top k of the router's scores (Switch 1, Mixtral 2)."""
    d_expert: int = DERIVED
    """Hidden width of each routed expert (per branch when gated). None = d_ff."""
    moe_pattern: tuple[str, ...] = ("moe",)
    """Per-layer MLP kinds, cycled over the stack like attention_pattern: moe or dense. Switch: ("dense","moe")."""
    dense_prefix_layers: int = 0
    """The first N layers of each stack have the dense MLP whatever moe_pattern says, which governs the rest
    (DeepSeekMoE 16B, Dai 2024, §5.1: its first layer stays dense, whose load balance converges slowest; HF's
    first_k_dense_replace). A whole number of cycles; scanned apart from the others (params `prefix_cycles`)."""
    router: str = "softmax_topk"
    """softmax_topk: softmax over all experts, then the top k probabilities (Switch, Qwen-MoE, OLMoE);
    topk_softmax: the top k logits, softmax over those (Mixtral's reference, mistralai/mistral-src
    one_file_ref.py MoeLayer.forward); sigmoid_topk: each expert's own sigmoid, the top k of those (DeepSeek-V3,
    arXiv:2412.19437 eq. 15). Runs in float32 (Switch §2.4, selective precision)."""
    router_renormalize: bool = False
    """softmax_topk, sigmoid_topk: divide the k chosen scores by their sum (transformers' norm_topk_prob in the
    Qwen-MoE, OLMoE and DeepSeek-V3 routers; topk_softmax always sums to one)."""
    router_balance_bias: bool = False
    """DeepSeek-V3's auxiliary-loss-free balancing (§2.1.2): a per-expert bias added to the scores to choose the top
    k but not to weight them. No gradient trains it (a buffer, uncounted): the trainer moves it after each step by
    the recipe's router_bias_update_rate, down above the mean load, up below. HF's e_score_correction_bias."""
    router_groups: int = 1
    """Group-limited routing (DeepSeek-V2 §2.2.2, device-limited routing; HF's n_group): the experts split into this
    many groups of consecutive experts, and each token chooses among the router_groups_per_token best groups, a
    group scoring the sum of its router_group_score_experts best scores. 1 = every expert."""
    router_groups_per_token: int = 1
    """With router_groups > 1: the groups each token may route to (HF's topk_group; DeepSeek-V2: 3 of 8)."""
    router_group_score_experts: int = 1
    """With router_groups > 1: the best scores of a group that sum to its score (DeepSeek-V2: 1, V3: 2)."""
    router_weight_scale: float = 1.0
    """The chosen experts' weights multiplied by this before they weight the experts' outputs (DeepSeek-V2's
    routed_scaling_factor: 16 in DeepSeek-V2, 1 in V2-Lite)."""
    router_bias: bool = False
    """A learned bias on the router logits."""
    router_jitter: float = 0.0
    """Switch's multiplicative noise: while training the router's input is x * U(1 - jitter, 1 + jitter)."""
    router_weights_input: bool = False
    """The chosen experts' weights scale each expert's input, not its output (Llama 4: meta-llama MoE.forward)."""
    shared_expert_d_ff: int = 0
    """Hidden width of a dense MLP every token also goes through beside its routed experts (Qwen2-MoE's
    shared expert; DeepSeekMoE's shared experts). 0 = none."""
    shared_expert_gate: bool = False
    """Qwen2-MoE: the shared expert's output is scaled by sigmoid(x w), w: [d_model, 1]."""
    capacity_factor: float | None = None
    """Training: null = dropless (every token reaches its k experts); else each expert takes at most
    ceil(T k / E * factor) of a sequence's T tokens and drops the rest (GShard, Switch)."""
    eval_capacity_factor: float | None = None
    """The same when deterministic (evaluation, decoding); null = dropless (Switch evaluates at 2.0)."""
    load_balancing_multiplier: float = 0.0
    """Weight of the load-balancing loss, E * sum_e f_e P_e per MoE layer averaged over layers (Switch eq. 4;
    Switch 1e-2, OLMoE 1e-2); read by the trainer."""
    load_balancing_per_sequence: bool = False
    """f_e and P_e of each sequence, the loss averaged over sequences (DeepSeek-V3's sequence-wise balance loss,
    §2.1.2), instead of the whole batch's."""
    router_z_loss_multiplier: float = 0.0
    """Weight of the router z-loss, mean logsumexp(router logits)^2 (ST-MoE eq. 5: 1e-3; OLMoE 1e-3)."""

    # --- attention ---------------------------------------------------------------------------
    attention_bias: bool = False
    """Bias on the q, k, v and (unless attention_out_bias says otherwise) output projections."""
    attention_out_bias: bool = DERIVED
    """Bias on the attention output projection. None = attention_bias. Qwen2/2.5 bias q, k, v but not the
    output (transformers models/qwen2/modeling_qwen2.py: o_proj bias=False): attention_bias true, this false."""
    query_scale: float | None = None
    """Multiplier on q.k. None = 1/sqrt(head_dim); 1.0 = no scaling (T5, whose init absorbs it);
    Gemma 2's query_pre_attn_scalar s is query_scale = s ** -0.5."""
    qk_norm: str = "none"
    """Normalise queries and keys (Dehghani 2023): per_head (Gemma 3), per_head_untied (per-head statistics, a
    gain per head and dim: Command R+), full (the whole projection before the head split: OLMo 2), all with
    norm_type; per_head_no_gain (RMS over each head, no parameters: Llama 4's L2Norm)."""
    qk_norm_nope_layers: bool = True
    """false: the *_nope layers (no positions) skip the QK-norm (Llama 4 normalises only its RoPE layers)."""
    attention_sinks: bool = False
    """A learned logit per head in every softmax's denominator, as a key that every query scores alike and whose
    value is zero: a head may attend to nothing (gpt-oss; Xiao 2023's attention sinks, learned)."""
    kv_latent_dim: int = 0
    """Multi-head latent attention (MLA; DeepSeek-V2, DeepSeek-AI 2024, §2.1): each token's keys and values are
    projected up, per head, from one normed latent of this width, which with the shared RoPE key is all a KV
    cache holds; decoding multiplies the queries into the latent space rather than expanding the cache. 0 = off."""
    q_latent_dim: int = 0
    """Latent attention: the queries through a normed bottleneck of this width (DeepSeek-V2 §2.1.2). 0 = one
    projection."""
    rope_head_dim: int = 0
    """Latent attention: the last rope_head_dim dims of each query head carry RoPE and meet one RoPE key per token,
    shared by all heads (the latent cannot carry positions); head_dim counts them. 0 with no positions."""
    value_head_dim: int = DERIVED
    """Latent attention: the width of each value head. None = head_dim (which latent attention's keys exceed by
    rope_head_dim: DeepSeek-V2's 192-wide query/key heads read 128-wide values)."""
    attn_logits_soft_cap: float | None = None
    """cap * tanh(scores / cap) on attention logits (Gemma 2). None = off."""
    clip_qkv: float | None = None
    """Clamp the q, k and v projections' outputs to [-c, c], before any QK-norm and RoPE (DBRX's
    attn_config.clip_qkv: transformers models/dbrx/modeling_dbrx.py, DbrxAttention.forward clamps the fused Wqkv
    output before the split). None = off."""
    attention_pattern: tuple[str, ...] = ("global",)
    """Per-layer attention kinds, cycled over the stack: global, local (sliding window), chunked, and *_nope
    variants that skip the position encoding (Command A's full-attention layers). Gemma 2:
    ("local","global"); Gemma 3: ("local",)*5 + ("global",); Llama 4: ("chunked",)*3 + ("global_nope",)."""
    sliding_window_size: int | None = None
    """Keys a local layer sees, the query included (Mistral, Gemma 2; Longformer/Sparse Transformer)."""
    attention_chunk_size: int | None = None
    """Chunked layers: positions split into chunks of this many, a query sees the keys of its own chunk (Llama 4)."""
    attention_temperature_floor: int = 0
    """*_nope layers: the query at position p times 1 + scale ln(1 + floor((p + 1) / floor)) (Llama 4's temperature
    tuning, after Nakanishi 2025, arXiv:2501.19399). 0 = off."""
    attention_temperature_scale: float = 0.1
    """The scale of attention_temperature_floor's factor (Llama 4: 0.1)."""

    # --- positions -------------------------------------------------------------------------------
    position_embedding: str = "rope"
    """sinusoidal (Vaswani), learned (GPT-2), rope (Su 2021), relative_bias (T5, Raffel 2020),
    alibi (Press 2022), none (NoPE: causal masking alone, Kazemnejad 2023), transformer_xl (Dai 2019 §3.3:
    q.k + q.W_r R_{i-j} + u.k + v.W_r R_{i-j}, sinusoidal R; W_r, u, v per layer, Transformer-XL's untie_r)."""
    rope_theta: float = 10000.0
    """RoPE base wavelength."""
    rope_local_theta: float | None = None
    """RoPE base for local layers (Gemma 3 uses 10k local, 1M global). None = rope_theta."""
    rope_fraction: float = 1.0
    """Fraction of each head's dims that rotate (GPT-NeoX 0.25, GPT-J 64/256); the rest pass through."""
    rope_interleaved: bool = False
    """Rotate adjacent pairs (2i, 2i+1) (GPT-J, Cohere) instead of (i, i + rotary_dim/2) (GPT-NeoX, LLaMA)."""
    rope_scaling: str = "none"
    """Context extension: linear (position interpolation, Chen 2023), llama3 (Llama 3.1 frequency bands) or yarn
    (Peng 2023: bands by rotations over the original context, and a temperature on the rotated dims)."""
    rope_scaling_factor: float = 1.0
    """Factor for rope_scaling."""
    rope_scaling_local: bool = True
    """rope_scaling on local layers too; false = global layers only (Gemma 3's linear x8, HF gemma3_text)."""
    rope_low_freq_factor: float = 1.0
    """llama3 scaling: wavelengths above original_len / low_freq_factor are divided by the factor."""
    rope_high_freq_factor: float = 4.0
    """llama3 scaling: wavelengths below original_len / high_freq_factor are untouched."""
    rope_original_max_len: int = 8192
    """llama3 and yarn scaling: context the model was trained at before extension."""
    rope_yarn_beta_fast: float = 32.0
    """yarn: frequencies turning more than beta_fast times over the original context keep theirs (Peng 2023 §3.2)."""
    rope_yarn_beta_slow: float = 1.0
    """yarn: frequencies turning fewer than beta_slow times are divided by the factor; a linear ramp between."""
    rope_yarn_truncate: bool = True
    """yarn: round the ramp's ends outward to whole dimensions (transformers' truncate; false in GptOssConfig)."""
    rope_attention_factor: float | None = None
    """yarn: multiplies cos and sin (the rotated dims of q and k); null = 0.1 ln(factor) + 1 (Peng 2023 §3.4)."""
    relative_num_buckets: int = 32
    """T5 relative bias: number of log-spaced distance buckets."""
    relative_max_distance: int = 128
    """T5 relative bias: distances beyond this share the last bucket."""
    relative_bias_shared: bool = True
    """T5 computes one bias table per stack and reuses it in every layer. False = a table per layer."""
    position_offset: int = 0
    """Learned positions: position p reads row p + offset of a max_seq_len + offset table (OPT: 2)."""

    # --- embeddings and output ---------------------------------------------------------------------
    tie_word_embeddings: bool = True
    """Output projection = transposed token embedding (Press & Wolf 2017)."""
    lm_head_bias: bool = False
    """Bias on the untied output head (GPT-J: transformers models/gptj/modeling_gptj.py lm_head)."""
    embedding_dim: int = DERIVED
    """Token-embedding width; != d_model adds bias-free project_in/out around the stack (OPT-350m). None = d_model."""
    embedding_norm: bool = False
    """A norm on the embeddings before the first block (BLOOM's word_embeddings_layernorm)."""
    scale_embeddings: bool = False
    """Multiply token embeddings by sqrt(d_model) (Vaswani §3.4, Gemma)."""
    scale_logits_by_inv_sqrt_d_model: bool = False
    """Multiply logits by d_model ** -0.5 (T5 with a tied head, PaLM's shared embeddings)."""
    final_logits_soft_cap: float | None = None
    """cap * tanh(logits / cap) on the output logits (Gemma 2). None = off."""
    logits_scale: float | None = None
    """Multiplier on the output logits, before any soft-cap (Cohere's logit_scale). None = off."""
    z_loss_multiplier: float = 0.0
    """Weight of log(Z)^2 in the training loss (PaLM 1e-4, OLMo 2 1e-5); read by the trainer."""
    mtp_depth: int = 0
    """Multi-token prediction modules, trained beside the model, left out of its logits and exports (DeepSeek-V3
    §2.2): module k predicts token i + k + 1 from module k - 1's output at i and token i + k. 0 = off."""

    # --- regularisation ------------------------------------------------------------------------------
    embedding_dropout: float = 0.0
    """Dropout on the (token + position) embedding sum."""
    attention_dropout: float = 0.0
    """Dropout on attention probabilities."""
    residual_dropout: float = 0.0
    """Dropout on each sublayer's output before it joins the residual stream."""
    mlp_hidden_dropout: float = 0.0
    """Dropout on the MLP's hidden activation (Mesh TF's DenseReluDense dropout_rate; T5 v1.0: 0.1)."""
    final_norm_dropout: float = 0.0
    """Dropout after each stack's final norm (Mesh TF LayerStack's sublayers_final; T5 v1.0: 0.1)."""

    # --- initialisation ---------------------------------------------------------------------------
    init_scheme: str = "normal"
    """normal N(0, init_std); truncated_normal (cut at 3 std, OLMo 2); gpt2_scaled (output projections
    / sqrt(2 * layers), learned positions N(0, 0.01), GPT-2); xavier (Vaswani); t5 (Mesh TF rules: fan-in
    normal attention, truncated-normal MLP, embeddings N(0,1)); fan_in (N(0, 1/fan_in), embeddings N(0,1), PaLM)."""
    init_std: float = 0.02
    """Standard deviation for normal, truncated_normal and gpt2_scaled."""

    # --- performance -----------------------------------------------------------------------------------
    scan_layers: bool = True
    """Scan over repeats of the attention-pattern cycle: compile time flat in depth."""
    remat_policy: str = "none"
    """Activation checkpointing per block: none, full (recompute everything), save_dots (keep matmul
    outputs), save_block_outputs (keep the tagged attention and MLP outputs)."""
    dtype: str = "float32"
    """Compute dtype (bfloat16 for mixed precision)."""
    param_dtype: str = "float32"
    """Parameter storage dtype."""
    attention_impl: str = "auto"
    """flash (zoo.layers.flash: memory linear in length, any backend); xla (exact: jax.nn.dot_product_attention);
    cudnn (its flash kernel, GPU); auto = cudnn on GPU in 16-bit with no soft-cap, else flash past 512 tokens."""
    moe_matmul: str = "auto"
    """How dropless MoE layers multiply each expert's tokens: ragged_dot (jax.lax.ragged_dot, a grouped matmul on
    TPU and GPU), blocks (tokens sorted by expert into blocks of one expert each, padded, then one batched matmul:
    on CPU, where ragged_dot is lowered to a dense matmul over every expert); auto = blocks on CPU, else ragged_dot."""

    # ------------------------------------------------------------------------------------------------
    def __post_init__(self):
        validate(self)
        derived = derivations(self)
        # A derived field that does not apply was null or its derived value (validation allows nothing
        # else), so it stays derived: a config read back from config.json still follows num_layers.
        unused = applicability.unused_fields(self)
        unset = frozenset(name for name in derived if getattr(self, name) is None or name in unused)
        for name in unset:
            object.__setattr__(self, name, derived[name])
        object.__setattr__(self, "_derived", unset)  # Replaceable.replace derives these again
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        object.__setattr__(self, "attention_pattern", tuple(self.attention_pattern))
        object.__setattr__(self, "moe_pattern", tuple(self.moe_pattern))

    # --- derived values ------------------------------------------------------------------------------
    @property
    def is_encoder_decoder(self) -> bool:
        return self.architecture == "encoder_decoder"

    @property
    def is_gated(self) -> bool:
        return len(self.mlp_activations) == 2

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def cycle_length(self) -> int:
        """Layers per scanned cycle: both patterns repeat whole within it."""
        return math.lcm(len(self.attention_pattern), len(self.moe_pattern) if self.is_moe else 1)

    @property
    def rotary_dim(self) -> int:
        """The dims of a query or key head that RoPE rotates: rope_head_dim under latent attention, else the
        rope_fraction of head_dim."""
        return self.rope_head_dim if self.kv_latent_dim else int(self.head_dim * self.rope_fraction)

    def mlp_kinds(self, num_layers: int | None = None) -> tuple[str, ...]:
        """The MLP of every layer, moe or dense: dense_prefix_layers dense, then moe_pattern cycled over the stack
        by layer index (dense without experts)."""
        n = self.num_layers if num_layers is None else num_layers
        moe = self.is_moe
        return tuple(
            self.moe_pattern[i % len(self.moe_pattern)] if moe and i >= self.dense_prefix_layers else "dense"
            for i in range(n)
        )

    def cycle_mlp_kinds(self) -> tuple[str, ...]:
        """The MLP of each block of a scanned cycle past the dense prefix (every block of a prefix cycle is dense)."""
        first = self.dense_prefix_layers
        return self.mlp_kinds(first + self.cycle_length)[first:]

    def layer_kinds(self, num_layers: int | None = None) -> tuple[str, ...]:
        """The attention kind of every layer: the pattern cycled over the stack."""
        n = self.num_layers if num_layers is None else num_layers
        return tuple(self.attention_pattern[i % len(self.attention_pattern)] for i in range(n))
