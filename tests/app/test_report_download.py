"""Home's "Download the report (HTML)" button after a run (tiny random GPT-2, AppTest).

The button's content is built only when clicked (a deferred callable that AppTest does not
call), so the test checks that the button is there after a run and not before, and builds
the page from the run's fields the way the button does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui
from extraction.views.report_html import comparison_report_html

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60
REPORT_KEY = "home.download.report"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_download_the_report_after_a_run():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert not [element for element in at.get("download_button") if element.proto.id.endswith(REPORT_KEY)]
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value("tiny-random-gpt2")
    at.multiselect(key="home.strategies").set_value(["right-naive", "right"])
    at.button(key="home.run").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (button,) = [element for element in at.get("download_button") if element.proto.id.endswith(REPORT_KEY)]
    assert button.proto.label == "Download the report (HTML)"
    assert button.proto.deferred_file_id  # built on click
    run = at.session_state[ui.KEY_RUN]
    page = comparison_report_html(run.report, run.token_strings, run.pad_token_id)  # what the click builds
    assert page.count('class="card"') == 2
