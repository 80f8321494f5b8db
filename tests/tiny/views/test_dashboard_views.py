"""What the dashboard pages show, computed in the package: the Predictions tables
(extraction.views.predictions), the How-it-works choices (extraction.views.layouts), the probe inputs
(extraction.probing.inputs), the Audit page's example and tables (extraction.views.examples,
extraction.views.audit). Tiny random models, module-scoped and read-only.
"""

from __future__ import annotations

import pytest
import torch

from extraction import plotting
from extraction.audit import audit_states
from extraction.comparison.compare import compare_strategies
from extraction.extract import extract_states
from extraction.models import load_model
from extraction.probing import inputs as probe_inputs
from extraction.probing.probe import LabelledTexts, builtin_dataset
from extraction.texts import tokenize_texts
from extraction.views import audit as audit_views
from extraction.views import layouts as layout_views
from extraction.views import predictions
from extraction.views.examples import EXAMPLE_BATCH, EXAMPLE_TEXTS, example_states

TEXTS = ["The capital of France is", "Hello", "Once upon a time, in a small village by the sea, there", "2 + 2 ="]


@pytest.fixture(scope="module")
def gpt2():
    return load_model("tiny-random-gpt2")


@pytest.fixture(scope="module")
def report(gpt2):
    return compare_strategies(gpt2, TEXTS, ["right-naive", "right"], batch_size=4)


# --- predictions ---------------------------------------------------------------------------------


def test_disagreements_count_strategies_whose_top1_differs(report):
    counts = predictions.disagreements(report, ["right-naive", "right"])
    expected = [
        int(not report.strategies["right-naive"].top1_same[i]) + int(not report.strategies["right"].top1_same[i])
        for i in range(len(TEXTS))
    ]
    assert counts == expected
    assert predictions.most_disputed_text([0, 2, 1, 2]) == 1  # the first of the most disputed
    assert predictions.most_disputed_text([0, 0]) == 0


def test_top_k_table_has_one_column_per_strategy(report, gpt2):
    decode = gpt2.tokenizer.decode
    frame = predictions.top_k_frame(report, lambda token: decode([token]), k=3)
    table = predictions.top_k_table(frame, 2, ["single", "right"])
    assert list(table.columns) == ["rank", "single", "right"] and table["rank"].tolist() == [1, 2, 3]
    best = frame[(frame["strategy"] == "right") & (frame["text"] == 2) & (frame["rank"] == 1)].iloc[0]
    assert table["right"][0] == f"{best['token']!r}  {best['probability']:.1%}"


def test_read_positions_frame_names_the_token_read(report, gpt2):
    strings = predictions.token_strings(gpt2.tokenizer.decode, report.tokenized.token_ids)
    assert [len(s) for s in strings] == list(report.tokenized.lengths)
    frame = predictions.read_positions_frame(report, 1, ["single", "right-naive"], strings, 0, "<pad>")
    assert frame["strategy"].tolist() == ["single", "right-naive"]
    assert frame["token read"][0] == strings[1][-1]  # single reads the last real token
    # "Hello" is the shortest text: right padding read at -1 reads a pad position.
    assert frame["saw padding"].tolist() == [False, True]
    assert frame["position id there"][1] == int(report.strategies["right-naive"].extraction.read_position_ids[1])
    assert frame["KL (nats)"][0] == 0.0


def test_prediction_tables_under_mean_pooling_leave_lm_head_out(gpt2, report):
    pooled = compare_strategies(gpt2, TEXTS, ["right-naive", "right"], batch_size=4, pooling="mean")
    assert not predictions.has_lm_head(pooled) and predictions.has_lm_head(report)
    assert predictions.disagreements(pooled, ["right-naive", "right"]) == [0] * len(TEXTS)
    assert predictions.top_k_frame(pooled, str).empty  # no logits outside last
    strings = predictions.token_strings(gpt2.tokenizer.decode, pooled.tokenized.token_ids)
    frame = predictions.read_positions_frame(pooled, 1, ["single", "right-naive"], strings, 0, "<pad>")
    assert list(frame.columns) == ["strategy", "token read", "position id there", "saw padding", "saw another text"]
    assert frame["saw padding"].tolist() == [False, True]  # right-naive counts the pads of "Hello" in its mean
    with pytest.raises(ValueError, match="pooling 'last' only"):
        plotting.top1_kl_figure(pooled)
    with pytest.raises(ValueError, match="pooling 'last' only"):
        plotting.logit_lens_figure(pooled)


