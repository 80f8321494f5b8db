"""The Conformance page under Streamlit's AppTest, on a two-architecture matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui.conformance
from extraction.conformance.matrix import run_matrix

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "6_Conformance.py")
TIMEOUT = 120


@pytest.fixture(scope="module")
def matrix_file(tmp_path_factory) -> Path:
    # gpt2 (absolute positions) and mamba (a recurrent model: packed cannot run), plus one left out.
    matrix = run_matrix(["gpt2", "mamba", "bart"], texts=["Hi there.", "The cat sat on the warm mat by the door."])
    path = tmp_path_factory.mktemp("matrix") / "conformance.json"
    path.write_text(json.dumps(matrix.to_dict()))
    return path


def test_the_page_explains_without_a_matrix(monkeypatch, tmp_path):
    monkeypatch.setattr(ui.conformance, "MATRIX_JSON", tmp_path / "missing.json")
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("make matrix" in info.value for info in at.info)


def test_a_cell_shows_its_verdict_cause_and_layout(monkeypatch, matrix_file):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(ui.conformance, "MATRIX_JSON", matrix_file)
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) >= 2  # the grid and one layout
    at.selectbox(key="conformance.architecture").set_value("mamba")
    at.selectbox(key="conformance.strategy").set_value("packed").run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(block.value for block in at.markdown)
    assert "skipped" in text and "forward pass failed" in text
    at.selectbox(key="conformance.architecture").set_value("gpt2")
    at.selectbox(key="conformance.strategy").set_value("left-naive").run()
    text = " ".join(block.value for block in at.markdown)
    assert "corrupted" in text and "position-shift" in text


def test_the_model_picker_runs_a_tiny_random_architecture(monkeypatch):
    import ui
    from ui.model import KEY_TINY_RANDOM, TINY_RANDOM_MODEL

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(str(Path(PAGE).parents[1] / "app.py"), default_timeout=TIMEOUT).run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value(TINY_RANDOM_MODEL).run()  # shows the architecture box
    assert {"tiny-random:jamba", "tiny-random:mamba"} <= set(at.selectbox(key=KEY_TINY_RANDOM).options)
    at.selectbox(key=KEY_TINY_RANDOM).set_value("tiny-random:jamba")
    at.multiselect(key="home.strategies").set_value(["right", "packed"])
    at.text_area(key="home.texts").input("Hi there.\nThe cat sat on the warm mat by the door.")
    at.button(key="home.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    report = at.session_state[ui.KEY_RUN].report
    assert report.model == "tiny-random:jamba"
    assert report.strategies["right"].verdict == "exact"
    packed = report.strategies["packed"]  # the recurrent layers ignore the 4-D mask
    assert (packed.verdict, packed.cause_kind) == ("corrupted", "cross-text")
