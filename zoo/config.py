"""ModelConfig: every architectural knob of the zoo as one frozen, validated dataclass.

A preset (``configs/*.yaml``) is nothing but values for these fields. Layers read the config and never
a model name, so any knob combines with any other. Validation runs once, in ``__post_init__``; every
error names the field and the values it accepts.
"""

from __future__ import annotations

import dataclasses

from zoo import applicability
from zoo.fields import DERIVED, Replaceable, fail

# Allowed values of the string-valued knobs. One table, so errors and docs list the same thing.
CHOICES: dict[str, tuple[str, ...]] = {
    "architecture": ("decoder_only", "encoder_decoder"),
    "norm_position": ("pre", "post", "double", "output"),
    "norm_type": ("layernorm", "rmsnorm"),
    "position_embedding": ("sinusoidal", "learned", "rope", "relative_bias", "alibi", "transformer_xl", "none"),
    "rope_scaling": ("none", "linear", "llama3"),
    "qk_norm": ("none", "per_head", "per_head_untied", "full"),
    "init_scheme": ("normal", "truncated_normal", "gpt2_scaled", "xavier", "t5", "fan_in"),
    "remat_policy": ("none", "full", "save_dots", "save_block_outputs"),
    "attention_impl": ("auto", "xla", "cudnn"),
    "dtype": ("float32", "bfloat16", "float16"),
    "param_dtype": ("float32", "bfloat16"),
}
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "squared_relu", "linear")
LAYER_KINDS = ("global", "local", "global_nope", "local_nope")
# Fields that change how a model is computed, not what its parameters mean: a checkpoint saved with one
# value loads with another (switch on bf16 compute or remat after a restart).
RUNTIME_FIELDS = ("dtype", "remat_policy", "attention_impl")
# Fields that matter only while training: initialisation, regularisation, the auxiliary loss.
TRAINING_FIELDS = (
    "init_scheme",
    "init_std",
    "z_loss_multiplier",
    "embedding_dropout",
    "attention_dropout",
    "residual_dropout",
    "mlp_hidden_dropout",
    "final_norm_dropout",
)


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
    """Key/value heads: = num_heads is MHA, 1 is MQA (Shazeer 2019), in between is GQA (Ainslie 2023).
    None = num_heads."""
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
    mlp_bias: bool = False
    """Bias on the MLP's dense layers."""
    parallel_layers: bool = False
    """x + attn(norm(x)) + mlp(norm(x)) instead of the serial block (GPT-J, PaLM, GPT-NeoX, Cohere)."""
    parallel_shared_norm: bool = True
    """With parallel_layers: one norm feeds both branches (GPT-J, PaLM) or each has its own (NeoX)."""

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
    gain per head and dim: Command R+), or over the full projection before the head split (OLMo 2). Uses norm_type."""
    attn_logits_soft_cap: float | None = None
    """cap * tanh(scores / cap) on attention logits (Gemma 2). None = off."""
    attention_pattern: tuple[str, ...] = ("global",)
    """Per-layer attention kinds, cycled over the stack: global, local (sliding window), and *_nope
    variants that skip the position encoding (Command A's full-attention layers). Gemma 2:
    ("local","global"); Gemma 3: ("local",)*5 + ("global",)."""
    sliding_window_size: int | None = None
    """Keys a local layer sees, the query included (Mistral, Gemma 2; Longformer/Sparse Transformer)."""

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
    """Context extension: linear (position interpolation, Chen 2023) or llama3 (Llama 3.1 frequency bands)."""
    rope_scaling_factor: float = 1.0
    """Factor for rope_scaling."""
    rope_scaling_local: bool = True
    """rope_scaling on local layers too; false = global layers only (Gemma 3's linear x8, HF gemma3_text)."""
    rope_low_freq_factor: float = 1.0
    """llama3 scaling: wavelengths above original_len / low_freq_factor are divided by the factor."""
    rope_high_freq_factor: float = 4.0
    """llama3 scaling: wavelengths below original_len / high_freq_factor are untouched."""
    rope_original_max_len: int = 8192
    """llama3 scaling: context the model was trained at before extension."""
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
    """xla; cudnn (flash attention through jax.nn.dot_product_attention on GPU); auto = cudnn when on
    GPU in 16-bit with no soft-cap, else xla."""

    # ------------------------------------------------------------------------------------------------
    def __post_init__(self):
        _validate(self)
        derived = _derivations(self)
        # A derived field that does not apply was null or its derived value (validation allows nothing
        # else), so it stays derived: a config read back from config.json still follows num_layers.
        unused = applicability.unused_fields(self)
        unset = frozenset(name for name in derived if getattr(self, name) is None or name in unused)
        for name in unset:
            object.__setattr__(self, name, derived[name])
        object.__setattr__(self, "_derived", unset)  # Replaceable.replace derives these again
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        object.__setattr__(self, "attention_pattern", tuple(self.attention_pattern))

    # --- derived values ------------------------------------------------------------------------------
    @property
    def is_encoder_decoder(self) -> bool:
        return self.architecture == "encoder_decoder"

    @property
    def is_gated(self) -> bool:
        return len(self.mlp_activations) == 2

    @property
    def cycle_length(self) -> int:
        return len(self.attention_pattern)

    def layer_kinds(self, num_layers: int | None = None) -> tuple[str, ...]:
        """The attention kind of every layer: the pattern cycled over the stack."""
        n = self.num_layers if num_layers is None else num_layers
        return tuple(self.attention_pattern[i % self.cycle_length] for i in range(n))


def _derivations(c: ModelConfig) -> dict:
    """What each derived field is when left null."""
    return {
        "num_kv_heads": c.num_heads,
        "head_dim": c.d_model // c.num_heads,
        "num_decoder_layers": c.num_layers,
        "attention_out_bias": c.attention_bias,
        "embedding_dim": c.d_model,
    }


def _validate(c: ModelConfig) -> None:
    for name, allowed in CHOICES.items():
        if getattr(c, name) not in allowed:
            fail(c, name, f"got {getattr(c, name)!r}; allowed: {', '.join(allowed)}")
    for name in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_seq_len"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            fail(c, name, f"must be a positive integer, got {value!r}")
    if c.attention_out_bias is not None and not isinstance(c.attention_out_bias, bool):
        fail(c, "attention_out_bias", f"must be true, false or null (= attention_bias), got {c.attention_out_bias!r}")
    for name in ("num_kv_heads", "head_dim", "num_decoder_layers", "sliding_window_size", "embedding_dim"):
        value = getattr(c, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            fail(c, name, f"must be a positive integer or null, got {value!r}")

    if c.head_dim is None and c.d_model % c.num_heads:
        fail(
            c,
            "num_heads",
            f"d_model={c.d_model} is not divisible by num_heads={c.num_heads}; "
            "pick a divisor or set head_dim explicitly",
        )
    kv = c.num_heads if c.num_kv_heads is None else c.num_kv_heads
    if c.num_heads % kv:
        fail(
            c,
            "num_kv_heads",
            f"{kv} does not divide num_heads={c.num_heads}; "
            "each key/value head must serve a whole group of query heads",
        )
    head_dim = c.head_dim or c.d_model // c.num_heads

    acts = tuple(c.mlp_activations)
    if len(acts) not in (1, 2) or any(a not in ACTIVATIONS for a in acts):
        fail(c, "mlp_activations", f"got {acts!r}; one or two of: {', '.join(ACTIVATIONS)}")
    if not c.attention_pattern:
        fail(c, "attention_pattern", "must name at least one layer kind")
    for kind in c.attention_pattern:
        if kind not in LAYER_KINDS:
            fail(c, "attention_pattern", f"got {kind!r}; allowed: {', '.join(LAYER_KINDS)}")
    if c.num_layers % len(c.attention_pattern):
        fail(
            c,
            "attention_pattern",
            f"its length {len(c.attention_pattern)} must divide "
            f"num_layers={c.num_layers} (the stack scans over whole cycles)",
        )
    # Knobs the rest of the config makes meaningless (one table, shared with zoo.semantics), before the range
    # checks below: rope_fraction: 0.3 on an ALiBi model is a knob that does nothing, not a bad fraction.
    applicability.check(c, _derivations(c))
    if c.num_decoder_layers is not None and c.num_decoder_layers % len(c.attention_pattern):
        fail(c, "attention_pattern", f"its length must divide num_decoder_layers={c.num_decoder_layers}")
    if any(k.startswith("local") for k in c.attention_pattern) and c.sliding_window_size is None:
        fail(c, "sliding_window_size", "local layers in attention_pattern need a window size")

    if c.norm_eps <= 0:
        fail(c, "norm_eps", f"must be > 0, got {c.norm_eps}")
    if c.norm_position == "post" and c.final_norm:
        fail(c, "final_norm", "a post-norm stack already ends in a norm; set final_norm: false")

    if c.position_embedding == "relative_bias":
        if c.relative_num_buckets < 4 or c.relative_num_buckets % 2:
            fail(c, "relative_num_buckets", "needs an even number >= 4 (half per direction in the encoder)")
        if c.relative_max_distance <= c.relative_num_buckets // 2:
            fail(c, "relative_max_distance", "must exceed the exact-distance buckets (relative_num_buckets / 2)")
    rotary = head_dim * c.rope_fraction
    if not 0.0 < c.rope_fraction <= 1.0 or rotary != int(rotary) or int(rotary) % 2:
        fail(c, "rope_fraction", f"must be in (0, 1] and rotate a whole, even number of the {head_dim} head dims")
    if c.rope_theta <= 0 or (c.rope_local_theta is not None and c.rope_local_theta <= 0):
        fail(c, "rope_theta", "must be > 0")
    if c.rope_scaling != "none" and c.rope_scaling_factor < 1.0:
        fail(c, "rope_scaling_factor", f"must be >= 1 with rope_scaling {c.rope_scaling!r}")
    if c.rope_scaling == "llama3" and not c.rope_high_freq_factor > c.rope_low_freq_factor > 0:
        fail(c, "rope_high_freq_factor", "llama3 scaling needs rope_high_freq_factor > rope_low_freq_factor > 0")
    if c.position_embedding in ("sinusoidal", "transformer_xl") and c.d_model % 2:
        fail(c, "d_model", f"{c.position_embedding} positions need an even d_model")

    if not isinstance(c.position_offset, int) or c.position_offset < 0:
        fail(c, "position_offset", f"must be an integer >= 0, got {c.position_offset!r}")
    for name in ("attn_logits_soft_cap", "final_logits_soft_cap", "query_scale", "logits_scale"):
        value = getattr(c, name)
        if value is not None and not value > 0:
            fail(c, name, f"must be > 0 or null, got {value}")
    for name in (
        "embedding_dropout",
        "attention_dropout",
        "residual_dropout",
        "mlp_hidden_dropout",
        "final_norm_dropout",
    ):
        if not 0.0 <= getattr(c, name) < 1.0:
            fail(c, name, f"must be in [0, 1), got {getattr(c, name)}")
    if c.z_loss_multiplier < 0:
        fail(c, "z_loss_multiplier", "must be >= 0")
    if c.init_std <= 0:
        fail(c, "init_std", "must be > 0")
    if c.parallel_layers and c.norm_position not in ("pre", "double"):
        fail(c, "parallel_layers", f"needs norm_position pre or double, got {c.norm_position!r}")
    if c.is_encoder_decoder and c.parallel_layers:
        fail(c, "parallel_layers", "is only implemented for decoder_only stacks")
