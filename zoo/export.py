"""Export a trained run (or any config + params + tokenizer) as a Hugging Face checkpoint directory.

    python -m zoo.export runs/llama-tiny out_dir [--step N]

writes config.json and safetensors (zoo.hf.save, sharded above 5 GB), generation_config.json and the
tokenizer (tokenizer.json + tokenizer_config.json), so that transformers' `AutoModelForCausalLM` (or
`AutoModelForSeq2SeqLM`) and `AutoTokenizer.from_pretrained(out_dir)` give zoo's logits and token ids.
A model no HF architecture expresses (e.g. GPT-3's local layers) is refused, naming the field.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo import hf
from zoo.config import ModelConfig
from zoo.train.config import UserError
from zoo.train.sampling import load_for_sampling


def export(cfg: ModelConfig, params, tokenizer, out_dir: str | Path) -> Path:
    """Writes the checkpoint directory; returns its path."""
    family = hf.family_of(cfg)  # refuse before writing anything
    ids = {"eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    if cfg.is_encoder_decoder:
        ids["decoder_start_token_id"] = tokenizer.pad_id  # T5 decodes from the pad id
    out = hf.save(cfg, params, out_dir, family=family.model_type, extra_config=ids)
    (out / "generation_config.json").write_text(json.dumps(ids, indent=2) + "\n")
    hf_tokenizer = tokenizer.to_hf()
    # Text that contains "</s>" is data, as in zoo's own tokenizers: split_special_tokens.
    hf_tokenizer.encode_special_tokens = True
    hf_tokenizer.save(str(out / "tokenizer.json"))
    names = {
        "eos_token": hf_tokenizer.id_to_token(tokenizer.eos_id),
        "pad_token": hf_tokenizer.id_to_token(tokenizer.pad_id),
    }
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "split_special_tokens": True,
                "model_max_length": cfg.max_seq_len,
                **names,
            },
            indent=2,
        )
        + "\n"
    )
    return out


def export_run(run_dir: str | Path, out_dir: str | Path, step: int | None = None) -> Path:
    """A run directory's checkpoint (default: the latest) as an HF checkpoint directory (never into a run
    directory, whose config.json an HF config.json would replace)."""
    out = Path(out_dir).resolve()
    if out == Path(run_dir).resolve() or (out / "checkpoints").is_dir():
        raise UserError(f"{out_dir} is a run directory; export into another directory, e.g. {Path(run_dir) / 'hf'}")
    model, params, tokenizer = load_for_sampling(run_dir, step)
    return export(model.cfg, params, tokenizer, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.export", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory (config.json, tokenizer/, checkpoints/)")
    parser.add_argument("out", help="directory to write the Hugging Face checkpoint to")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    args = parser.parse_args(argv)
    try:
        out = export_run(args.run, args.out, args.step)
    except (UserError, ValueError) as e:
        print(f"zoo.export: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"wrote {out}: load it with transformers' AutoModelFor*.from_pretrained and AutoTokenizer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
