"""What a sample proves (extraction.audit.sampling): the Clopper-Pearson interval against known
values and its coverage on a store with a planted fraction of bad rows, and the seeded,
prefix-consistent, shard-stratified draw. No model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from extraction.audit.sampling import RowSample, allocate, clopper_pearson, round_sizes, rows_to_show


def test_clopper_pearson_known_values():
    # x = 0: the upper bound has a closed form, 1 - (alpha/2)^(1/n); the "at most 0.3%" of 1,000 rows.
    low, high = clopper_pearson(0, 1000)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 1000), rel=1e-9)
    assert high == pytest.approx(0.003682, abs=1e-6)
    # x = n mirrors it.
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0))
    # The tabulated exact interval for 5 of 10 (R's binom.test gives 0.1870860 0.8129140).
    assert clopper_pearson(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    # The definition, through the binomial tails: P(X >= x | low) = P(X <= x | high) = alpha / 2.
    low, high = clopper_pearson(20, 1000)
    assert binom.sf(19, 1000, low) == pytest.approx(0.025, rel=1e-6)
    assert binom.cdf(20, 1000, high) == pytest.approx(0.025, rel=1e-6)
    assert 0.0122 < low < 0.0123 and 0.0307 < high < 0.0308  # "an interval around 2%"
    with pytest.raises(ValueError, match="at least 1 row"):
        clopper_pearson(0, 0)
    with pytest.raises(ValueError, match="between 0 and the 3 checked"):
        clopper_pearson(4, 3)


@pytest.mark.parametrize("planted", [0.0, 0.004, 0.02, 0.3])
def test_interval_covers_a_planted_fraction_in_19_of_20_seeds(planted):
    n, size = 200_000, 1000
    bad = np.zeros(n, dtype=bool)
    bad[np.random.default_rng(123).choice(n, size=round(planted * n), replace=False)] = True
    truth = bad.mean()
    covered = 0
    for seed in range(20):
        rows = RowSample(size, seed).draw(n)
        assert len(rows) == size
        low, high = clopper_pearson(int(bad[rows].sum()), size)
        covered += low <= truth <= high
    assert covered >= 19


def test_draw_is_seeded_uniform_and_a_larger_sample_contains_the_smaller():
    small, large = RowSample(50, 7).draw(10_000), RowSample(400, 7).draw(10_000)
    assert small == sorted(set(small)) and len(large) == 400
    assert set(small) <= set(large)
    assert RowSample(50, 7).draw(10_000) == small and RowSample(50, 8).draw(10_000) != small
    assert RowSample(None).draw(5) == [0, 1, 2, 3, 4] and RowSample(10).draw(5) == [0, 1, 2, 3, 4]
    # Uniform: the sampled rows' deciles hold about a tenth each (chi-square, 9 dof, p ~ 1e-4 at 33).
    counts = np.bincount(np.array(RowSample(5000, 1).draw(1_000_000)) // 100_000, minlength=10)
    assert ((counts - 500) ** 2 / 500).sum() < 33
    with pytest.raises(ValueError, match="at least 1"):
        RowSample(0)


def test_stratified_by_shard_in_proportion_and_never_taking_rows_back():
    bounds = (0, 100, 400, 1000)  # shards of 100, 300 and 600 rows
    rows = RowSample(100, 3, bounds).draw(1000)
    per_shard = np.histogram(rows, bins=bounds)[0].tolist()
    assert per_shard == [10, 30, 60]
    previous = [0, 0, 0]
    for total in range(1, 1001, 37):
        shares = allocate([100, 300, 600], total)
        assert sum(shares) == total and all(a >= b for a, b in zip(shares, previous, strict=True))
        previous = shares
    assert set(RowSample(40, 3, bounds).draw(1000)) <= set(RowSample(100, 3, bounds).draw(1000))


def test_rounds_double_up_to_the_rows_that_show_the_bound():
    need = rows_to_show(0.005)
    assert clopper_pearson(0, need)[1] < 0.005 <= clopper_pearson(0, need - 1)[1]
    assert need == math.floor(math.log(0.025) / math.log(0.995)) + 1 == 736
    assert round_sizes(10**6, 0.005) == [64, 128, 256, 512, 736]
    assert round_sizes(100, 0.005) == [64, 100]  # never more than the store
    assert round_sizes(10**6, 0.5, first=64) == [6]
    with pytest.raises(ValueError, match="between 0 and 1"):
        rows_to_show(0)
