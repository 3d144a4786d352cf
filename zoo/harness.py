"""A zoo model behind EleutherAI's lm-evaluation-harness (`pip install -e ".[eval]"`): its `LM` interface.

    import lm_eval
    from zoo.harness import ZooLM
    lm = ZooLM.from_run("runs/llama-tiny")                # or ZooLM.from_hf("hf_dir")
    lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])
    # command line: lm_eval --model zoo --model_args run=runs/llama-tiny --tasks ...  (after `import zoo.harness`)

loglikelihood: log p(continuation | context), summed over the continuation's tokens, and whether greedy
decoding would produce it; loglikelihood_rolling: a whole text's log-likelihood in disjoint windows of the
model's length (lm-eval's own windowing); generate_until: greedy continuation cut at the first stop string.
Decoder-only models. Requests are scored in batches padded to a power-of-two length (one compile per length).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from zoo import hf
from zoo.generate import generate
from zoo.model import build
from zoo.train.objectives import token_nll
from zoo.train.sampling import load_for_sampling
from zoo.train.tokenizer import load_tokenizer


@register_model("zoo")
class ZooLM(LM):
    def __init__(self, model, params, tokenizer, batch_size: int = 8):
        super().__init__()
        if model.cfg.is_encoder_decoder:
            raise ValueError("zoo.harness.ZooLM scores decoder-only models; this one is encoder-decoder")
        self.model, self.params, self.tokenizer, self.batch_size = model, params, tokenizer, int(batch_size)
        self.max_length = model.cfg.max_seq_len
        self._score = jax.jit(self._token_logprobs)

    @classmethod
    def from_run(cls, run: str, step: int | None = None, batch_size: int = 8) -> ZooLM:
        model, params, tokenizer = load_for_sampling(run, step)
        return cls(model, params, tokenizer, batch_size=batch_size)

    @classmethod
    def from_hf(cls, directory: str, batch_size: int = 8) -> ZooLM:
        cfg, params = hf.load(directory)
        return cls(build(cfg), params, load_tokenizer(directory), batch_size=batch_size)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> ZooLM:
        """`run=DIR[,step=N]` or `hf=DIR`, with an optional `batch_size=N` (lm_eval --model_args)."""
        args = dict(item.split("=", 1) for item in arg_string.split(",") if item)
        batch_size = int((additional_config or {}).get("batch_size") or args.get("batch_size", "8"))
        if "hf" in args:
            return cls.from_hf(args["hf"], batch_size=batch_size)
        return cls.from_run(args["run"], int(args["step"]) if "step" in args else None, batch_size=batch_size)

    # --- scoring ---------------------------------------------------------------------------------------------
    def _token_logprobs(self, params, tokens):
        """tokens int [B, L] -> (log p of each next token [B, L-1], whether it is the argmax [B, L-1])."""
        logits = self.model.apply({"params": params}, tokens[:, :-1]).astype(jnp.float32)
        targets = tokens[:, 1:]
        return (
            -token_nll(logits, targets),
            jnp.take_along_axis(logits, targets[..., None], -1)[..., 0] >= logits.max(-1),
        )

    def _score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (sum of the continuation's log-probs, all greedy)."""
        out = []
        for i in range(0, len(pairs), self.batch_size):
            chunk = pairs[i : i + self.batch_size]
            rows = [(ctx + cont)[-(self.max_length + 1) :] for ctx, cont in chunk]
            length = min(max(2, 1 << (max(map(len, rows)) - 1).bit_length()), self.max_length + 1)
            tokens = np.zeros((self.batch_size, length), np.int32)  # right padding: earlier positions unaffected
            for j, row in enumerate(rows):
                tokens[j, : len(row)] = row
            logp, greedy = map(np.asarray, self._score(self.params, jnp.asarray(tokens)))
            for j, ((_, cont), row) in enumerate(zip(chunk, rows, strict=True)):
                span = slice(len(row) - 1 - len(cont), len(row) - 1)  # predictions of the continuation tokens
                out.append((float(logp[j, span].sum()), bool(greedy[j, span].all())))
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = []
        for request in requests:
            context, continuation = request.args
            whole = self.tokenizer.encode(context + continuation)
            ctx = self.tokenizer.encode(context)
            # Encode together (a BPE merge may cross the boundary); an empty context starts from EOS.
            cont = whole[len(ctx) :] if whole[: len(ctx)] == ctx else self.tokenizer.encode(continuation)
            pairs.append(([self.tokenizer.eos_id] + ctx, cont))
        return self._score_pairs(pairs)

    def loglikelihood_rolling(self, requests) -> list[float]:
        out = []
        for request in requests:
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    self.tokenizer.encode(request.args[0]),
                    prefix_token=self.tokenizer.eos_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            out.append(sum(score for score, _ in self._score_pairs([(list(c), list(t)) for c, t in windows])))
        return out

    def generate_until(self, requests) -> list[str]:
        out = []
        for request in requests:
            context, kwargs = request.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else until
            ids = ([self.tokenizer.eos_id] + self.tokenizer.encode(context))[-(self.max_length - 1) :]
            new = min(int(kwargs.get("max_gen_toks", 64)), self.max_length - len(ids))
            tokens = np.asarray(
                generate(
                    self.model, self.params, np.asarray([ids], np.int32), new, stop_tokens=(self.tokenizer.eos_id,)
                )
            )[0, len(ids) :].tolist()
            if self.tokenizer.eos_id in tokens:
                tokens = tokens[: tokens.index(self.tokenizer.eos_id)]
            text = self.tokenizer.decode(tokens)
            cut = min((text.index(s) for s in until if s in text), default=len(text))
            out.append(text[:cut])
        return out
