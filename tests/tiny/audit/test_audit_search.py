"""Defects one step away from those issue 21 listed (issue 29), each made the way a user writes it
with plain transformers (tests/third_party.py), on both tiny architectures: rows shifted, another
position read, pads counted in a mean under left padding, the EOS or a string appended; and
defects of the same families the issue did not list (a shift by two, the first token read, a
first special token dropped, a prefix string added). Each: the verdict, ``likely_cause``,
``cause_kind`` and the evidence that names the defect's parameters."""

import json

import pytest

from extraction.audit import CAUSES, audit_states
from extraction.samples import SAMPLE_TEXTS
from extraction.texts import tokenize_texts
from extraction.verdicts import CAUSE_KINDS
from tests import third_party

# 11 texts of 5 to 62 tokens (two or more: a read at -2 needs a token before the last).
TEXTS = [t for t in SAMPLE_TEXTS if len(t.split()) > 2] + [t + " and then some more words" for t in SAMPLE_TEXTS[:2]]


def _audit(loaded, stored, texts=TEXTS, **options):
    report = audit_states(loaded, texts, stored, **options)
    data = json.loads(json.dumps(report.to_dict()))  # the JSON contract, as written
    assert data["likely_cause"] in CAUSES and data["cause_kind"] in CAUSE_KINDS
    best = next((h for h in data["hypotheses"] if h["name"] == data["likely_cause"]), None)
    return data, best


def _correct(loaded, texts=TEXTS):
    return third_party.read_at_states(loaded.model, loaded.tokenizer, texts, -1, -1)


@pytest.mark.parametrize("shift", [1, 2])
def test_rows_shifted_by_one_or_two_are_order_with_the_shift(tiny_model, shift):
    data, best = _audit(tiny_model, third_party.shifted_rows(_correct(tiny_model), shift))
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "order", "other-row")
    assert best["evidence"]["shift"] == shift
    assert f"rows shifted by {shift}: row i holds text i+{shift}" in data["cause"]
    last = len(TEXTS) - 1
    moved = {str(r): min(r + shift, last) for r in range(last)}  # past the end, the last text's state repeated
    assert best["evidence"]["text_of_row"] == moved
    assert best["evidence"]["texts_not_found"] == shift  # the first texts' states are in no row


@pytest.mark.parametrize(("position", "words"), [(-2, "the token before the last"), (0, "the first token")])
def test_another_position_read_is_read_position(tiny_model, position, words):
    stored = third_party.read_at_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, position)
    data, best = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == (
        "corrupted",
        "read-position",
        "other-position",
    )
    assert best["evidence"]["position"] == position
    assert f"position {position}: {words}" in data["cause"]
    row = best["rows_reproduced"][0]
    ids = tokenize_texts(tiny_model.tokenizer, TEXTS).token_ids[row]
    assert best["evidence"]["tokens"] == tiny_model.tokenizer.convert_ids_to_tokens([ids[position]])


def test_the_first_token_read_lists_the_cut_to_one_token_under_also(tiny_model):
    stored = third_party.read_at_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, 0)
    data, best = _audit(tiny_model, stored)
    assert {"name": "truncated", "cause_kind": "other-tokens"} in best["evidence"]["also"]


def test_left_padding_with_the_pads_counted_in_the_mean_is_left_naive(tiny_model):
    stored = third_party.left_padded_mean_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, 4)
    data, best = _audit(tiny_model, stored, pooling="mean")
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "left-naive", "pad-state")
    assert best["evidence"]["pads_counted"] is True
    assert 4 in best["evidence"]["consistent_batch_sizes"]["input order"]
    assert "pads counted in the mean" in data["cause"]


def test_the_eos_appended_to_every_text_is_special_tokens_not_a_pad_read(tiny_model):
    eos = tiny_model.tokenizer.eos_token_id  # also the pad token: right padding by one token reproduces it too
    stored = third_party.edited_ids_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, lambda ids: [*ids, eos])
    data, best = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == (
        "corrupted",
        "special-tokens",
        "other-tokens",
    )
    assert best["evidence"]["edit"] == {"change": "added", "where": "end", "token": "<|im_end|>", "token_id": eos}
    right = next(h for h in data["hypotheses"] if h["name"] == "right-naive")
    if right["status"] == "reproduced":  # then no batching gives its lengths, and it is listed as such
        assert not any(right["evidence"]["consistent_batch_sizes"].values())
        assert {h["name"] for h in best["evidence"]["also"]} == {"right-naive"}


