"""The verdict vocabulary and its thresholds: one word for one idea, one constant for one bound.

Every report (compare, audit, extract's verification, probe) says ``exact``, ``drift`` or
``corrupted`` about extracted states measured against single-sample extraction:

* ``exact``: min cosine >= :data:`EXACT_COSINE` and the same ``lm_head`` top-1;
* ``drift``: min cosine >= :data:`DRIFT_COSINE` (rounding-level differences);
* ``corrupted``: anything lower, or any NaN/inf; per row, :func:`corrupted_rows`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Verdict = Literal["exact", "drift", "corrupted"]
VERDICTS: tuple[Verdict, ...] = ("exact", "drift", "corrupted")
#: Lowest cosine to single-sample extraction still called exact.
EXACT_COSINE = 0.9999
#: Lowest cosine still called drift; below it states are corrupted.
DRIFT_COSINE = 0.99


def verdict_for(min_cosine: float, all_top1_same: bool, any_nonfinite: bool = False) -> Verdict:
    """The verdict rule above, as a pure function."""
    if any_nonfinite or math.isnan(min_cosine):  # NaN never passes
        return "corrupted"
    if min_cosine >= EXACT_COSINE and all_top1_same:
        return "exact"
    if min_cosine >= DRIFT_COSINE:
        return "drift"
    return "corrupted"


def corrupted_rows(min_cosine_per_row: torch.Tensor) -> torch.Tensor:
    """(K,) bool: which rows are corrupted, ``min_cosine < DRIFT_COSINE`` or NaN, given each
    row's worst cosine to single-sample extraction (K,)."""
    return min_cosine_per_row.isnan() | (min_cosine_per_row < DRIFT_COSINE)
