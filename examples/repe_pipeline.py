"""repe's ``rep-reading`` pipeline, for ``padding-audit check --python`` (it fails under
transformers 5, ``'RepReadingPipeline' object has no attribute 'framework'``, so it runs in an
interpreter with transformers 4.57; this file imports nothing of ours).

    PADDING_AUDIT_MODEL=folder padding-audit check examples/repe_pipeline.py:extract_as_loaded \\
        --texts examples/texts.txt --python ~/venvs/repe/bin/python

repe 0.1.4 reads ``hidden_states[layer][:, rep_token]`` (``rep_token=-1``) of each batch the
Hugging Face pipeline pads on the tokenizer's side. With the tokenizer as it loads (right padding on
SmolLM2), ``-1`` is a pad position's state for every text shorter than the longest of its batch:
``padding`` (``pad-state``). repe's README loads the tokenizer with ``padding_side="left"`` (and
``pad_token_id = 0``): then ``-1`` is each text's last token, and on a RoPE model the left pads do
not move the real tokens' positions: ``exact``.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from repe import repe_pipeline_registry
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline


@functools.cache
def rep_reader(padding_side: str):
    """repe's ``rep-reading`` pipeline over ``$PADDING_AUDIT_MODEL`` with the tokenizer padding on ``padding_side``."""
    repe_pipeline_registry()
    folder = os.environ["PADDING_AUDIT_MODEL"]
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side=padding_side)
    if padding_side == "left":
        tokenizer.pad_token_id = 0  # as repe's README does
    return pipeline("rep-reading", model=model, tokenizer=tokenizer)


def _read(padding_side: str, texts: list[str], layer: int = -1) -> np.ndarray:
    hidden = rep_reader(padding_side)._batched_string_to_hiddens(
        texts, rep_token=-1, hidden_layers=[layer], batch_size=len(texts), which_hidden_states=None
    )
    return hidden[layer]  # (B, d)


def extract_as_loaded(texts: list[str]) -> np.ndarray:
    """repe's defaults (``rep_token=-1``) with the tokenizer as it loads: right padding."""
    return _read("right", texts)


def extract(texts: list[str]) -> np.ndarray:
    """repe's README settings: ``padding_side="left"``, ``pad_token_id = 0``."""
    return _read("left", texts)
