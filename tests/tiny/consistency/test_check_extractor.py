"""check_extractor and assert_matches_single on a user's own extraction code, written here with
plain transformers on the tiny random GPT-2: the classic mistake is found and named, a
correct function passes, and every bad return value gets its own error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extraction import ExtractorMismatchError, assert_matches_single, check_extractor
from extraction.samples import SAMPLE_TEXTS

#: Texts of clearly different lengths: batches of 4 pad most of them.
TEXTS = SAMPLE_TEXTS[:8]


def right_padding_read_at_last(loaded, batch_size: int = 4):
    """The classic bug: right padding, batches of ``batch_size``, the state at position -1."""

    def extract(texts: list[str]) -> torch.Tensor:
        rows = []
        for start in range(0, len(texts), batch_size):
            batch = loaded.tokenizer(
                texts[start : start + batch_size], padding=True, padding_side="right", return_tensors="pt"
            )
            with torch.no_grad():
                output = loaded.model(**batch, output_hidden_states=True)
            rows.append(output.hidden_states[-1][:, -1])  # (B, d): a pad token's state for the shorter texts
        return torch.cat(rows)

    return extract


def one_text_a_pass(loaded, layers=(-1,)):
    """Correct: one text per forward pass, the last token; numpy (N, d) for one layer, torch (N, L, d) for several."""

    def extract(texts: list[str]):
        rows = []
        for text in texts:
            batch = loaded.tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                output = loaded.model(**batch, output_hidden_states=True)
            rows.append(torch.stack([output.hidden_states[layer][0, -1] for layer in layers]))  # (L, d)
        states = torch.stack(rows)  # (N, L, d)
        return states[:, 0].numpy() if len(layers) == 1 else states

    return extract


def test_right_padding_read_at_last_is_corrupted_and_named(tiny_gpt2):
    report = check_extractor(right_padding_read_at_last(tiny_gpt2), tiny_gpt2, TEXTS)
    assert report.verdict == "corrupted"
    assert report.likely_cause == "right-naive"
    assert report.best_hypothesis.status == "reproduced"
    assert report.to_dict()["likely_cause"] == "right-naive"
    assert report.states_source.endswith("right_padding_read_at_last.<locals>.extract")


def test_assert_matches_single_raises_with_verdict_and_cause(tiny_gpt2):
    with pytest.raises(AssertionError) as raised:
        assert_matches_single(right_padding_read_at_last(tiny_gpt2), tiny_gpt2, TEXTS)
    assert isinstance(raised.value, ExtractorMismatchError)
    assert (raised.value.report.verdict, raised.value.report.likely_cause) == ("corrupted", "right-naive")
    message = str(raised.value)
    assert "corrupted" in message and "right-naive" in message


def test_one_text_a_pass_is_exact(tiny_gpt2):
    report = assert_matches_single(one_text_a_pass(tiny_gpt2), tiny_gpt2, TEXTS)
    assert report.verdict == "exact"
    assert report.likely_cause is None
    assert report.layers == [tiny_gpt2.num_hidden_layers]
    assert report.n_checked == len(TEXTS)


def test_several_layers_with_layers(tiny_gpt2):
    layers = [0, 2, tiny_gpt2.num_hidden_layers]
    report = check_extractor(one_text_a_pass(tiny_gpt2, layers), tiny_gpt2, TEXTS[:4], layers=layers)
    assert report.verdict == "exact"
    assert report.layers == layers


def test_an_intermediate_layer_with_layer(tiny_gpt2):
    report = check_extractor(one_text_a_pass(tiny_gpt2, (2,)), tiny_gpt2, TEXTS[:4], layer=2)
    assert (report.verdict, report.layers) == ("exact", [2])


def _constant(value):
    return lambda texts: value


HIDDEN = 64  # the tiny models' width
BAD_RETURNS = {
    "a list": (_constant([[0.0] * HIDDEN] * 3), "returned a list"),
    "a 1-D array": (_constant(np.zeros(HIDDEN, dtype=np.float32)), r"returned shape \(64,\)"),
    "too few rows": (_constant(np.ones((2, HIDDEN), dtype=np.float32)), "returned 2 rows"),
    "too many rows": (_constant(torch.ones(4, HIDDEN)), "returned 4 rows"),
    "NaN": (_constant(torch.full((3, HIDDEN), float("nan"))), "NaN or inf values in 3 of 3 rows"),
    "inf in one row": (_constant(np.vstack([np.ones((2, HIDDEN)), np.full((1, HIDDEN), np.inf)])), "texts 3"),
    "integers": (_constant(np.ones((3, HIDDEN), dtype=np.int64)), "array of int64"),
    "another width": (_constant(torch.ones(3, 32)), "width 32"),
    "3-D without layers": (_constant(torch.ones(3, 2, HIDDEN)), r"2 layers, but the model has 5"),
    "a function that raises": (lambda texts: {}["missing"], "raised KeyError"),
}


@pytest.mark.parametrize("case", list(BAD_RETURNS))
def test_bad_returns_are_one_clear_error(tiny_gpt2, case):
    extract_fn, message = BAD_RETURNS[case]
    with pytest.raises(ValueError, match=message):
        check_extractor(extract_fn, tiny_gpt2, TEXTS[:3])


def test_two_layers_named_for_a_2d_return(tiny_gpt2):
    with pytest.raises(ValueError, match="2 layers were named"):
        check_extractor(_constant(torch.ones(3, HIDDEN)), tiny_gpt2, TEXTS[:3], layers=[1, 2])


def test_unknown_pooling_is_refused(tiny_gpt2):
    called = []
    with pytest.raises(ValueError, match="unknown pooling"):
        check_extractor(lambda texts: called.append(texts), tiny_gpt2, TEXTS[:3], pooling="max")
    assert called == []  # refused before the user's function runs


def test_model_by_name_and_texts_must_be_a_list():
    with pytest.raises(ValueError, match="list of strings"):
        check_extractor(_constant(None), "tiny-random-gpt2", "one string")
    with pytest.raises(ValueError, match="returned a NoneType"):
        check_extractor(_constant(None), "tiny-random-gpt2", TEXTS[:3])
