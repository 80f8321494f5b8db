"""Extraction to a file on the embedded model: a right-naive file is diagnosed as such."""

import pytest

from extraction.audit import audit_states
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.export import extract_to_file
from extraction.storage.stored_states import read_states

TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:4]]


@pytest.mark.integration
def test_embedded_model_right_naive_file_is_diagnosed(tmp_path, embedded_model):
    """The closing-note scenario: 16 texts extracted with right-naive, batch 4, on SmolLM2."""
    loaded = embedded_model
    texts = TEXTS + SAMPLE_TEXTS[4:6]
    path = tmp_path / "bad.safetensors"
    extract_to_file(loaded, texts, path, strategy="right-naive", batch_size=4, verify=0)
    report = audit_states(loaded, texts, read_states(path))
    assert report.verdict == "corrupted"
    assert report.likely_cause == "right-naive", report.cause
    assert 4 in report.best_hypothesis.evidence["consistent_batch_sizes"]["input order"]
    assert report.lm_head_accuracy_fresh == 1.0 > report.lm_head_accuracy_stored
