"""On the real embedded model (Llama architecture, RoPE) in float32: the truth, measured."""

import pytest

from extraction.compare import compare_strategies
from extraction.samples import SAMPLE_TEXTS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(embedded_model):
    loaded = embedded_model
    return compare_strategies(loaded, SAMPLE_TEXTS[:8], batch_size=4)


def test_right_at_the_right_index_and_plain_left_padding_are_exact(report):
    for name in ("right", "left-naive", "left", "sorted", "bucketed", "packed"):
        assert report.strategies[name].verdict == "exact", (name, report.strategies[name].cause)


def test_reading_position_minus_one_and_unmasked_packing_are_corrupted(report):
    assert report.strategies["right-naive"].verdict == "corrupted"
    assert "pad token" in report.strategies["right-naive"].cause
    assert report.strategies["right-naive"].cause_kind == "pad-state"
    assert report.strategies["packed-naive"].cause_kind == "cross-text"
    assert report.strategies["packed-naive"].verdict == "corrupted"
    assert report.strategies["right-naive"].top1_agreement < 1.0


def test_final_state_is_post_norm_and_logit_lens_ends_in_agreement(report):
    single = report.strategies["single"]
    assert single.lm_head_reproduces.all()
    assert single.logit_lens_agreement[-1] == 1.0
    right = report.strategies["right"]
    assert right.logit_lens_agreement.min() == 1.0
