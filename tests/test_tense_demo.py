"""The built-in tense set: the shipped CSV is what its generator writes, it is balanced and
large enough, and (on the embedded tokenizer) each label is one token and lengths vary."""

import csv
import importlib.util
import io
from collections import Counter
from functools import cache
from importlib import resources

import pytest

from extraction.models import load_model

FOLDER = resources.files("extraction").joinpath("data")


@cache
def generator():
    spec = importlib.util.spec_from_file_location("generate_tense_demo", FOLDER / "generate_tense_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def shipped_text() -> str:
    return (FOLDER / "tense_demo.csv").read_text(encoding="utf-8")


@cache
def shipped_rows() -> list[tuple[str, str]]:
    reader = csv.reader(io.StringIO(shipped_text()))
    assert next(reader) == ["text", "label"]
    return [(text, label) for text, label in reader]


def test_tense_csv_is_what_its_generator_writes():
    assert shipped_text() == generator().to_csv(generator().generate())


def test_tense_csv_is_balanced_distinct_and_large_enough():
    rows = shipped_rows()
    assert len(rows) >= 300
    assert Counter(label for _, label in rows) == {" past": len(rows) // 2, " future": len(rows) // 2}
    texts = [text for text, _ in rows]
    assert len(set(texts)) == len(texts)
    assert all(text.endswith(" Tense:") and text.count("Tense:") == 1 for text in texts)


def test_tense_csv_has_distractors_in_both_classes():
    # A future word inside a past text and a past word inside a future one: no single word decides.
    by_label = {label: [text for text, lab in shipped_rows() if lab == label] for label in (" past", " future")}
    assert sum(" will " in text for text in by_label[" past"]) >= len(by_label[" past"]) // 4
    assert sum(" yesterday" in text or " last " in text for text in by_label[" future"]) >= 10


@pytest.mark.integration
def test_tense_labels_are_single_tokens_and_lengths_vary():
    tokenizer = load_model("smollm2-135m").tokenizer
    for label in (" past", " future"):
        assert len(tokenizer(label, add_special_tokens=False)["input_ids"]) == 1, label
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text, _ in shipped_rows()]
    assert min(lengths) <= 8 and max(lengths) >= 60  # bare events and long texts mixed
    assert sum(length < 25 for length in lengths) >= len(lengths) // 4  # many short texts: padding matters
