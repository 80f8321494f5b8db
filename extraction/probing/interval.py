"""The mean of a few per-split values and its t-interval (pure): how the probe sweep says
whether a gap is more than the luck of the split. Below :mod:`.probe_sweep` (which computes
the intervals) and :mod:`.probe_findings` (which words them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Coverage of the intervals.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """The mean of K per-split values and its two-sided interval (None when K = 1)."""

    mean: float
    low: float | None
    high: float | None

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (an interval touching 0, or none at all, is not significant)."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` (K numbers, one per split) and its t-interval:

    ``mean ± t_{(1 + confidence) / 2, K - 1} · s / sqrt(K)``, with ``s`` the sample standard
    deviation (``ddof = 1``) and ``t_{q, K-1}`` the ``q`` quantile of Student's t with ``K - 1``
    degrees of freedom (2.776 for K = 5 at 95%). Equal values give a zero-width interval; one
    value gives no interval (``low = high = None``). ``ValueError`` for no values, NaN, or a
    ``confidence`` outside (0, 1).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"need a non-empty 1-D sequence of values, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values contain NaN or inf")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    mean = float(values.mean())
    if values.size == 1:
        return Interval(mean, None, None)
    half_width = float(stats.t.ppf((1 + confidence) / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return Interval(mean, mean - half_width, mean + half_width)
