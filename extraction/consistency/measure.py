"""How far one text's states from one call are from its states from another (pure): the
:class:`Distance` of two blocks, and the audit's :class:`~extraction.audit.RowCheck` of many."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..audit.check import state_cosine, state_relative_l2
from ..audit.row_check import RowCheck
from ..verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE


@dataclass(frozen=True)
class Distance:
    """A text's states ``tested`` against ``truth``, per layer (L,): under ``tokens`` the worst over
    the rows both have, position by position, and ``rows_differ`` when their row counts differ."""

    cosine: torch.Tensor  # (L,) cos(tested, truth), the minimum over token rows
    relative_l2: torch.Tensor  # (L,) |tested - truth| / |truth|, the maximum over token rows
    norm_ratio: torch.Tensor  # (L,) |tested| / |truth|, the mean over token rows
    bit_exact: bool
    rows_differ: bool

    @property
    def min_cosine(self) -> float:
        return float(self.cosine.nan_to_num(-1.0).min())

    @property
    def max_relative_l2(self) -> float:
        return float(self.relative_l2.nan_to_num(float("inf")).max())

    @property
    def corrupted(self) -> bool:
        """Beyond drift (:mod:`extraction.verdicts`), or another row count."""
        return self.rows_differ or self.min_cosine < DRIFT_COSINE or self.max_relative_l2 > CORRUPTED_RELATIVE_L2

    def beyond(self, tolerance: float) -> bool:
        """Another row count, or a relative L2 error above ``tolerance`` at some layer."""
        return self.rows_differ or self.max_relative_l2 > tolerance

    def to_dict(self) -> dict:
        return {
            "min_cosine": _clean(self.min_cosine),
            "max_relative_l2": _clean(self.max_relative_l2),
            "bit_exact": self.bit_exact,
            "rows_differ": self.rows_differ,
        }


def distance(tested: torch.Tensor, truth: torch.Tensor) -> Distance:
    """:class:`Distance` of ``tested`` from ``truth``, each ``(L, d)`` (``tokens``: ``(m, L, d)``)."""
    rows_differ = tested.shape != truth.shape
    if tested.dim() == 3:  # tokens: the rows both have, position by position
        common = min(len(tested), len(truth))
        tested, truth = tested[:common], truth[:common]
        if common == 0:
            nan = torch.full((tested.shape[1],), float("nan"))
            return Distance(nan, nan, nan, False, rows_differ)
    cosine = state_cosine(tested, truth).double()  # (L,) or (m, L)
    relative_l2 = state_relative_l2(tested, truth).double()
    norm_ratio = tested.double().norm(dim=-1) / truth.double().norm(dim=-1).clamp(min=1e-12)
    if cosine.dim() == 2:
        cosine, relative_l2, norm_ratio = cosine.amin(0), relative_l2.amax(0), norm_ratio.mean(0)
    bit_exact = not rows_differ and bool((tested == truth).all())
    return Distance(cosine.float(), relative_l2.float(), norm_ratio.float(), bit_exact, rows_differ)


def row_check(distances: list[Distance], tokens: bool) -> RowCheck:
    """The audit's :class:`~extraction.audit.RowCheck` of K texts' distances (no lm_head checks:
    there is no model)."""
    return RowCheck(
        cosine=torch.stack([d.cosine for d in distances]),
        relative_l2=torch.stack([d.relative_l2 for d in distances]),
        bit_exact=torch.tensor([d.bit_exact for d in distances], dtype=torch.bool),
        norm_ratio=torch.stack([d.norm_ratio for d in distances]),
        top1_stored=None,
        top1_fresh=None,
        top1_same=None,
        top1_stored_renormed=None,
        rows_differ=torch.tensor([d.rows_differ for d in distances], dtype=torch.bool) if tokens else None,
    )


def _clean(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value
