"""The tense set on the embedded tokenizer: single-token labels, mixed lengths."""

import csv
import io
from importlib import resources

import pytest


@pytest.mark.integration
def test_tense_labels_are_single_tokens_and_lengths_vary(embedded_model):
    tokenizer = embedded_model.tokenizer
    text = resources.files("extraction").joinpath("data", "tense_demo.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))[1:]
    for label in (" past", " future"):
        assert len(tokenizer(label, add_special_tokens=False)["input_ids"]) == 1, label
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t, _ in rows]
    assert min(lengths) <= 8 and max(lengths) >= 60  # bare events and long texts mixed
    assert sum(length < 25 for length in lengths) >= len(lengths) // 4  # many short texts: padding matters
