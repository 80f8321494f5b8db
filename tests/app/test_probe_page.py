"""The Probe page under Streamlit's AppTest, on the tiny random Llama: the layer sweep.

The built-in sets are replaced by the reviews' first rows (the page looks ``builtin_dataset``
up on every script run, so patching the module attribute reaches it) to keep runs short; the
names the page asks for are recorded.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import extraction.probing.probe
import ui
from extraction.probing.labelled import LabelledTexts

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "5_Probe.py")
TIMEOUT = 300  # a run extracts every text with several strategies
TINY = "tiny-random-llama"
SMALL_ROWS = 32
ASKED: list[str] = []  # built-in set names the page asked for


def _small_builtin(patch: pytest.MonkeyPatch) -> None:
    full = extraction.probing.probe.builtin_dataset()
    small = LabelledTexts(full.texts[:SMALL_ROWS], full.labels[:SMALL_ROWS], "built-in (first rows)")

    def builtin_dataset(name="sentiment"):
        ASKED.append(name)
        return small

    patch.setattr(extraction.probing.probe, "builtin_dataset", builtin_dataset)
    patch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _small_builtin_set(monkeypatch):
    _small_builtin(monkeypatch)


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value(TINY)
    return at


def _train(at: AppTest, strategies: list[str], layers: str = "all", **numbers) -> AppTest:
    at.multiselect(key="probe.strategies").set_value(strategies)
    at.text_input(key="probe.layers").set_value(layers)
    for key, value in numbers.items():
        at.number_input(key=f"probe.{key}").set_value(value)
    at.button(key="probe.run").click()
    return at.run()


def _csv_bytes(rows: list[tuple[str, str]], header=("text", "label")) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _errors(at: AppTest) -> str:
    return "\n".join(element.value for element in at.error)


def _assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_page_loads_and_asks_for_a_run():
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    _assert_clean(at)
    assert at.radio(key="probe.source").value == "Sentiment reviews (built-in)"
    assert at.multiselect(key="probe.strategies").value == ["right-naive", "right", "packed-naive"]
    assert at.text_input(key="probe.layers").value == "all"
    assert at.number_input(key="probe.seeds").value == 5
    assert any("Train the probes" in info.value for info in at.info)
    assert not at.get("plotly_chart")


@pytest.fixture(scope="module")
def trained():
    # module-scoped: the built-in set is patched by hand here (the autouse fixture is per test)
    patch = pytest.MonkeyPatch()
    _small_builtin(patch)
    at = _train(_page(), ["right-naive", "right"], seeds=3, batch_size=4)
    yield at
    patch.undo()


def test_sweep_shows_gap_across_layers_and_one_layer(trained):
    at = trained
    _assert_clean(at)
    sweep = at.session_state["probe.result"]["sweep"]
    assert sweep.strategies == ["single", "right-naive", "right"] and sweep.layers == [0, 1, 2, 3, 4]
    assert len(sweep.seeds) == 3 and sweep.num_texts == SMALL_ROWS and sweep.model == TINY
    sweep_chart, layer_chart = at.get("plotly_chart")
    assert sweep_chart.proto.spec and layer_chart.proto.spec  # both figures were sent
    markdown = "\n".join(element.value for element in at.markdown)
    for finding in sweep.findings():
        assert finding in markdown
    # the single-layer view opens where the gap is largest
    assert at.selectbox(key="probe.layer_view").value == sweep.focus_layer
    (table_element,) = at.dataframe
    table = table_element.value
    assert list(table["strategy"]) == sweep.strategies
    np.testing.assert_allclose(table["gap"], [sweep.gap(sweep.focus_layer, name).mean for name in sweep.strategies])
    assert any("random weights" in warning.value for warning in at.warning)


def test_choosing_a_layer_redraws_without_recomputing(trained):
    sweep = trained.session_state["probe.result"]["sweep"]
    other = next(layer for layer in sweep.layers if layer != sweep.focus_layer)
    at = trained.selectbox(key="probe.layer_view").set_value(other).run()
    _assert_clean(at)
    assert at.session_state["probe.result"]["sweep"] is sweep
    table = at.dataframe[0].value
    np.testing.assert_allclose(table["accuracy_same"], sweep.layer_frame(other)["accuracy_same"])
    for finding in sweep.layer_findings(other):
        assert finding in "\n".join(element.value for element in at.markdown)


def test_adding_a_strategy_extracts_only_the_new_one(trained):
    at = _train(trained, ["right-naive", "right", "packed-naive"], seeds=2, batch_size=4)
    _assert_clean(at)
    sweep = at.session_state["probe.result"]["sweep"]
    assert sweep.from_cache == ["single", "right-naive", "right"]
    assert len(sweep.seeds) == 2


def test_the_tense_set_is_asked_by_name():
    ASKED.clear()
    at = _page()
    at.radio(key="probe.source").set_value("Past or future tense (built-in)").run()
    at = _train(at, ["right"], layers="-1", seeds=2, batch_size=8)
    _assert_clean(at)
    assert ASKED == ["tense"]
    assert at.session_state["probe.result"]["sweep"].layers == [4]


def test_uploaded_csv_is_probed():
    at = _page()
    at.radio(key="probe.source").set_value("Upload a CSV").run()
    rows = [(f"{' '.join(['word'] * (1 + i % 9))} {label}", f" {label}") for i, label in enumerate(["yes", "no"] * 6)]
    at.file_uploader(key="probe.upload").set_value(("reviews.csv", _csv_bytes(rows), "text/csv"))
    at = _train(at, ["right-naive"], layers="-1", seeds=2, batch_size=4)
    _assert_clean(at)
    sweep = at.session_state["probe.result"]["sweep"]
    assert sweep.data_source == "reviews.csv" and sweep.classes == [" no", " yes"]
    assert sweep.lm_head_accuracy is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no file uploaded"),
        (_csv_bytes([(f"text {i}", "same") for i in range(8)]), "only one class"),
        (_csv_bytes([(f"text {i}", "ab"[i % 2]) for i in range(4)]), "too few rows"),
        (_csv_bytes([("hello", "a")], header=("sentence", "label")), "missing column"),
        (b"\x00\x01binary", "binary"),
    ],
)
def test_bad_uploads_are_clear_errors(content, message):
    at = _page()
    at.radio(key="probe.source").set_value("Upload a CSV").run()
    if content is not None:
        at.file_uploader(key="probe.upload").set_value(("data.csv", content, "text/csv"))
    at = _train(at, ["right-naive"])
    _assert_clean(at)
    assert message in _errors(at)
    assert "probe.result" not in at.session_state


def test_no_strategy_and_bad_layers_are_clear_errors():
    at = _train(_page(), [])
    _assert_clean(at)
    assert "no strategy chosen" in _errors(at)
    at = _train(at, ["right"], layers="9")
    _assert_clean(at)
    assert "layer 9 out of range" in _errors(at)
    at = _train(at, ["right"], layers="3,x")
    assert "comma-separated integers" in _errors(at)
    assert "probe.result" not in at.session_state


def test_mean_pooling_is_chosen_on_the_page():
    at = _page()
    at.radio(key="probe.pooling").set_value("mean")
    at = _train(at, ["right-naive"], layers="-1", seeds=2, batch_size=4)
    _assert_clean(at)
    sweep = at.session_state["probe.result"]["sweep"]
    assert sweep.pooling == "mean" and sweep.lm_head_accuracy is None


def test_middle_layers_are_estimated_for_the_shortened_pass_and_say_lm_head_was_not_run(monkeypatch):
    import ui.probe

    asked = []
    real = ui.probe.extraction_estimate

    def recording_estimate(loaded, tokenized, names, batch_size, max_batch_tokens, layers=None):
        asked.append(layers)
        return real(loaded, tokenized, names, batch_size, max_batch_tokens, layers)

    monkeypatch.setattr(ui.probe, "extraction_estimate", recording_estimate)
    at = _train(_page(), ["right"], layers="1,2", seeds=2, batch_size=8)
    _assert_clean(at)
    assert asked == [[1, 2]]  # the estimate prices passes that stop after block 2
    assert at.session_state["probe.result"]["sweep"].lm_head_accuracy is None
    assert any("lm_head not run: layers up to 2 asked for" in element.value for element in at.info)
