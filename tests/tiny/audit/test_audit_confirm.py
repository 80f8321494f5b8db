"""The chat template's variants (issue 29: with and without the system turn, with and without the
generation prompt), each made the way a user writes it, and the likely cause confirmed on the
differing rows its search did not run on (:mod:`extraction.audit.confirm`), on both tiny
architectures."""

import json

import pytest
import torch

from extraction.audit import CAUSES, audit_states
from extraction.audit.confirm import CONFIRM_ROWS, _spread, confirmation_words
from extraction.samples import SAMPLE_TEXTS
from extraction.verdicts import CAUSE_KINDS
from tests import third_party

# 12 texts of 1 to 62 tokens (SmolLM2's tokenizer, shared by the tiny models).
TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:2]]


def _audit(loaded, stored, texts=TEXTS):
    data = json.loads(json.dumps(audit_states(loaded, texts, stored).to_dict()))  # the JSON contract, as written
    assert data["likely_cause"] in CAUSES and data["cause_kind"] in CAUSE_KINDS
    best = next((h for h in data["hypotheses"] if h["name"] == data["likely_cause"]), None)
    return data, best


@pytest.mark.parametrize(
    ("system", "generation_prompt", "variant", "words"),
    [
        (None, False, "chat", "chat template, system turn included, generation prompt not added"),
        (None, True, "chat+generation-prompt", "chat template, system turn included, generation prompt added"),
        (
            "You are a helpful assistant.",
            False,
            "chat-with-system",
            "chat template, system message 'You are a helpful assistant.', generation prompt not added",
        ),
        (
            "You are a helpful assistant.",
            True,
            "chat-with-system+generation-prompt",
            "chat template, system message 'You are a helpful assistant.', generation prompt added",
        ),
    ],
)
def test_apply_chat_template_with_and_without_a_system_message_is_chat_template_with_its_variant(
    tiny_model, system, generation_prompt, variant, words
):
    texts = TEXTS[:6]
    stored = third_party.chat_formatted_states(
        tiny_model.model, tiny_model.tokenizer, texts, -1, generation_prompt, system=system
    )
    data, best = _audit(tiny_model, stored, texts)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "chat-template", "other-tokens")
    evidence = best["evidence"]
    assert evidence["variant"] == variant and evidence["variant_words"] == words
    assert evidence["generation_prompt"] is generation_prompt
    assert evidence["system_turn"] == ("given" if system else "default")
    assert evidence["system_prompt"] == system
    assert words in best["detail"]


@pytest.mark.parametrize("generation_prompt", [False, True])
def test_a_hand_written_user_turn_without_a_system_turn_is_chat_template_without_system(tiny_model, generation_prompt):
    texts = TEXTS[:6]
    stored = third_party.hand_written_chat_states(tiny_model.model, tiny_model.tokenizer, texts, -1, generation_prompt)
    data, best = _audit(tiny_model, stored, texts)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "chat-template", "other-tokens")
    evidence = best["evidence"]
    assert evidence["variant"] == "chat-without-system" + ("+generation-prompt" if generation_prompt else "")
    assert (evidence["system_turn"], evidence["generation_prompt"]) == ("none", generation_prompt)
    assert evidence["variant_words"].startswith("chat template, no system turn")
    assert "no audit option" in evidence["audit_with"]


def test_a_system_message_outside_the_list_is_not_guessed(tiny_model):
    texts = TEXTS[:6]
    stored = third_party.chat_formatted_states(
        tiny_model.model, tiny_model.tokenizer, texts, -1, True, system="Answer like a pirate."
    )
    data, _ = _audit(tiny_model, stored, texts)
    assert data["verdict"] == "corrupted" and data["likely_cause"] != "chat-template"


def test_the_rows_beyond_the_searched_ones_are_confirmed_under_the_cause(tiny_model):
    stored = third_party.prepended_token_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1)
    data, best = _audit(tiny_model, stored)
    assert data["likely_cause"] == "special-tokens"
    confirmation = best["evidence"]["confirmation"]
    searched = len(best["rows_tested"])
    assert confirmation == {
        "differing_rows": len(TEXTS),
        "searched": searched,
        "confirmed": len(TEXTS) - searched,
        "not_confirmed": 0,
        "not_confirmed_rows": [],
        "not_tested": 0,
    }
    assert f"confirmed on {len(TEXTS) - searched} of {len(TEXTS) - searched} others" in best["detail"]


def test_rows_of_another_source_are_not_confirmed_and_counted(tiny_model):
    """Texts 1-8 with a BOS prepended (the worst rows), texts 9-12 correct but rounded through
    bfloat16 (they differ, by far less): the search finds the BOS on the worst rows, the confirmation
    reproduces it on the other BOS rows and not on the rounded ones, which are counted, not explained."""
    prepended = third_party.prepended_token_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1)
    stored = torch.cat([prepended[:8], third_party.plain_last_states(tiny_model, TEXTS[8:]).bfloat16().float()])
    data, best = _audit(tiny_model, stored)
    assert data["likely_cause"] == "special-tokens"
    confirmation = best["evidence"]["confirmation"]
    assert set(best["rows_tested"]) <= set(range(8))
    assert confirmation["differing_rows"] == len(TEXTS)
    assert confirmation["confirmed"] == 8 - len(best["rows_tested"])
    assert (confirmation["not_confirmed"], confirmation["not_confirmed_rows"]) == (4, [8, 9, 10, 11])
    assert "4 not confirmed (texts 9, 10, 11, 12" in best["detail"]


def test_spread_keeps_the_ends_and_at_most_the_count():
    rows = list(range(100))
    picked = _spread(rows, CONFIRM_ROWS)
    assert len(picked) == CONFIRM_ROWS and picked[0] == 0 and picked[-1] == 99
    assert picked == sorted(set(picked))
    assert _spread([3, 5], CONFIRM_ROWS) == [3, 5]


def test_confirmation_words_say_what_was_not_confirmed_and_not_tested():
    found = {
        "differing_rows": 50,
        "searched": 4,
        "confirmed": 30,
        "not_confirmed": 2,
        "not_confirmed_rows": [7, 9],
        "not_tested": 14,
    }
    words = confirmation_words(found)
    assert words == (
        "searched on 4 of 50 differing rows, confirmed on 30 of 32 others; 2 not confirmed (texts 8, 10: "
        "another defect, or another source); 14 not tested"
    )
