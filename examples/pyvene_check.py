"""Check a pyvene collection against itself, one text at a time, with no model of ours.

    PADDING_AUDIT_MODEL=folder python examples/pyvene_check.py

pyvene 0.1.8's ``CollectIntervention`` returns the states at the positions you give it
(``unit_locations``), batched exactly: read at each text's last real token
(``attention_mask.sum(-1) - 1`` under right padding) it is ``exact``. Read at the padded length
minus one, the position that is each text's last token only when alone, it returns pad states for
every shorter text: ``padding`` (``pad-state``).
"""

from __future__ import annotations

import functools
import os

import torch

from extraction import check_extractor
from extraction.samples import SAMPLE_TEXTS


@functools.cache
def load(folder: str | None = None, layer: int = 1):
    """``(IntervenableModel collecting block ``layer``'s output, tokenizer)`` of ``folder``."""
    import pyvene as pv
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = folder or os.environ["PADDING_AUDIT_MODEL"]
    tokenizer = AutoTokenizer.from_pretrained(folder)  # pads on the right
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    config = {"layer": layer, "component": "block_output", "intervention_type": pv.CollectIntervention}
    return pv.IntervenableModel(config, model=model), tokenizer


def collector(intervenable, tokenizer, read: str = "last-real"):
    """The recipe: one collect of every text; ``read`` ``"last-real"`` (each text's last token) or
    ``"padded-length"`` (the batch's last position, the mistake)."""
    if read not in ("last-real", "padded-length"):
        raise ValueError(f"read={read!r}: expected 'last-real' or 'padded-length'")

    def extract(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, return_tensors="pt", padding=True)  # (B, T), right-padded
        if read == "last-real":
            positions = (batch["attention_mask"].sum(-1) - 1).tolist()
        else:
            positions = [batch["input_ids"].shape[1] - 1] * len(texts)
        with torch.inference_mode():
            (_, collected), _ = intervenable(base=dict(batch), unit_locations={"base": [[[p] for p in positions]]})
        return collected[0].reshape(len(texts), -1)  # (B, d): one position per text

    return extract


def extract(texts: list[str]) -> torch.Tensor:
    """For ``padding-audit check examples/pyvene_check.py:extract``."""
    return collector(*load())(texts)


if __name__ == "__main__":
    for read in ("last-real", "padded-length"):
        intervenable, tokenizer = load()
        report = check_extractor(collector(intervenable, tokenizer, read), texts=SAMPLE_TEXTS[:6], tokenizer=tokenizer)
        print(read, report.verdict, report.likely_cause, report.cause_kind)
