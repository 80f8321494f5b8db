"""Check an nnsight extraction against itself, one text at a time, with no model of ours.

    PADDING_AUDIT_MODEL=folder python examples/nnsight_check.py
    PADDING_AUDIT_MODEL=folder padding-audit check examples/nnsight_check.py:extract --texts examples/texts.txt

The model is a local Hugging Face folder (``save_pretrained``; e.g. the embedded SmolLM2's
converted cache, ``python -c "from extraction.models import cache_dir; print(cache_dir())"``).
nnsight 0.8.1 (``TransformersModel``; ``LanguageModel`` is deprecated) pads a causal LM on the
left and passes position ids, so its batched states match one text at a time: ``exact``.
``model.model.layers[k].output`` is ``hidden_states[k + 1]`` and a plain ``(B, T, d)`` tensor
(the old ``.output[0]`` now takes the batch's first row: ``duplicate-rows``).
"""

from __future__ import annotations

import functools
import os

import torch

from extraction import check_extractor
from extraction.samples import SAMPLE_TEXTS


@functools.cache
def load(folder: str | None = None):
    """The nnsight model of ``folder`` (default ``$PADDING_AUDIT_MODEL``), loaded once."""
    from nnsight import TransformersModel

    return TransformersModel(folder or os.environ["PADDING_AUDIT_MODEL"], task="text-generation", dispatch=True)


def last_token_extractor(model, layer: int = -1):
    """The recipe: the last token's state after block ``layer``, every text in one trace."""

    def extract(texts: list[str]) -> torch.Tensor:
        with model.trace(texts):
            states = model.model.layers[layer].output.save()  # (B, T, d), left-padded by nnsight
        return states[:, -1]  # (B, d): each text's last token

    return extract


def first_row_extractor(model, layer: int = -1):
    """The pre-0.8 habit ``.output[0]``: now the batch's first row, one (T, d) for every text."""

    def extract(texts: list[str]) -> torch.Tensor:
        with model.trace(texts):
            first = model.model.layers[layer].output[0].save()  # (T, d): text 1 only
        return first[-1].expand(len(texts), -1)  # (B, d): text 1's last token, everywhere

    return extract


def extract(texts: list[str]) -> torch.Tensor:
    """For ``padding-audit check examples/nnsight_check.py:extract`` (model from ``$PADDING_AUDIT_MODEL``)."""
    return last_token_extractor(load())(texts)


if __name__ == "__main__":
    report = check_extractor(extract, texts=SAMPLE_TEXTS[:6])
    print(report.verdict, report.likely_cause, report.cause_kind)
    print(report.cause)
