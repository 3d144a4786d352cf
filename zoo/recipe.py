"""TrainConfig: the training recipe (optimizer, schedule, batch) as one frozen, validated dataclass.

Same contract as ``zoo.config.ModelConfig``, and beside it because a recipe is data too: a preset's ``train:``
block is nothing but values for these fields, validation runs once at construction, and every error names
the field and what it accepts. ``zoo.train.optim`` turns a TrainConfig into an optax optimizer and
learning-rate schedule.
"""

from __future__ import annotations

import dataclasses
import re

from zoo import applicability
from zoo.fields import Replaceable, fail

CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adamw", "adam", "adafactor"),
    "schedule": ("cosine", "linear", "inverse_sqrt", "noam", "wsd", "constant"),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig(Replaceable):
    """Every knob of a training recipe. Defaults are a modern decoder-only LM run (AdamW, cosine)."""

    # --- optimizer -------------------------------------------------------------------------------
    optimizer: str = "adamw"
    """adamw (Loshchilov & Hutter 2019: Adam + decoupled weight decay; GPT-3, LLaMA, OLMo), adam (no
    weight decay; the original Transformer), adafactor (Shazeer & Stern 2018; T5, PaLM)."""
    learning_rate: float = 3e-4
    """Peak learning rate. For schedule noam it is a multiplier on d_model**-0.5 * min(step**-0.5,
    step * warmup**-1.5) (Vaswani 2017 §5.3, whose multiplier is 1.0)."""
    beta1: float | None = 0.9
    """First-moment decay (Adafactor: momentum). None = no momentum, Adafactor only (T5's); for Adam that is 0.0."""
    beta2: float | None = 0.95
    """Second-moment decay of Adam/AdamW (0.95 for LLMs, 0.98 Vaswani). Unused (may be null) by
    Adafactor, which uses adafactor_decay_rate."""
    eps: float = 1e-8
    """Adam's epsilon; Adafactor's epsilon1, added to the squared gradients (mesh-tf: 1e-30)."""
    adafactor_decay_rate: float | None = 0.8
    """Adafactor's second-moment decay beta2_t = 1 - t ** -rate (mesh-tf/T5/PaLM: 0.8). Unused by Adam."""
    adafactor_factored: bool = True
    """Factored (row and column) second moments for matrices with both dims >= 128. PaLM: false."""
    adafactor_clipping_threshold: float | None = 1.0
    """Adafactor's update clipping: each update's RMS is capped at this. None = off."""
    adafactor_multiply_by_parameter_scale: bool = True
    """Adafactor's relative step: scale each update by the parameter's RMS (at least 1e-3)."""

    # --- weight decay ------------------------------------------------------------------------------
    weight_decay: float = 0.1
    """Decoupled weight decay: each step subtracts weight_decay * lr(step) ** p * param, p =
    weight_decay_lr_power (1 when null: AdamW as in PyTorch and optax). 0 = off."""
    weight_decay_lr_power: float | None = None
    """The p above. PaLM's "dynamic weight decay of lr^2.0" is weight_decay 1.0 with power 2.0, as in
    t5x's weight_decay_rate_lr_exponent. None = 1."""
    decay_norms_and_biases: bool = False
    """Decay norm scales/biases and dense biases too (OLMo 2: true; Megatron/nanoGPT: false)."""
    decay_embeddings: bool = True
    """Decay embedding tables (token, learned position, T5 relative-bias). OLMo 2: false."""
    grad_clip_norm: float | None = 1.0
    """Clip the gradient's global L2 norm to this (Pascanu 2013). None = off."""

    # --- schedule ------------------------------------------------------------------------------------
    schedule: str = "cosine"
    """cosine / linear: warmup from 0, then decay to final_lr_fraction * peak at total_steps, then hold.
    wsd: warmup, constant, then a linear decay over the last wsd_decay_fraction of total_steps (Hu 2024).
    inverse_sqrt: peak * sqrt(warmup / max(step, warmup)) (T5, PaLM: 0.01 for 10k steps, then 1/sqrt(step)).
    noam: Vaswani §5.3. constant: warmup, then peak."""
    warmup_steps: int = 2000
    """Linear warmup from 0 (cosine, linear, wsd, constant, noam). For inverse_sqrt: the constant phase."""
    total_steps: int = 100_000
    """Optimizer updates in the run; the end of the cosine/linear/wsd decay."""
    final_lr_fraction: float = 0.1
    """Floor of cosine/linear/wsd as a fraction of the peak (GPT-3, LLaMA, OLMo 2: 0.1)."""
    wsd_decay_fraction: float = 0.2
    """Fraction of total_steps spent in WSD's final linear decay (unused by other schedules)."""

    # --- batch and loss ------------------------------------------------------------------------------
    batch_size: int = 256
    """Sequences per optimizer update (the global batch, summed over devices and accumulation steps)."""
    seq_len: int = 2048
    """Tokens per training sequence."""
    grad_accum_steps: int = 1
    """Micro-batches per update: the training step averages the gradients of batch_size / grad_accum_steps
    sequences at a time before the one update (same result as the full batch, less activation memory)."""
    label_smoothing: float = 0.0
    """Mix this much uniform distribution into the targets (Szegedy 2016; Vaswani: 0.1)."""
    document_masking: bool = False
    """Packed sequences: a token attends only to earlier tokens of its own document, and positions restart
    at each document (Llama 3, Dubey et al. 2024 §3.2). false = documents in a row see each other, with EOS
    as the only separator (GPT-2/3)."""
    router_bias_update_rate: float = 0.001
    """The step by which the train step moves a router_balance_bias model's per-expert biases after each update
    (DeepSeek-V3, arXiv:2412.19437 §4.2: 0.001 for the first 14.3T tokens, then 0.0). 0 = hold them."""
    mtp_loss_weight: float = 0.3
    """lambda, the weight of the multi-token-prediction loss of an mtp_depth model (the mean of its modules' losses)
    in the training loss (DeepSeek-V3, arXiv:2412.19437 §4.2: 0.3 for the first 10T tokens, then 0.1)."""
    freeze: tuple[str, ...] = ()
    """Fine-tuning: regular expressions over parameter paths ("token_embed/.*", "decoder/cycles/block_0/.*");
    a parameter whose path matches one is not updated (its gradient leaves the clipping norm too)."""

    def __post_init__(self):
        object.__setattr__(self, "freeze", tuple(self.freeze))
        _validate(self)

    # --- derived values ------------------------------------------------------------------------------
    @property
    def micro_batch_size(self) -> int:
        """Sequences per forward/backward pass."""
        return self.batch_size // self.grad_accum_steps

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer update (what papers quote as the batch size)."""
        return self.batch_size * self.seq_len


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(c: TrainConfig) -> None:
    for name, allowed in CHOICES.items():
        if getattr(c, name) not in allowed:
            fail(c, name, f"got {getattr(c, name)!r}; allowed: {', '.join(allowed)}")
    for name in ("total_steps", "batch_size", "seq_len", "grad_accum_steps"):
        if not _is_int(getattr(c, name)) or getattr(c, name) < 1:
            fail(c, name, f"must be a positive integer, got {getattr(c, name)!r}")
    if not _is_int(c.warmup_steps) or c.warmup_steps < 0:
        fail(c, "warmup_steps", f"must be an integer >= 0, got {c.warmup_steps!r}")
    applicability.check(c, derived={})

    if not c.learning_rate > 0:
        fail(c, "learning_rate", f"must be > 0, got {c.learning_rate}")
    if c.schedule in ("noam", "inverse_sqrt") and c.warmup_steps < 1:
        fail(c, "warmup_steps", f"schedule {c.schedule!r} divides by it; must be >= 1")
    if c.schedule in ("cosine", "linear", "wsd", "constant") and c.warmup_steps > c.total_steps:
        fail(c, "warmup_steps", f"{c.warmup_steps} exceeds total_steps={c.total_steps}")
    if not 0.0 <= c.final_lr_fraction <= 1.0:
        fail(c, "final_lr_fraction", f"must be in [0, 1], got {c.final_lr_fraction}")
    if c.schedule == "wsd" and not 0.0 < c.wsd_decay_fraction <= 1.0:
        fail(c, "wsd_decay_fraction", f"must be in (0, 1], got {c.wsd_decay_fraction}")
    if c.schedule == "wsd" and c.warmup_steps + round(c.wsd_decay_fraction * c.total_steps) > c.total_steps:
        fail(
            c,
            "wsd_decay_fraction",
            f"warmup_steps={c.warmup_steps} plus the decay's "
            f"{round(c.wsd_decay_fraction * c.total_steps)} steps exceed "
            f"total_steps={c.total_steps}",
        )

    # Each optimizer's own knobs must be set; the other's may be null (zoo.applicability refuses other values).
    adam = c.optimizer in ("adam", "adamw")
    if c.beta1 is None and adam:
        fail(
            c,
            "beta1",
            f"null (no momentum) is only for adafactor; optimizer {c.optimizer!r} needs a value in "
            "[0, 1) (0.0: no momentum)",
        )
    if c.beta1 is not None and not 0.0 <= c.beta1 < 1.0:
        fail(c, "beta1", f"must be in [0, 1) or null, got {c.beta1}")
    if (c.beta2 is None and adam) or (c.beta2 is not None and not 0.0 <= c.beta2 < 1.0):
        fail(c, "beta2", f"must be in [0, 1) (null only with adafactor), got {c.beta2}")
    if not c.eps > 0:
        fail(c, "eps", f"must be > 0, got {c.eps}")
    rate = c.adafactor_decay_rate
    if (rate is None and not adam) or (rate is not None and not rate > 0):
        fail(c, "adafactor_decay_rate", f"must be > 0 (null only with adam/adamw), got {rate}")
    for name in ("adafactor_clipping_threshold", "grad_clip_norm"):
        if getattr(c, name) is not None and not getattr(c, name) > 0:
            fail(c, name, f"must be > 0 or null, got {getattr(c, name)}")

    if c.weight_decay < 0:
        fail(c, "weight_decay", f"must be >= 0, got {c.weight_decay}")
    if c.optimizer == "adam" and c.weight_decay > 0:
        fail(
            c,
            "weight_decay",
            f"optimizer 'adam' has no weight decay, got {c.weight_decay}; "
            "use optimizer: adamw for decoupled decay, or set weight_decay: 0",
        )
    if c.weight_decay_lr_power is not None and not c.weight_decay_lr_power > 0:
        fail(c, "weight_decay_lr_power", f"must be > 0 or null, got {c.weight_decay_lr_power}")

    if c.batch_size % c.grad_accum_steps:
        fail(c, "grad_accum_steps", f"{c.grad_accum_steps} does not divide batch_size={c.batch_size}")
    if not 0.0 <= c.label_smoothing < 1.0:
        fail(c, "label_smoothing", f"must be in [0, 1), got {c.label_smoothing}")
    if not c.mtp_loss_weight >= 0:
        fail(c, "mtp_loss_weight", f"must be >= 0, got {c.mtp_loss_weight}")
    if not c.router_bias_update_rate >= 0:
        fail(c, "router_bias_update_rate", f"must be >= 0, got {c.router_bias_update_rate}")
    for pattern in c.freeze:
        try:
            re.compile(pattern)
        except re.error as e:
            fail(c, "freeze", f"{pattern!r} is not a regular expression: {e}")
