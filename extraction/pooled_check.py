"""Stored pooled rows (``mean`` or ``tokens``) measured against single-text extraction.

The check ``extract --verify`` runs under ``mean``/``tokens`` pooling (under ``last`` it is
:func:`~extraction.audit.check.check_rows`, which also has the ``lm_head`` top-1): the
sampled texts are extracted again one text a pass (``single``) with the same pooling and
layers, and judged with the verdict rule of :mod:`extraction.verdicts` (cosine, relative L2,
and under ``tokens`` the row count: a text with another number of rows than its tokens is
``corrupted``). ``lm_head`` agreement is not defined for a pooled state, so none is asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from . import metrics
from .extract import extract_states
from .pooling import Pooling, parse_pooling
from .texts import TokenizedTexts
from .verdicts import Verdict, verdict_for

if TYPE_CHECKING:
    from .models import LoadedModel


@dataclass
class PooledCheck:
    """K stored texts' pooled rows against single-text extraction (L stored layers)."""

    pooling: Pooling
    cosine: torch.Tensor  # (K, L): under tokens the worst over the text's rows
    relative_l2: torch.Tensor  # (K, L): under tokens the largest over the text's rows
    rows_differ: torch.Tensor  # (K,) bool: another row count than single gives (tokens; all False for mean)
    nonfinite: int  # NaN/inf entries among the stored rows

    @property
    def min_cosine(self) -> float:
        return float(self.cosine.min()) if self.cosine.numel() else float("nan")

    @property
    def max_relative_l2(self) -> float:
        return float(self.relative_l2.nan_to_num(float("inf")).max()) if self.relative_l2.numel() else float("nan")

    @property
    def verdict(self) -> Verdict:
        return verdict_for(
            self.min_cosine,
            True,  # no lm_head agreement for a pooled state
            self.nonfinite > 0,
            max_relative_l2=self.max_relative_l2,
            rows_match=not bool(self.rows_differ.any()),
        )


def check_pooled_rows(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    stored: torch.Tensor,
    layers: Sequence[int],
    pooling: Pooling,
    offsets: torch.Tensor | None = None,
) -> PooledCheck:
    """Re-extract ``tokenized`` (K texts) one at a time with ``pooling`` and measure ``stored``.

    ``mean``: ``stored`` is ``(K, L, d)``. ``tokens``: ``stored`` is ``(R, L, d)`` with
    ``offsets`` ``(K + 1,)`` (text k owns ``stored[offsets[k]:offsets[k + 1]]``), compared row
    by row over the rows both have (:func:`~extraction.metrics.per_text_token_metrics`).
    """
    pooling = parse_pooling(pooling)
    if pooling == "last":
        raise ValueError("last-token rows are checked by audit.check.check_rows (it has the lm_head top-1)")
    fresh = extract_states(loaded, tokenized, "single", layers=list(layers), keep_logits=False, pooling=pooling)
    if pooling == "tokens":
        if offsets is None:
            raise ValueError("tokens rows need their offsets")
        measured = metrics.per_text_token_metrics(stored, offsets, fresh.hidden, fresh.offsets)
        cosine, relative_l2 = measured["cosine"].float(), measured["relative_l2"].float()
        rows_differ = measured["rows_differ"]
    else:
        cosine = metrics.cosine_similarity(stored, fresh.hidden).float()  # (K, L)
        relative_l2 = metrics.relative_l2_error(stored, fresh.hidden).float()
        rows_differ = torch.zeros(len(tokenized), dtype=torch.bool)
    return PooledCheck(pooling, cosine, relative_l2, rows_differ, metrics.nonfinite_count(stored))
