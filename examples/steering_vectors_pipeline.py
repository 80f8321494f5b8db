"""steering-vectors' activation extraction, for ``padding-audit check --python`` (it requires
``transformers<5``, so it runs in an interpreter of its own; this file imports nothing of ours).

    PADDING_AUDIT_MODEL=folder padding-audit check examples/steering_vectors_pipeline.py:extract \\
        --texts examples/texts.txt --python ~/venvs/steering/bin/python

steering-vectors 0.12.2: ``extract_activations(model, tokenizer, pairs, layers=[k],
read_token_index=-1, batch_size=...)`` pads (on the tokenizer's side, right as SmolLM2's loads) and
moves the read index past the pads with the attention mask (``adjust_read_indices_for_padding``),
so ``-1`` is each text's last real token: ``exact`` batched (its default ``batch_size=1`` is one
text a call, exact trivially). ``layers=[k]`` records decoder block ``k``'s output,
``hidden_states[k + 1]``.
"""

from __future__ import annotations

import functools
import os

import torch
from steering_vectors import extract_activations
from transformers import AutoModelForCausalLM, AutoTokenizer


@functools.cache
def load(folder: str | None = None):
    """``(model, tokenizer)`` of ``folder`` (default ``$PADDING_AUDIT_MODEL``), float32, loaded once."""
    folder = folder or os.environ["PADDING_AUDIT_MODEL"]
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def extract(texts: list[str], layer: int = -1) -> torch.Tensor:
    """The library's default read (``read_token_index=-1``) of every text in one batch."""
    model, tokenizer = load()
    layer = layer % model.config.num_hidden_layers
    # Each sample is a (positive, negative) pair: the text as both, its positive activations kept.
    positive, _ = extract_activations(model, tokenizer, [(t, t) for t in texts], layers=[layer], batch_size=len(texts))
    return torch.cat(positive[layer])  # (B, d)
