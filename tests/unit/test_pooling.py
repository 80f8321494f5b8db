"""Pooling is pure tensor code over batch layouts: which positions a text pools, checked by hand."""

import pytest
import torch

from extraction import metrics
from extraction.pooling import POOLINGS, parse_pooling, pool_rows, pooled_positions, row_offsets, span_facts
from extraction.strategies import STRATEGIES, get_strategy
from extraction.verdicts import verdict_for

PAD = 0
TOKENS = [[5, 6, 7], [8], [9, 10]]


def test_pooling_names_and_a_clear_error():
    assert POOLINGS == ("last", "mean", "tokens")
    with pytest.raises(ValueError, match="valid: last, mean, tokens"):
        parse_pooling("max")


def _positions_by_text(layout, pooling):
    rows, cols, owner = pooled_positions(layout, pooling)
    return {k: list(zip(rows[owner == k].tolist(), cols[owner == k].tolist(), strict=True)) for k in range(len(TOKENS))}


def test_right_naive_pools_every_column_of_the_row_the_others_the_real_tokens():
    naive = _positions_by_text(get_strategy("right-naive").layout(TOKENS, PAD), "mean")
    assert naive == {0: [(0, 0), (0, 1), (0, 2)], 1: [(1, 0), (1, 1), (1, 2)], 2: [(2, 0), (2, 1), (2, 2)]}
    right = _positions_by_text(get_strategy("right").layout(TOKENS, PAD), "mean")
    assert right == {0: [(0, 0), (0, 1), (0, 2)], 1: [(1, 0)], 2: [(2, 0), (2, 1)]}
    for name in ("left", "left-naive"):
        left = _positions_by_text(get_strategy(name).layout(TOKENS, PAD), "tokens")
        assert left == {0: [(0, 0), (0, 1), (0, 2)], 1: [(1, 2)], 2: [(2, 1), (2, 2)]}
    for name in ("packed", "packed-naive"):
        packed = _positions_by_text(get_strategy(name).layout(TOKENS, PAD), "mean")
        assert packed == {0: [(0, 0), (0, 1), (0, 2)], 1: [(0, 3)], 2: [(0, 4), (0, 5)]}


def test_last_pools_the_read_positions():
    layout = get_strategy("right").layout(TOKENS, PAD)
    rows, cols, owner = pooled_positions(layout, "last")
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [2, 0, 1] and owner.tolist() == [0, 1, 2]


def test_hand_checked_means_on_a_constructed_batch():
    layout = get_strategy("right").layout(TOKENS, PAD)
    naive = get_strategy("right-naive").layout(TOKENS, PAD)
    # A (B, T, d) batch whose state at (row, col) is [10 row + col, 1].
    states = torch.tensor([[[10.0 * r + c, 1.0] for c in range(3)] for r in range(3)])
    rows, cols, owner = pooled_positions(layout, "mean")
    means = pool_rows(states[rows, cols], owner, 3, "mean")
    assert means.tolist() == [[1.0, 1.0], [10.0, 1.0], [20.5, 1.0]]  # (0+1+2)/3, 10, (20+21)/2
    rows, cols, owner = pooled_positions(naive, "mean")
    counted = pool_rows(states[rows, cols], owner, 3, "mean")
    assert counted.tolist() == [[1.0, 1.0], [11.0, 1.0], [21.0, 1.0]]  # pads counted: (10+11+12)/3
    tokens = pool_rows(states[rows, cols], owner, 3, "tokens")
    assert tokens.shape == (9, 2)


def test_span_facts_name_the_pads_counted_and_the_other_texts_seen():
    naive = span_facts(get_strategy("right-naive").layout(TOKENS, PAD), "mean")
    assert naive["read_is_pad"].tolist() == [False, True, True]
    assert naive["rows"].tolist() == [3, 3, 3]
    assert naive["token_ids"].tolist() == [7, 8, 10]  # the last real token of each text
    right = span_facts(get_strategy("right").layout(TOKENS, PAD), "tokens")
    assert not right["read_is_pad"].any() and not right["saw_padding"].any()
    assert right["rows"].tolist() == [3, 1, 2]
    left_naive = span_facts(get_strategy("left-naive").layout(TOKENS, PAD), "mean")
    assert left_naive["position_ids"].tolist() == [2, 2, 2]
    assert span_facts(get_strategy("left").layout(TOKENS, PAD), "mean")["position_ids"].tolist() == [2, 0, 1]
    packed_naive = span_facts(get_strategy("packed-naive").layout(TOKENS, PAD), "mean")
    assert packed_naive["saw_other_text"].tolist() == [False, True, True]
    assert not span_facts(get_strategy("packed").layout(TOKENS, PAD), "mean")["saw_other_text"].any()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_layout_pools_each_text_at_least_its_own_tokens(name):
    texts = {"single": TOKENS[:1], "bucketed": [[5, 6], [9, 10]]}.get(name, TOKENS)
    facts = span_facts(get_strategy(name).layout(texts, PAD), "tokens")
    expected = [len(ids) for ids in texts]
    assert (facts["rows"] >= torch.tensor(expected)).all()
    if name != "right-naive":
        assert facts["rows"].tolist() == expected


def test_row_offsets():
    assert row_offsets(torch.tensor([3, 1, 2])).tolist() == [0, 3, 4, 6]


def test_token_metrics_flag_another_row_count():
    reference = torch.randn(6, 2, 4)
    offsets = torch.tensor([0, 3, 4, 6])
    same = metrics.per_text_token_metrics(reference.clone(), offsets, reference, offsets)
    assert not same["rows_differ"].any() and torch.allclose(same["cosine"], torch.ones(3, 2, dtype=torch.float64))
    padded = torch.cat([reference[:3], reference[3:4], torch.zeros(2, 2, 4), reference[4:]])  # text 2 has 3 rows
    measured = metrics.per_text_token_metrics(padded, torch.tensor([0, 3, 6, 8]), reference, offsets)
    assert measured["rows_differ"].tolist() == [False, True, False]
    assert torch.allclose(measured["cosine"], torch.ones(3, 2, dtype=torch.float64))  # the common rows match
    assert verdict_for(1.0, True, max_relative_l2=0.0, rows_match=False) == "corrupted"
