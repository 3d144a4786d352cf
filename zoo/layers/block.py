"""One transformer block that reads the config: norm placement, serial or parallel sublayers,
optional cross-attention. Every family is this block with different field values."""

from __future__ import annotations

import flax.linen as nn

from zoo.config import ModelConfig
from zoo.layers.attention import Attention
from zoo.layers.mlp import Mlp
from zoo.layers.moe import MoeMlp
from zoo.layers.norms import Norm


class Block(nn.Module):
    """x: [B, T, d_model] -> [B, T, d_model].

    norm_position decides how each sublayer f joins the residual stream:
      pre     x + f(norm(x))              (Xiong 2020; GPT-2 onwards)
      post    norm(x + f(x))              (Vaswani 2017)
      double  x + norm2(f(norm1(x)))      (Gemma 2, Grok)
      output  x + norm(f(x))              (OLMo 2's reordered norm)
    """

    cfg: ModelConfig
    kind: str = "global"
    mlp_kind: str = "dense"
    """dense: Mlp; moe: MoeMlp (this layer's moe_pattern entry)."""
    causal: bool = True
    has_cross: bool = False
    decode_len: int | None = None
    deterministic: bool = True

    @nn.compact
    def __call__(
        self, x, positions, cache_index=None, rel_table=None, encoded=None, encoder_mask=None, segment_ids=None
    ):
        cfg = self.cfg
        attention = Attention(
            cfg,
            kind=self.kind,
            causal=self.causal,
            decode_len=self.decode_len,
            deterministic=self.deterministic,
            name="attention",
        )
        # encoder_mask (True = real token) is the encoder's own padding in the encoder's self-attention, and
        # what cross-attention may read in the decoder.
        self_mask = None if self.has_cross else encoder_mask

        def attn(h):
            return attention(
                h, positions, cache_index=cache_index, rel_table=rel_table, kv_mask=self_mask, segment_ids=segment_ids
            )

        if self.mlp_kind == "moe":
            moe = MoeMlp(cfg, deterministic=self.deterministic, name="moe")

            def mlp(h):
                return moe(h, self_mask)  # padding (an encoder's) takes no expert capacity
        else:
            mlp = Mlp(cfg, deterministic=self.deterministic, name="mlp")
        if cfg.parallel_layers:
            return self._parallel(x, attn, mlp)
        x = self._sublayer("attn", attn, x)
        if self.has_cross:
            cross_attention = Attention(
                cfg,
                kind="global",
                causal=False,
                cross=True,
                decode_len=self.decode_len,
                deterministic=self.deterministic,
                name="cross_attention",
            )
            x = self._sublayer(
                "cross", lambda h: cross_attention(h, positions, kv_input=encoded, kv_mask=encoder_mask), x
            )
        x = self._sublayer("mlp", mlp, x)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def _norm(self, name):
        return Norm(self.cfg, name=name)

    def _drop(self, h):
        return nn.Dropout(self.cfg.residual_dropout, deterministic=self.deterministic)(h)

    def _sublayer(self, name, f, x):
        position = self.cfg.norm_position
        if position == "pre":
            return x + self._drop(f(self._norm(f"{name}_norm")(x)))
        if position == "post":
            return self._norm(f"{name}_norm")(x + self._drop(f(x)))
        if position == "double":
            return x + self._drop(self._norm(f"{name}_post_norm")(f(self._norm(f"{name}_norm")(x))))
        return x + self._drop(self._norm(f"{name}_norm")(f(x)))  # "output"

    def _parallel(self, x, attn, mlp):
        """x + attn(norm(x)) + mlp(norm'(x)) (Wang & Komatsuzaki 2021, GPT-J; PaLM §2): both branches read
        the same input, so their input matmuls can be fused. One shared norm (GPT-J, PaLM) or two (NeoX)."""
        h_attn = self._norm("attn_norm")(x)
        h_mlp = h_attn if self.cfg.parallel_shared_norm else self._norm("mlp_norm")(x)
        a, m = attn(h_attn), mlp(h_mlp)
        if self.cfg.norm_position == "double":
            a, m = self._norm("attn_post_norm")(a), self._norm("mlp_post_norm")(m)
        return nn.with_logical_constraint(x + self._drop(a) + self._drop(m), ("batch", "length", "embed"))
