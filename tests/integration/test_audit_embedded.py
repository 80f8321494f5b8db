"""The audit's causes on SmolLM2-135M, on files shaped like real pipelines' (issue 10): a
third-party library's right-padded extraction of chat texts ending in ``<|im_end|>`` (the pad
token), a float32 file from another build, a bf16 extraction, and a far layer shift."""

import pytest

from extraction.audit import audit_states
from extraction.extract import extract_states
from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.stored_states import StoredStates
from extraction.texts import tokenize_texts
from tests.third_party import chat_texts, library_last_token_states, perturb_rows

FORTY = [f"{text} Number {k}." for k, text in enumerate(SAMPLE_TEXTS * 4)][:39] + ["Yes."]


@pytest.mark.integration
def test_a_library_chat_extraction_on_smollm2_is_right_naive(embedded_model):
    texts = chat_texts(8)
    tokenized = tokenize_texts(embedded_model.tokenizer, texts)
    assert all(ids[-1] == embedded_model.pad_token_id for ids in tokenized.token_ids)  # <|im_end|>
    stored = library_last_token_states(embedded_model.model, embedded_model.tokenizer, texts, layer=-1, batch_size=8)
    report = audit_states(embedded_model, tokenized, stored)
    assert report.verdict == "corrupted"
    assert report.likely_cause == "right-naive", report.cause
    assert 8 in report.best_hypothesis.evidence["consistent_batch_sizes"]["input order"]
    assert report.lm_head_accuracy_stored < report.lm_head_accuracy_fresh == 1.0


@pytest.mark.integration
def test_a_float32_file_from_another_build_on_smollm2_is_kernels(embedded_model):
    tokenized = tokenize_texts(embedded_model.tokenizer, FORTY)
    clean = extract_states(embedded_model, tokenized, "single", layers=[12], keep_logits=False).hidden  # (40, 1, d)
    stored = perturb_rows(clean, [len(FORTY) - 1], cosine=0.99985)[:, 0]  # the 2-token text differs
    report = audit_states(embedded_model, tokenized, stored, layer=12, reference="single")  # bit for bit: single
    assert report.verdict == "drift"
    assert report.likely_cause == "kernels", report.cause
    assert report.differences.differing == [len(FORTY) - 1] and len(report.differences.bit_exact) == 39
    assert report.lm_head_note == "lm_head not run: layers up to 12 asked for"  # 12 of 30 blocks a pass


@pytest.mark.integration
def test_a_bf16_extraction_on_smollm2_is_dtype(embedded_model):
    tokenized = tokenize_texts(embedded_model.tokenizer, SAMPLE_TEXTS)
    bf16 = load_model(embedded_model.name, dtype="bfloat16")
    stored = extract_states(bf16, tokenized, "right", batch_size=8, keep_logits=False).hidden.float()
    report = audit_states(embedded_model, tokenized, StoredStates(stored, "bf16", None, "float32"))
    assert report.verdict == "drift"
    assert report.likely_cause == "dtype", report.cause
    assert report.best_hypothesis.evidence["dtype"] == "bfloat16"


@pytest.mark.integration
def test_layer_5_stored_as_20_on_smollm2(embedded_model):
    tokenized = tokenize_texts(embedded_model.tokenizer, SAMPLE_TEXTS[:6])
    clean = extract_states(embedded_model, tokenized, "single", layers=[5], keep_logits=False).hidden[:, 0]
    report = audit_states(embedded_model, tokenized, clean, layer=20)
    assert report.verdict == "corrupted"
    assert report.likely_cause == "wrong-layer", report.cause
    assert report.best_hypothesis.evidence["matching_layers"] == [5]
    assert report.layers == [20]
