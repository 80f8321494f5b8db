"""The defects real pipelines have beyond padding reads (issue 21) on SmolLM2-135M, each made the
way a user writes it with plain transformers (tests/third_party.py): the audit's verdict,
``likely_cause``, ``cause_kind`` and the evidence's key numbers."""

import pytest
import torch

from extraction.audit import audit_states
from extraction.chat import format_texts
from extraction.samples import SAMPLE_TEXTS
from extraction.texts import tokenize_texts
from tests import third_party

TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:2]]
IM_START = {"change": "added", "where": "start", "token": "<|im_start|>", "token_id": 1}


def _plain_states(model, tokenizer, texts):
    with torch.no_grad():
        return torch.stack(
            [
                model(torch.tensor([tokenizer(t)["input_ids"]]), output_hidden_states=True).hidden_states[-1][0, -1]
                for t in texts
            ]
        )


def _check(loaded, stored, cause, kind, texts=TEXTS):
    report = audit_states(loaded, texts, stored)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("corrupted", cause, kind), report.cause
    return report.best_hypothesis.evidence


@pytest.mark.integration
def test_defects_of_real_pipelines_on_smollm2(embedded_model):
    model, tokenizer = embedded_model.model, embedded_model.tokenizer
    lengths = tokenize_texts(tokenizer, TEXTS).lengths

    evidence = _check(
        embedded_model,
        third_party.unmasked_right_padded_states(model, tokenizer, TEXTS, -1, 4),
        "right-naive",
        "pad-state",
    )
    assert evidence["attention_mask"] is False and 4 in evidence["consistent_batch_sizes"]["input order"]

    evidence = _check(
        embedded_model, third_party.length_sorted_states(model, tokenizer, TEXTS, -1, 4), "order", "other-row"
    )
    moved = sum(row != t for row, t in enumerate(sorted(range(len(TEXTS)), key=lambda i: lengths[i])))
    assert evidence["sorted_by_length"] == "ascending" and evidence["rows_moved"] == moved

    evidence = _check(
        embedded_model, third_party.truncated_states(model, tokenizer, TEXTS, -1, 12), "truncated", "other-tokens"
    )
    assert (evidence["max_length"], evidence["side"]) == (12, "right")
    assert evidence["texts_longer"] == sum(n > 12 for n in lengths)

    evidence = _check(
        embedded_model,
        third_party.prepended_token_states(model, tokenizer, TEXTS, -1),
        "special-tokens",
        "other-tokens",
    )
    assert evidence["edit"] == IM_START

    texts = TEXTS[:6]
    stored = third_party.chat_formatted_states(model, tokenizer, texts, -1, True)
    evidence = _check(embedded_model, stored, "chat-template", "other-tokens", texts)
    assert evidence["variant"] == "chat+generation-prompt"
    formatted = format_texts(texts, tokenizer, as_chat=True, generation_prompt=True)
    assert audit_states(embedded_model, formatted, stored).verdict == "exact"

    stored = third_party.reused_buffer(_plain_states(model, tokenizer, TEXTS), [4, 5, 6, 7, 8])
    evidence = _check(embedded_model, stored, "duplicate-rows", "other-row")
    assert evidence["groups"] == [[4, 5, 6, 7, 8]] and evidence["bit_exact"]

    evidence = _check(
        embedded_model,
        third_party.transformer_lens_default_states(model, tokenizer, TEXTS, -1, 4),
        "right-naive",
        "pad-state",
    )
    assert evidence["attention_mask"] is False and evidence["also"][0]["edit"] == IM_START
    assert 4 in evidence["consistent_batch_sizes"]["input order"]


@pytest.mark.integration
def test_issue_29_defects_on_smollm2(embedded_model):
    """Rows shifted by one, a read at -2, the EOS (the pad token here) appended, llm2vec's " </s>"."""
    model, tokenizer = embedded_model.model, embedded_model.tokenizer
    texts = [t for t in TEXTS if len(tokenizer(t)["input_ids"]) > 1]
    correct = third_party.read_at_states(model, tokenizer, texts, -1, -1)
    evidence = _check(embedded_model, third_party.shifted_rows(correct, 1), "order", "other-row", texts)
    assert evidence["shift"] == 1
    stored = third_party.read_at_states(model, tokenizer, texts, -1, -2)
    assert _check(embedded_model, stored, "read-position", "other-position", texts)["position"] == -2
    eos = tokenizer.eos_token_id
    stored = third_party.edited_ids_states(model, tokenizer, texts, -1, lambda ids: [*ids, eos])
    edit = _check(embedded_model, stored, "special-tokens", "other-tokens", texts)["edit"]
    assert (edit["change"], edit["where"], edit["token_id"]) == ("added", "end", eos)
    stored = third_party.string_added_states(model, tokenizer, texts, -1, suffix=" </s>")
    edit = _check(embedded_model, stored, "special-tokens", "other-tokens", texts)["edit"]
    assert edit["string"] == " </s>" and len(edit["tokens"]) >= 2


@pytest.mark.integration
def test_chat_template_variants_and_the_confirmation_on_smollm2(embedded_model):
    """Issue 29, wave 5: apply_chat_template after a system message; a hand-written user turn
    (no system turn); a BOS prepended to most texts, the others only rounded: counted, not explained."""
    model, tokenizer = embedded_model.model, embedded_model.tokenizer
    texts = TEXTS[:6]
    stored = third_party.chat_formatted_states(model, tokenizer, texts, -1, False, "You are a helpful assistant.")
    evidence = _check(embedded_model, stored, "chat-template", "other-tokens", texts)
    assert (evidence["variant"], evidence["system_turn"], evidence["generation_prompt"]) == (
        "chat-with-system",
        "given",
        False,
    )
    stored = third_party.hand_written_chat_states(model, tokenizer, texts, -1, True)
    evidence = _check(embedded_model, stored, "chat-template", "other-tokens", texts)
    assert evidence["variant_words"] == "chat template, no system turn, generation prompt added"
    prepended = third_party.prepended_token_states(model, tokenizer, TEXTS, -1)
    stored = torch.cat([prepended[:8], _plain_states(model, tokenizer, TEXTS[8:]).bfloat16().float()])
    evidence = _check(embedded_model, stored, "special-tokens", "other-tokens")
    confirmation = evidence["confirmation"]
    assert (confirmation["not_confirmed"], confirmation["not_confirmed_rows"]) == (4, [8, 9, 10, 11])
