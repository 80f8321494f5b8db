"""The verdict rule (extraction.verdicts) on constructed states, no model."""

import pytest
import torch

from extraction import metrics
from extraction.verdicts import (
    CAUSE_KINDS,
    CORRUPTED_RELATIVE_L2,
    DRIFT_COSINE,
    EXACT_COSINE,
    corrupted_rows,
    verdict_for,
)


def massive_activation_states(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(true, wrong) states (4, 576) shaped like SmolLM2's middle layers: one dimension near
    2,000, the others a few units. ``wrong`` keeps the massive dimension's direction at about
    half its size (a mean with as many pads as tokens counted in it) and has other small values."""
    generator = torch.Generator().manual_seed(seed)
    true = 2.0 * torch.randn(4, 576, generator=generator)
    true[:, 0] = 2000.0
    wrong = 2.0 * torch.randn(4, 576, generator=generator)
    wrong[:, 0] = 950.0
    return true, wrong


def test_massive_activation_fools_cosine_but_not_relative_l2():
    true, wrong = massive_activation_states()
    cosine = metrics.cosine_similarity(wrong, true)  # (4,)
    relative_l2 = metrics.relative_l2_error(wrong, true)  # (4,)
    # the situation of NOTES.md: cosine says drift, relative L2 says half the vector is wrong
    assert float(cosine.min()) >= DRIFT_COSINE
    assert float(relative_l2.min()) >= 0.5
    # cosine alone (the rule before relative L2 joined it) calls it drift ...
    assert verdict_for(float(cosine.min()), all_top1_same=True) == "drift"
    # ... with the largest relative L2 error it is corrupted, and so is every row
    assert verdict_for(float(cosine.min()), True, max_relative_l2=float(relative_l2.max())) == "corrupted"
    assert corrupted_rows(cosine, relative_l2).all()
    assert not corrupted_rows(cosine).any()


def test_relative_l2_bound_is_inclusive_and_nan_never_passes():
    assert verdict_for(1.0, True, max_relative_l2=CORRUPTED_RELATIVE_L2) == "exact"
    assert verdict_for(EXACT_COSINE, True, max_relative_l2=CORRUPTED_RELATIVE_L2 * 1.01) == "corrupted"
    assert verdict_for(DRIFT_COSINE, True, max_relative_l2=CORRUPTED_RELATIVE_L2) == "drift"
    assert verdict_for(1.0, True, max_relative_l2=float("nan")) == "corrupted"
    rows = corrupted_rows(torch.tensor([1.0, 1.0, 0.5, 1.0]), torch.tensor([0.0, 0.2, 0.0, float("nan")]))
    assert rows.tolist() == [False, True, True, True]


def test_a_scaled_state_keeps_cosine_one_and_is_corrupted():
    true = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    scaled = 1.5 * true
    cosine, relative_l2 = metrics.cosine_similarity(scaled, true), metrics.relative_l2_error(scaled, true)
    assert float(cosine.min()) == pytest.approx(1.0)
    assert verdict_for(float(cosine.min()), True, max_relative_l2=float(relative_l2.max())) == "corrupted"


def test_cause_kinds_are_the_documented_closed_set():
    assert CAUSE_KINDS == (
        "none",
        "pad-state",
        "position-shift",
        "cross-text",
        "window",
        "rounding",
        "kernels",
        "other-layer",
        "other-position",
        "other-tokens",
        "other-row",
        "unknown",
    )


def test_float32_differences_above_rounding_are_corrupted_however_high_the_cosine():
    from extraction.verdicts import FLOAT32_ROUNDING_RELATIVE_L2

    small_leak = FLOAT32_ROUNDING_RELATIVE_L2 * 10  # cosine about 1 - 5e-7: exact by cosine alone
    assert verdict_for(1.0, True, max_relative_l2=small_leak) == "exact"  # no dtype: stored states, other builds
    assert verdict_for(1.0, True, max_relative_l2=small_leak, dtype="bfloat16") == "exact"
    assert verdict_for(1.0, True, max_relative_l2=small_leak, dtype="float32") == "corrupted"
    assert verdict_for(1.0, True, max_relative_l2=FLOAT32_ROUNDING_RELATIVE_L2, dtype="float32") == "exact"
    rows = corrupted_rows(torch.ones(2), torch.tensor([0.0, small_leak]), dtype="float32")
    assert rows.tolist() == [False, True]
