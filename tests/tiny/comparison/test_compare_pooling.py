"""compare under mean and tokens pooling on both tiny architectures: verdicts and causes as
issue 11 states them, derived from the layout (float32, texts of mixed lengths)."""

from __future__ import annotations

import json

import pytest

from extraction.comparison import compare as compare_module
from extraction.comparison.compare import compare_strategies
from extraction.strategies import STRATEGIES

TEXTS = [
    "The cat sat on the mat today.",
    "Hi",
    "A much longer sentence about padding and what it does to the states we read.",
    "Short one here",
    "x y",
]

#: What the issue expects in float32 on mixed lengths; every other strategy is exact.
CORRUPTED = {
    "tiny-random-llama": {"right-naive": "pad-state", "packed-naive": "cross-text"},
    "tiny-random-gpt2": {"right-naive": "pad-state", "packed-naive": "cross-text", "left-naive": "position-shift"},
}


@pytest.mark.parametrize("pooling", ["mean", "tokens"])
def test_every_strategy_gets_the_expected_verdict_and_cause(tiny_model, pooling):
    report = compare_strategies(tiny_model, TEXTS, batch_size=4, pooling=pooling)
    assert report.pooling == pooling and list(report.strategies) == list(STRATEGIES)
    expected = CORRUPTED[tiny_model.name]
    for name, comparison in report.strategies.items():
        assert comparison.pooling == pooling
        assert comparison.top1_agreement is None and comparison.logit_lens_agreement is None
        if name in expected:
            assert (comparison.verdict, comparison.cause_kind) == ("corrupted", expected[name]), (
                name,
                comparison.cause,
            )
        else:
            assert (comparison.verdict, comparison.cause_kind) == ("exact", "none"), (name, comparison.cause)


def test_tokens_right_naive_keeps_pad_positions_as_rows(tiny_llama):
    report = compare_strategies(tiny_llama, TEXTS, batch_size=5, pooling="tokens")
    naive, single = report.strategies["right-naive"].extraction, report.reference
    lengths = report.tokenized.lengths
    assert single.offsets.diff().tolist() == lengths
    assert naive.offsets.diff().tolist() == [max(lengths)] * len(TEXTS)  # every column of the one padded row
    assert naive.hidden.shape[0] == max(lengths) * len(TEXTS)
    differ = report.strategies["right-naive"].rows_differ
    assert differ.tolist() == [n < max(lengths) for n in lengths]
    assert report.strategies["right"].rows_differ.sum() == 0


def test_mean_pads_counted_are_the_cause_named_by_the_layout(tiny_llama):
    report = compare_strategies(tiny_llama, TEXTS, batch_size=5, pooling="mean")
    naive = report.strategies["right-naive"]
    lengths = report.tokenized.lengths
    assert naive.extraction.read_is_pad.tolist() == [n < max(lengths) for n in lengths]
    assert not report.strategies["right"].extraction.read_is_pad.any()


def test_json_carries_the_pooling_and_no_lm_head_figures(tiny_gpt2, tmp_path):
    payload = compare_strategies(tiny_gpt2, TEXTS, batch_size=4, pooling="mean").to_json_dict()
    payload = json.loads(json.dumps(payload))  # JSON-ready
    assert payload["pooling"] == "mean"
    for record in payload["strategies"].values():
        assert record["pooling"] == "mean"
        assert record["top1_agreement"] is None and record["logit_lens_agreement"] is None


def test_tokens_comparison_is_capped_with_a_note(tiny_llama, monkeypatch):
    num_states, width = tiny_llama.num_hidden_layers + 1, tiny_llama.hidden_size
    monkeypatch.setattr(compare_module, "MAX_COMPARED_TOKEN_VALUES", 12 * num_states * width)
    report = compare_strategies(tiny_llama, TEXTS, batch_size=4, pooling="tokens", strategies="right")
    assert len(report.tokenized) < len(TEXTS)
    assert sum(report.tokenized.lengths) <= 12 or len(report.tokenized) == 1
    assert any("tokens" in note and f"of {len(TEXTS)} texts" in note for note in report.notes)
