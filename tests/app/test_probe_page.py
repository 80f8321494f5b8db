"""The Probe page under Streamlit's AppTest, on the tiny random Llama.

The built-in set is replaced by its first rows (the page imports ``builtin_dataset`` on
every script run, so patching the module attribute reaches it) to keep runs short.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import extraction.probe
import ui
from extraction.labelled import LabelledTexts

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "5_Probe.py")
TIMEOUT = 300  # a run extracts every text with several strategies
TINY = "tiny-random-llama"
SMALL_ROWS = 32


@pytest.fixture(autouse=True)
def _small_builtin_set(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    full = extraction.probe.builtin_dataset()
    small = LabelledTexts(full.texts[:SMALL_ROWS], full.labels[:SMALL_ROWS], "built-in (first rows)")
    monkeypatch.setattr(extraction.probe, "builtin_dataset", lambda: small)


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value(TINY)
    return at


def _train(at: AppTest, strategies: list[str], **numbers) -> AppTest:
    at.multiselect(key="probe.strategies").set_value(strategies)
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
    assert at.radio(key="probe.source").value == "Built-in sentiment reviews"
    assert at.multiselect(key="probe.strategies").value == ["right-naive", "right", "packed-naive"]
    assert any("Train the probes" in info.value for info in at.info)
    assert not at.get("plotly_chart")


@pytest.fixture(scope="module")
def trained():
    # module-scoped: the built-in set is patched by hand here (the autouse fixture is per test)
    patch = pytest.MonkeyPatch()
    full = extraction.probe.builtin_dataset()
    small = LabelledTexts(full.texts[:SMALL_ROWS], full.labels[:SMALL_ROWS], "built-in (first rows)")
    patch.setattr(extraction.probe, "builtin_dataset", lambda: small)
    patch.setenv("HF_HUB_OFFLINE", "1")
    at = _train(_page(), ["right-naive", "right"], batch_size=4)
    yield at
    patch.undo()


def test_run_shows_chart_table_and_explanation(trained):
    at = trained
    _assert_clean(at)
    report = at.session_state["probe.result"]["report"]
    assert list(report.strategies) == ["single", "right-naive", "right"]
    assert report.num_texts == SMALL_ROWS and report.model == TINY
    (chart,) = at.get("plotly_chart")
    assert chart.proto.spec  # the figure was sent
    (table_element,) = at.dataframe
    table = table_element.value
    assert list(table["strategy"]) == list(report.strategies)
    np.testing.assert_allclose(table["accuracy_single"], [r.accuracy_single for r in report.strategies.values()])
    np.testing.assert_allclose(table["gap"], table["accuracy_same"] - table["accuracy_single"])
    markdown = "\n".join(element.value for element in at.markdown)
    assert "What the gap means" in markdown
    assert report.strategies["right-naive"].summary() in markdown
    assert any("random weights" in warning.value for warning in at.warning)


def test_adding_a_strategy_extracts_only_the_new_one(trained):
    at = _train(trained, ["right-naive", "right", "packed-naive"], batch_size=4)
    _assert_clean(at)
    report = at.session_state["probe.result"]["report"]
    assert [name for name, r in report.strategies.items() if r.from_cache] == ["single", "right-naive", "right"]
    assert not report.strategies["packed-naive"].from_cache


def test_uploaded_csv_is_probed():
    at = _page()
    at.radio(key="probe.source").set_value("Upload a CSV").run()
    rows = [(f"{' '.join(['word'] * (1 + i % 9))} {label}", f" {label}") for i, label in enumerate(["yes", "no"] * 6)]
    at.file_uploader(key="probe.upload").set_value(("reviews.csv", _csv_bytes(rows), "text/csv"))
    at = _train(at, ["right-naive"], batch_size=4)
    _assert_clean(at)
    report = at.session_state["probe.result"]["report"]
    assert report.data_source == "reviews.csv" and report.classes == [" no", " yes"]
    assert report.strategies["right-naive"].lm_head_accuracy is not None


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


def test_no_strategy_and_bad_layer_are_clear_errors():
    at = _train(_page(), [])
    _assert_clean(at)
    assert "no strategy chosen" in _errors(at)
    at = _train(at, ["right"], layer=9)
    _assert_clean(at)
    assert "layer 9 out of range" in _errors(at)
    assert "probe.result" not in at.session_state
