"""Which rows an audit checks, and what checking them proves about the rest of the store.

The sample is uniform over the store's rows and seeded (:class:`RowSample`): each row's place in
the draw is the first time a seeded stream of uniform integers names it, so a larger sample of the
same seed contains the smaller one (an audit that samples in rounds, :func:`round_sizes`, adds rows
and never swaps them). For a folder of shards the sample is stratified by shard: the rows are shared
among the shards in proportion to their sizes (Webster's divisor method, :func:`allocate`, which
never takes a row from a shard when the sample grows) and drawn uniformly within each.

:func:`clopper_pearson` is the exact binomial interval for the fraction of the store's rows that
are corrupted, from the corrupted count among the rows checked. It treats the sample as draws with
replacement from the store; without replacement (as here) the true coverage is at least as high,
and proportional stratification does not lower it either, so the interval is conservative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

CONFIDENCE = 0.95
FIRST_ROUND = 64  # rows of the first round when sampling until a bound is shown (--max-corrupted)
_DRAW_CHUNK = 4096


def clopper_pearson(corrupted: int, checked: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval for a binomial proportion (pure).

    With ``x = corrupted`` of ``n = checked`` rows and ``a = 1 - confidence``::

        low  = B(a/2;     x,     n - x + 1)   (0 when x = 0)
        high = B(1 - a/2; x + 1, n - x)       (1 when x = n)

    where ``B(q; a, b)`` is the ``q`` quantile of the Beta(a, b) distribution. It is the set of
    fractions p for which ``P(X >= x) > a/2`` and ``P(X <= x) > a/2`` under X ~ Binomial(n, p); with
    x = 0 the upper bound is ``1 - (a/2)^(1/n)`` (about 3.69/n at 95%).
    """
    if checked < 1:
        raise ValueError(f"the interval needs at least 1 row checked, got {checked}")
    if not 0 <= corrupted <= checked:
        raise ValueError(f"corrupted rows must be between 0 and the {checked} checked, got {corrupted}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    alpha = 1 - confidence
    low = 0.0 if corrupted == 0 else float(beta.ppf(alpha / 2, corrupted, checked - corrupted + 1))
    high = 1.0 if corrupted == checked else float(beta.ppf(1 - alpha / 2, corrupted + 1, checked - corrupted))
    return low, high


def rows_to_show(max_fraction: float, confidence: float = CONFIDENCE) -> int:
    """The fewest clean rows whose interval's upper bound is below ``max_fraction``:
    the smallest n with ``1 - (a/2)^(1/n) < max_fraction``, i.e. ``n > ln(a/2) / ln(1 - max_fraction)``."""
    if not 0 < max_fraction < 1:
        raise ValueError(f"the largest corrupted fraction must be between 0 and 1, got {max_fraction}")
    return math.floor(math.log((1 - confidence) / 2) / math.log1p(-max_fraction)) + 1


def round_sizes(n: int, max_fraction: float, first: int = FIRST_ROUND) -> list[int]:
    """Cumulative sample sizes of the rounds of an audit that samples until the upper bound is
    below ``max_fraction``: doubling from ``first`` up to :func:`rows_to_show` (the size that
    proves it when no row is corrupted), never more than the ``n`` rows of the store."""
    target = min(n, rows_to_show(max_fraction))
    sizes = []
    size = min(first, target)
    while size < target:
        sizes.append(size)
        size *= 2
    return [*sizes, target]


def allocate(sizes: Sequence[int], total: int) -> list[int]:
    """``total`` rows shared among strata of ``sizes`` rows in proportion (Webster / Sainte-Laguë:
    each next row goes to the stratum with the largest ``size / (2 * taken + 1)``, ties to the
    first; a full stratum takes no more). Growing ``total`` never lowers a stratum's share."""
    if total > sum(sizes):
        raise ValueError(f"cannot take {total} rows from {sum(sizes)}")
    taken = [0] * len(sizes)
    for _ in range(total):
        best = max(
            (s for s in range(len(sizes)) if taken[s] < sizes[s]), key=lambda s: (sizes[s] / (2 * taken[s] + 1), -s)
        )
        taken[best] += 1
    return taken


def first_distinct(n: int, count: int, seed: Sequence[int]) -> list[int]:
    """The first ``count`` distinct values of a seeded stream of uniform integers in ``[0, n)``: a
    uniform sample without replacement, in draw order, whose prefixes are the smaller samples."""
    if count >= n:
        return list(range(n))
    rng = np.random.default_rng(list(seed))
    seen: set[int] = set()
    order: list[int] = []
    while len(order) < count:
        for value in rng.integers(0, n, size=_DRAW_CHUNK).tolist():
            if value not in seen:
                seen.add(value)
                order.append(value)
                if len(order) == count:
                    break
    return order


@dataclass(frozen=True)
class RowSample:
    """``size`` rows (None: all) drawn with ``seed``; ``bounds`` ``[0, end_0, ..., N]`` are shard
    boundaries for a sample stratified by shard (None: one stratum)."""

    size: int | None = None
    seed: int = 0
    bounds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 1:
            raise ValueError(f"sample must be at least 1, got {self.size}")

    def draw(self, n: int) -> list[int]:
        """The sampled row indices of a store of ``n`` rows, ascending."""
        if self.size is None or self.size >= n:
            return list(range(n))
        bounds = list(self.bounds) if self.bounds is not None and self.bounds[-1] == n else [0, n]
        sizes = [high - low for low, high in zip(bounds, bounds[1:], strict=False)]
        shares = allocate(sizes, self.size) if len(sizes) > 1 else [self.size]
        rows: list[int] = []
        for stratum, (low, share) in enumerate(zip(bounds, shares, strict=False)):
            rows += [low + r for r in first_distinct(sizes[stratum], share, (self.seed, stratum))]
        return sorted(rows)

    def grown(self, size: int) -> RowSample:
        return RowSample(size, self.seed, self.bounds)
