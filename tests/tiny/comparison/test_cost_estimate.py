"""The Probe page's time estimate: the cost model at a measured rate (extraction.comparison.cost,
extraction.probing.features.extraction_estimate), on the tiny random Llama."""

from __future__ import annotations

import math

import pytest

from extraction.comparison.cost import body_parameters, extraction_seconds, measured_rate, pass_flops
from extraction.probing.features import extraction_estimate
from extraction.texts import tokenize_texts

TEXTS = ["a", "the cat sat", "the cat sat on the mat and looked at the door", "padding is not a text"]


def test_extraction_seconds_is_the_cost_model_at_the_rate(tiny_llama):
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    lengths = tokenized.lengths
    body = body_parameters(tiny_llama.model)
    # FLOPs only (no cost a pass), 1 GFLOP/s: single is one pass a text, each of its own length.
    seconds = extraction_seconds(tiny_llama, lengths, ["single", "right"], 8, None, (0.0, 1e9))
    by_hand = sum(pass_flops(body, tiny_llama.hidden_size, tiny_llama.num_hidden_layers, 1, n) for n in lengths)
    assert seconds["single"] == pytest.approx(by_hand / 1e9)
    # right: one padded pass of every text at the longest length costs more FLOPs than single's.
    padded = pass_flops(body, tiny_llama.hidden_size, tiny_llama.num_hidden_layers, len(lengths), max(lengths))
    assert seconds["right"] == pytest.approx(padded / 1e9)
    # A cost a pass adds passes x that cost: 4 passes for single, 1 for right.
    with_pass = extraction_seconds(tiny_llama, lengths, ["single", "right"], 8, None, (0.5, 1e9))
    assert with_pass["single"] - seconds["single"] == pytest.approx(2.0)
    assert with_pass["right"] - seconds["right"] == pytest.approx(0.5)


def test_measured_rate_fits_a_few_single_passes(tiny_llama):
    token_ids = tokenize_texts(tiny_llama.tokenizer, TEXTS).token_ids
    shapes: list[tuple[int, ...]] = []
    handle = tiny_llama.model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: shapes.append(tuple(args[0].shape))
    )
    try:
        pass_seconds, flops_per_second = measured_rate(tiny_llama, token_ids, passes=3)
    finally:
        handle.remove()
    lengths = sorted(len(ids) for ids in token_ids)
    # A warm-up pass, then the shortest, a middle and the longest text, one text a pass.
    assert shapes == [(1, lengths[0]), (1, lengths[0]), (1, lengths[2]), (1, lengths[-1])]
    assert math.isfinite(flops_per_second) and flops_per_second > 0.0 and math.isfinite(pass_seconds)


def test_estimate_is_the_cost_model_at_the_measured_rate(tiny_llama, monkeypatch):
    import extraction.probing.features as probe_features

    monkeypatch.setattr(probe_features, "measured_rate", lambda loaded, token_ids: (0.25, 2e9))
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    estimate = extraction_estimate(tiny_llama, tokenized, ["single", "packed"], 4, None)
    assert estimate == extraction_seconds(tiny_llama, tokenized.lengths, ["single", "packed"], 4, None, (0.25, 2e9))


def test_a_shortened_pass_costs_the_blocks_it_runs(tiny_llama, monkeypatch):
    import extraction.probing.features as probe_features

    body, d, n = body_parameters(tiny_llama.model), tiny_llama.hidden_size, tiny_llama.num_hidden_layers
    # Half the blocks: half the body's matrix products and half the attention.
    assert pass_flops(body, d, n, 2, 7, blocks_run=n // 2) == pytest.approx(pass_flops(body, d, n, 2, 7) / 2)
    assert pass_flops(body, d, n, 2, 7, blocks_run=n) == pass_flops(body, d, n, 2, 7)
    assert pass_flops(10, 2, 4, rows=1, cols=3, blocks_run=1) == 0.25 * 2 * 10 * 3 + 4 * 2 * 1 * 9
    monkeypatch.setattr(probe_features, "measured_rate", lambda loaded, token_ids: (0.0, 1e9))
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    full = extraction_estimate(tiny_llama, tokenized, ["single"], 4, None)
    middle = extraction_estimate(tiny_llama, tokenized, ["single"], 4, None, layers=[0, n // 2])
    with_last = extraction_estimate(tiny_llama, tokenized, ["single"], 4, None, layers=[1, n])
    assert middle["single"] == pytest.approx(full["single"] / 2) and with_last == full
