"""Whether a layout's rows of ``auto``'s probe texts equal single-text extraction's: the verdict
of :mod:`extraction.verdicts` over every layer and the ``lm_head`` top-1, and the one-text
extractions joined into one result. Used by :mod:`extraction.comparison.choose`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from .. import metrics
from ..extract import ExtractionResult
from ..pooling import row_offsets
from ..verdicts import verdict_for


def _probe_verdict(
    hidden: torch.Tensor,
    logits: torch.Tensor | None,
    reference: tuple[torch.Tensor, torch.Tensor | None],
    dtype: torch.dtype,
    offsets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[str, float]:
    """The verdict and min cosine of probe rows ``hidden`` (P, L, d) and ``logits`` (P, V)
    against the single-text ``reference`` (hidden, logits), by the rule of :mod:`.verdicts`.

    Under ``mean``/``tokens`` pooling ``logits`` are None (no top-1 for a pooled state);
    under ``tokens`` ``offsets`` is ``(offsets, reference offsets)``, the rows are compared
    text by text and another row count than the reference's is corrupted.
    """
    from ..logit_lens import logit_tolerance

    rows_match = True
    if offsets is not None:
        measured = metrics.per_text_token_metrics(hidden, offsets[0], reference[0], offsets[1])
        cosine, relative_l2 = measured["cosine"], measured["relative_l2"]  # (P, L)
        rows_match = not bool(measured["rows_differ"].any())
    else:
        cosine = metrics.cosine_similarity(hidden, reference[0])  # (P, L)
        relative_l2 = metrics.relative_l2_error(hidden, reference[0])
    min_cosine = float(cosine.min()) if not torch.isnan(cosine).any() else float("nan")
    max_relative_l2 = float(relative_l2.max()) if not torch.isnan(relative_l2).any() else float("nan")
    nonfinite = metrics.nonfinite_count(hidden)
    top1 = True
    if logits is not None:
        atol, rtol = logit_tolerance(dtype)
        top1 = bool(metrics.top1_agrees(logits, reference[1], atol, rtol).all())
        nonfinite += metrics.nonfinite_count(logits)
    verdict = verdict_for(
        min_cosine,
        top1,
        nonfinite > 0,
        max_relative_l2=max_relative_l2,
        rows_match=rows_match,
        dtype=str(dtype).removeprefix("torch."),
    )
    return verdict, min_cosine


def _concat_results(parts: Sequence[ExtractionResult]) -> ExtractionResult:
    """One-text extractions as one: states, logits, per-text facts and (tokens) offsets concatenated."""
    first = parts[0]
    offsets = None
    if first.pooling == "tokens":
        offsets = row_offsets(torch.tensor([len(p.hidden) for p in parts]))
    facts = (
        "read_token_ids",
        "read_position_ids",
        "read_is_pad",
        "saw_other_text",
        "saw_padding",
        "after_other_text",
        "after_padding",
    )
    return replace(
        first,
        **{name: torch.cat([getattr(p, name) for p in parts]) for name in facts},
        hidden=torch.cat([p.hidden for p in parts]),
        logits=torch.cat([p.logits for p in parts]) if first.logits is not None else None,
        offsets=offsets,
    )
