"""Metric functions against hand-computed values and torch references."""

import math

import pytest
import torch

from extraction import metrics


def test_cosine_hand_computed():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 1.0], [-3.0, -4.0]])
    assert metrics.cosine_similarity(a, b).tolist() == pytest.approx([0.0, 1.0, -1.0])


def test_cosine_matches_torch_reference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, 16, generator=g), torch.randn(5, 7, 16, generator=g)
    expected = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
    torch.testing.assert_close(metrics.cosine_similarity(a, b), expected)


def test_cosine_nan_propagates_instead_of_averaging_away():
    a = torch.tensor([[1.0, float("nan")], [1.0, 2.0]])
    b = torch.tensor([[1.0, 2.0], [1.0, float("inf")]])
    out = metrics.cosine_similarity(a, b)
    assert torch.isnan(out).all()


def test_relative_l2_and_max_abs_hand_computed():
    est = torch.tensor([3.0, 4.0])
    ref = torch.tensor([0.0, 4.0])
    assert metrics.relative_l2_error(est, ref).item() == pytest.approx(3.0 / 4.0)
    assert metrics.max_abs_diff(est, ref).item() == pytest.approx(3.0)


def test_kl_hand_computed_and_zero_for_identical():
    p_logits = torch.log(torch.tensor([0.5, 0.5]))
    q_logits = torch.log(torch.tensor([0.25, 0.75]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert metrics.kl_divergence(p_logits, q_logits).item() == pytest.approx(expected)
    assert metrics.kl_divergence(q_logits, q_logits).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_matches_torch_reference():
    g = torch.Generator().manual_seed(1)
    p, q = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    expected = torch.nn.functional.kl_div(
        torch.log_softmax(q.double(), -1), torch.log_softmax(p.double(), -1), log_target=True, reduction="none"
    ).sum(-1)
    torch.testing.assert_close(metrics.kl_divergence(p, q), expected)


def test_top1_agrees_exact_and_near_tie():
    reference = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0 - 1e-6, 0.0], [5.0, 4.0, 0.0]])
    logits = torch.tensor([[0.0, 9.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    # row 0: same argmax; row 1: the chosen token ties the reference's max within 1e-4; row 2: a real miss
    assert metrics.top1_agrees(logits, reference).tolist() == [True, True, False]


def test_top1_never_agrees_on_nonfinite():
    reference = torch.tensor([[1.0, 2.0]])
    assert metrics.top1_agrees(torch.tensor([[float("nan"), 0.0]]), reference).tolist() == [False]


def test_nonfinite_count():
    assert metrics.nonfinite_count(torch.tensor([1.0, float("nan"), float("inf"), -float("inf")])) == 3


def test_cosine_of_identical_zero_vectors_is_one_but_zero_against_nonzero_is_zero():
    zero, one = torch.zeros(2, 4), torch.ones(2, 4)
    assert metrics.cosine_similarity(zero, zero).tolist() == [1.0, 1.0]
    assert metrics.cosine_similarity(zero, one).tolist() == [0.0, 0.0]
