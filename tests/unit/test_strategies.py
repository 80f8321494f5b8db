"""Batch layouts are pure functions of token ids: checked here without a model."""

import pytest
import torch

from extraction.strategies import STRATEGIES, get_strategy, parse_strategy_names

EXPECTED_NAMES = [
    "single",
    "right-naive",
    "right",
    "left-naive",
    "left",
    "bucketed",
    "sorted",
    "packed",
    "packed-naive",
]
PAD = 0
TOKENS = [[5, 6, 7], [8], [9, 10]]


def test_registry_has_the_documented_names_with_docs():
    assert list(STRATEGIES) == EXPECTED_NAMES
    for strategy in STRATEGIES.values():
        assert strategy.__doc__ and strategy.summary and strategy.breaks_when


def test_unknown_strategy_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: single, right-naive"):
        get_strategy("middle")


def test_parse_strategy_names_puts_single_first_and_dedupes():
    assert parse_strategy_names("left,right,left") == ["single", "left", "right"]
    assert parse_strategy_names("all") == EXPECTED_NAMES
    with pytest.raises(ValueError):
        parse_strategy_names("left,bogus")


def test_right_naive_reads_pad_for_short_texts_and_right_reads_last_real():
    naive = get_strategy("right-naive").layout(TOKENS, PAD)
    fixed = get_strategy("right").layout(TOKENS, PAD)
    assert naive.input_ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert naive.read_facts()["token_ids"].tolist() == [7, 0, 0]
    assert fixed.read_facts()["token_ids"].tolist() == [7, 8, 10]
    assert fixed.read_facts()["position_ids"].tolist() == [2, 0, 1]


def test_left_naive_shifts_positions_and_left_fixes_them():
    naive = get_strategy("left-naive").layout(TOKENS, PAD)
    fixed = get_strategy("left").layout(TOKENS, PAD)
    assert naive.input_ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert naive.read_facts()["position_ids"].tolist() == [2, 2, 2]
    assert fixed.read_facts()["position_ids"].tolist() == [2, 0, 1]
    assert fixed.read_facts()["token_ids"].tolist() == [7, 8, 10]
    # a masked layout: real tokens never see padding
    assert not fixed.read_facts()["saw_padding"].any()


def test_packed_mask_is_block_diagonal_and_naive_sees_other_texts():
    packed = get_strategy("packed").layout(TOKENS, PAD)
    naive = get_strategy("packed-naive").layout(TOKENS, PAD)
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0, 0, 1]]
    assert packed.read_cols.tolist() == [2, 3, 5]
    assert packed.read_facts()["saw_other_text"].tolist() == [False, False, False]
    assert naive.read_facts()["saw_other_text"].tolist() == [False, True, True]
    mask = packed.model_inputs(torch.float32, torch.device("cpu"))["attention_mask"]
    assert mask.shape == (1, 1, 6, 6)
    allowed = mask[0, 0] == 0
    assert allowed[5].tolist() == [False, False, False, False, True, True]
    assert naive.model_inputs(torch.float32, torch.device("cpu"))["attention_mask"].tolist() == [[1] * 6]


def test_plans_cover_every_text_once():
    lengths = [5, 1, 3, 5, 2, 3, 40, 1]
    for strategy in STRATEGIES.values():
        groups = strategy.plan(lengths, batch_size=3)
        flat = sorted(i for group in groups for i in group)
        assert flat == list(range(len(lengths))), strategy.name
        assert all(len(group) <= 3 for group in groups)


def test_bucketed_groups_equal_lengths_only_and_sorted_sorts():
    lengths = [5, 1, 3, 5, 2, 3, 1]
    for group in get_strategy("bucketed").plan(lengths, batch_size=8):
        assert len({lengths[i] for i in group}) == 1
    sorted_groups = get_strategy("sorted").plan(lengths, batch_size=8)
    assert [lengths[i] for i in sorted_groups[0]] == sorted(lengths)


def test_token_budget_splits_batches():
    lengths = [100, 100, 100, 100]
    groups = get_strategy("right").plan(lengths, batch_size=4, max_batch_tokens=250)
    assert groups == [[0, 1], [2, 3]]
    # a single text over the budget still runs, alone
    assert get_strategy("right").plan([500, 1], batch_size=4, max_batch_tokens=250) == [[0], [1]]


# --- read facts at pad reads: text k's own segment is k, whatever the read position holds ---

PAD_ENDING = [[5, 6, PAD], [8], [9, PAD]]  # texts that end in the pad token (chat data ending in eos)


@pytest.mark.parametrize("name", ["right-naive", "left-naive", "right", "left"])
@pytest.mark.parametrize("tokens", [TOKENS, PAD_ENDING])
def test_padding_never_lets_a_text_see_another(name, tokens):
    facts = get_strategy(name).layout(tokens, PAD).read_facts()
    assert facts["saw_other_text"].tolist() == [False, False, False]


@pytest.mark.parametrize("tokens", [TOKENS, PAD_ENDING])
def test_right_naive_pad_reads_come_from_the_layout_not_the_token_id(tokens):
    facts = get_strategy("right-naive").layout(tokens, PAD).read_facts()
    # texts 2 and 3 are shorter than the row: their read position holds padding
    assert facts["read_is_pad"].tolist() == [False, True, True]
    assert facts["saw_padding"].tolist() == [False, True, True]


def test_a_real_token_equal_to_the_pad_id_is_not_a_pad_read():
    for name in ("right", "left", "left-naive", "packed", "single"):
        tokens = [PAD_ENDING[0]] if name == "single" else PAD_ENDING
        facts = get_strategy(name).layout(tokens, PAD).read_facts()
        assert facts["token_ids"][0] == PAD  # text 1's last real token is the pad id
        assert not facts["read_is_pad"].any(), name
    # left padding: the pads before a text are visible only where the mask lets them be
    assert not get_strategy("left").layout(PAD_ENDING, PAD).read_facts()["saw_padding"].any()


def test_packed_read_facts_name_the_other_texts_seen():
    naive = get_strategy("packed-naive").layout(PAD_ENDING, PAD).read_facts()
    packed = get_strategy("packed").layout(PAD_ENDING, PAD).read_facts()
    assert naive["saw_other_text"].tolist() == [False, True, True]
    assert packed["saw_other_text"].tolist() == [False, False, False]
    assert not naive["read_is_pad"].any() and not packed["read_is_pad"].any()


def test_strategy_summaries_say_what_a_pooled_read_takes_from_the_layout():
    from extraction.views.layouts import strategy_summary

    for name in STRATEGIES:
        assert strategy_summary(name, "last") == get_strategy(name).summary
    assert "every column of a text's row, pads included" in strategy_summary("right-naive", "mean")
    assert "keeps every column" in strategy_summary("right-naive", "tokens")
    assert "attend to the texts before them" in strategy_summary("packed-naive", "mean")
    for name in ("single", "right", "left", "left-naive", "bucketed", "sorted", "packed"):
        assert strategy_summary(name, "mean").endswith("it averages each text's own tokens."), name