@pytest.mark.parametrize(
    ("prefix", "suffix", "where", "tokens"),
    [("", " </s>", "end", ["Ġ</", "s", ">"]), ("query: ", "", "start", ["query", ":"])],
)
def test_a_string_added_is_special_tokens_named_as_tokenized(tiny_model, prefix, suffix, where, tokens):
    # llm2vec's eos_token pooling appends " </s>" as text; E5-style recipes prepend "query: ".
    stored = third_party.string_added_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, prefix, suffix)
    data, best = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == (
        "corrupted",
        "special-tokens",
        "other-tokens",
    )
    edit = best["evidence"]["edit"]
    assert (edit["change"], edit["where"], edit["string"]) == ("added", where, prefix or suffix)
    assert edit["tokens"][: len(tokens)] == tokens


def test_the_first_special_token_dropped_is_special_tokens(tiny_model):
    texts = third_party.chat_texts()  # each starts with <|im_start|>, which the pipeline took for a BOS to drop
    stored = third_party.edited_ids_states(tiny_model.model, tiny_model.tokenizer, texts, -1, lambda ids: ids[1:])
    data, best = _audit(tiny_model, stored, texts)
    assert (data["likely_cause"], data["cause_kind"]) == ("special-tokens", "other-tokens")
    assert best["evidence"]["edit"]["change"] == "dropped" and best["evidence"]["edit"]["where"] == "start"
    assert "<|im_start|>" in data["cause"]


def test_rows_no_causal_pass_gives_stay_unknown_with_the_nearest_source(tiny_llama):
    # Every row mixes two positions of its text: no position, layer or variant of one pass gives it.
    correct = _correct(tiny_llama)
    other = third_party.read_at_states(tiny_llama.model, tiny_llama.tokenizer, TEXTS, -1, 0)
    data, _ = _audit(tiny_llama, correct + other)
    assert (data["likely_cause"], data["cause_kind"]) == ("unknown", "unknown")
    position = next(h for h in data["hypotheses"] if h["name"] == "read-position")
    nearest = position["evidence"]["nearest"]
    assert nearest["cosine"] < 0.999 and "nearest source" in position["detail"]


def test_the_defect_picture_marks_the_position_read_and_the_page_line_names_the_source(tiny_llama):
    from extraction.plotting import defect_tokens
    from extraction.views.audit import found_source

    stored = third_party.read_at_states(tiny_llama.model, tiny_llama.tokenizer, TEXTS, -1, -2)
    report = audit_states(tiny_llama, TEXTS, stored)
    best = report.best_hypothesis
    row = best.rows_reproduced[0]
    tokens = tiny_llama.tokenizer.convert_ids_to_tokens(tokenize_texts(tiny_llama.tokenizer, TEXTS).token_ids[row])
    strip = defect_tokens(best, tokens)
    assert [role for _, role in strip][-2:] == ["read", "text"]
    assert found_source(report).startswith(f"row {row + 1}: text {row + 1}, position -2")


@pytest.mark.parametrize(
    ("prefix", "suffix", "where"),
    [("", "<|im_end|>\n", "end"), ("<|im_start|>user\n", "", "start")],
)
def test_a_piece_of_the_chat_template_added_is_special_tokens_with_that_string(tiny_model, prefix, suffix, where):
    # A script that writes half a template by hand: the user turn's end, or its header, and no more.
    stored = third_party.string_added_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, prefix, suffix)
    data, best = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == (
        "corrupted",
        "special-tokens",
        "other-tokens",
    )
    edit = best["evidence"]["edit"]
    assert (edit["change"], edit["where"], edit["string"]) == ("added", where, prefix or suffix)
    assert edit["template_piece"] is True
    assert "a piece of the chat template" in best["detail"] and "llm2vec" not in best["detail"]


@pytest.mark.parametrize(("prefix", "suffix"), [("Represent this sentence: ", ""), ("", " [END]")])
def test_a_string_no_pipeline_piece_gives_stays_unknown_with_the_nearest_source(tiny_model, prefix, suffix):
    # Not a special token, a template piece or a listed recipe string: the search does not guess it.
    stored = third_party.string_added_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, prefix, suffix)
    data, _ = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "unknown", "unknown")
    position = next(h for h in data["hypotheses"] if h["name"] == "read-position")
    assert position["status"] != "reproduced"
    assert position["evidence"]["nearest"]["cosine"] < 0.999 and "nearest source" in position["detail"]
