"""On the real embedded model (Llama architecture, RoPE) in float32: the truth, measured."""

import pytest

from extraction.comparison.compare import compare_strategies
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


def test_chat_texts_ending_in_the_pad_token_get_pad_state_not_cross_text(embedded_model):
    texts = [
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help you today?<|im_end|>",
        "<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>",
        "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>",
        "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\nAir scatters blue.<|im_end|>",
    ]
    report = compare_strategies(embedded_model, texts, strategies="right-naive,right", batch_size=4)
    assert all(ids[-1] == embedded_model.pad_token_id for ids in report.tokenized.token_ids)
    naive = report.strategies["right-naive"]
    assert naive.verdict == "corrupted"
    assert naive.cause_kind == "pad-state", naive.cause
    assert not naive.extraction.saw_other_text.any()
    assert (report.strategies["right"].verdict, report.strategies["right"].cause_kind) == ("exact", "none")