# --- layout views ----------------------------------------------------------------------------------


def test_layout_choices():
    assert layout_views.default_layout_texts([5, 3, 5, 4, 3]) == [0, 1, 3]  # first of lengths 3, 4, 5
    assert layout_views.default_layout_texts([2, 2, 2]) == [0]
    assert layout_views.default_layout_texts([]) == [0]
    (_, layout), *_ = layout_views.plan_layouts("right", [[1], [1, 2, 3], [1, 2]], 0, batch_size=3)
    assert layout_views.most_padded_row(layout) == 0
    cells = layout_views.cell_tokens(layout, [["a"], ["b", "c", "d"], ["e", "f"]], [0, 1, 2])
    assert cells == [["a", None, None], ["b", "c", "d"], ["e", "f", None]]


def test_worst_strategy_is_the_lowest_cosine(report):
    worst = layout_views.worst_strategy(report)
    assert float(report.strategies[worst].cosine.min()) == min(
        float(comparison.cosine.min()) for comparison in report.strategies.values()
    )


# --- probe inputs ----------------------------------------------------------------------------------


class _Upload:
    def __init__(self, name: str, content: bytes):
        self.name, self._content = name, content

    def getvalue(self) -> bytes:
        return self._content


def test_probe_inputs_are_checked_in_order():
    with pytest.raises(ValueError, match="no strategy chosen"):
        probe_inputs.checked_probe_inputs([], False, None)
    with pytest.raises(ValueError, match="no file uploaded"):
        probe_inputs.checked_probe_inputs(["right"], False, None)
    rows = "text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(40))
    data = probe_inputs.checked_probe_inputs(["right"], False, _Upload("d.csv", rows.encode()))
    assert len(data) == 40 and data.source == "d.csv"
    with pytest.raises(ValueError, match="at most 10"):
        probe_inputs.checked_probe_inputs(["right"], False, _Upload("d.csv", rows.encode()), max_rows=10)
    assert len(probe_inputs.checked_probe_inputs(["right"], True, None)) == len(builtin_dataset())


def test_data_digest_changes_with_any_text_or_label():
    data = LabelledTexts(["a", "b"], ["x", "y"], "one")
    assert probe_inputs.data_digest(data) == probe_inputs.data_digest(LabelledTexts(["a", "b"], ["x", "y"], "two"))
    assert probe_inputs.data_digest(data) != probe_inputs.data_digest(LabelledTexts(["a", "b"], ["x", "z"], "one"))
    assert probe_inputs.data_digest(data) != probe_inputs.data_digest(LabelledTexts(["b", "a"], ["y", "x"], "one"))


# --- audit example and tables ------------------------------------------------------------------------


def test_example_states_are_right_naive_last_layer_rows(gpt2):
    states, texts = example_states(gpt2)
    assert texts == EXAMPLE_TEXTS and len(set(map(len, texts))) > 1
    tokenized = tokenize_texts(gpt2.tokenizer, EXAMPLE_TEXTS)
    last = gpt2.num_hidden_layers
    expected = extract_states(gpt2, tokenized, "right-naive", batch_size=EXAMPLE_BATCH, layers=[last]).hidden[:, 0]
    assert states.tensor.shape == expected.shape  # (N, d)
    torch.testing.assert_close(states.tensor, expected)
    assert f"batches of {EXAMPLE_BATCH}" in states.source and f"layer {last}" in states.source


def test_per_text_frame_and_headline_metrics(gpt2):
    states, texts = example_states(gpt2)
    report = audit_states(gpt2, texts, states, layer=-1, forensics=False)
    frame = audit_views.per_text_frame(report, texts, preview_chars=5)
    assert frame.columns[1] == "text_preview"
    assert frame["text"].tolist() == [i + 1 for i in report.checked]
    assert frame["text_preview"].tolist() == [texts[i][:5] for i in report.checked]
    labels = [label for label, _, _ in audit_views.headline_metrics(report)]
    assert labels[0] == "min cosine" and len(labels) == 6
    assert dict((label, value) for label, value, _ in audit_views.headline_metrics(report))["max relative L2"] == (
        f"{report.max_relative_l2:.3g}"
    )
    assert audit_views.headline_metrics(report)[0][1] == f"{report.min_cosine:.6f}"
