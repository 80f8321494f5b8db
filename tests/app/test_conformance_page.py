"""The Conformance page under Streamlit's AppTest, on a two-architecture matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui.conformance
from extraction.conformance import run_matrix

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
