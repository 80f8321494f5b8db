"""Probe impact on the embedded model: right padding read correctly changes no prediction."""

import pytest

from extraction.probing.probe import LabelledTexts, builtin_dataset, run_probe

# --- the embedded model ------------------------------------------------------------------


@pytest.mark.integration
def test_smollm2_right_padding_read_correctly_changes_no_prediction(embedded_model):
    loaded = embedded_model
    data = builtin_dataset()
    subset = LabelledTexts(data.texts[:48], data.labels[:48], "built-in, first 48")
    report = run_probe(loaded, subset, "right,right-naive", batch_size=8)
    right, naive = report.strategies["right"], report.strategies["right-naive"]
    assert right.corrupted_test_fraction == 0.0 and right.scores.prediction_flips == 0.0
    assert naive.corrupted_test_fraction > 0.0
    assert report.strategies["single"].lm_head_accuracy is not None
