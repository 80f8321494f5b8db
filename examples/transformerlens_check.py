"""Check a TransformerLens extraction against itself, one text at a time, with no model of ours.

    PADDING_AUDIT_MODEL=path/to/hf-folder python examples/transformerlens_check.py
    PADDING_AUDIT_MODEL=path/to/hf-folder padding-audit check examples/transformerlens_check.py:extract_left \
        --texts examples/texts.txt

TransformerLens processes the weights (folded norms, centred residual), so its states are not
Hugging Face's and the model-based check would call any of them corrupted; against itself the
check is fair. TransformerLens 4.3 (``TransformerBridge``; ``HookedTransformer`` is gone) loads a
local folder offline. By default it pads on the right and reads ``[:, -1]`` as people do: for
every text shorter than the longest that is a pad position's state (``padding``, ``pad-state``).
``padding_side="left"`` makes position -1 each text's last token again: ``exact``.
``blocks.k.hook_resid_post`` is ``hidden_states[k + 1]``.
"""

from __future__ import annotations

import functools
import os

import torch

from extraction import check_extractor
from extraction.samples import SAMPLE_TEXTS


@functools.cache
def load(folder: str | None = None):
    """The TransformerBridge of ``folder`` (default ``$PADDING_AUDIT_MODEL``), loaded once, on the CPU."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(folder or os.environ["PADDING_AUDIT_MODEL"], device="cpu")


def resid_post_extractor(bridge, layer: int = -1, **run_options):
    """The last position's ``hook_resid_post`` of block ``layer``; ``run_options`` go to
    ``run_with_cache`` (``padding_side="left"`` is the fix)."""
    hook = f"blocks.{layer % bridge.cfg.n_layers}.hook_resid_post"

    def extract(texts: list[str]) -> torch.Tensor:
        _, cache = bridge.run_with_cache(texts, names_filter=hook, **run_options)
        return cache[hook][:, -1]  # (B, d)

    return extract


def extract_default(texts: list[str]) -> torch.Tensor:
    """As people write it: right padding (the default), position -1."""
    return resid_post_extractor(load())(texts)


def extract_left(texts: list[str]) -> torch.Tensor:
    """The fix: left padding, so position -1 is each text's last token."""
    return resid_post_extractor(load(), padding_side="left")(texts)


if __name__ == "__main__":
    for function in (extract_default, extract_left):
        report = check_extractor(function, texts=SAMPLE_TEXTS[:6])
        print(f"{function.__name__}: {report.verdict}, {report.likely_cause} ({report.cause_kind})")
        print(f"  {report.cause}")
