"""The pooling choice on Home under Streamlit's AppTest (tiny random GPT-2: seconds).

Mean pooling flows from the radio into the run; the cards and the summary table show
top-1 agreement as n/a (lm_head agreement is defined for the last token only) beside the
verdicts; Layers names the pooling; Predictions says why it draws nothing; How it works
marks the averaged cells; the preset goes back to last.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui
from extraction.views.layouts import POOLED_LEGEND
from extraction.views.predictions import LM_HEAD_ONLY_LAST, NOT_APPLICABLE

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
TIMEOUT = 60
STRATEGIES = ["right-naive", "right", "packed-naive", "packed"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def mean_run() -> AppTest:
    """One mean-pooled run of the tiny GPT-2 through Home (shared, read-only)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert at.radio(key="home.pooling").value == "last"  # the default
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value("tiny-random-gpt2")
    at.multiselect(key="home.strategies").set_value(STRATEGIES)
    at.radio(key="home.pooling").set_value("mean")
    at.button(key="home.run").click()
    return at.run()


def _markdown(at: AppTest) -> str:
    return "\n".join(element.value for element in at.markdown)


def test_mean_run_shows_verdicts_and_top1_not_applicable(mean_run):
    assert not mean_run.exception, [e.value for e in mean_run.exception]
    report = mean_run.session_state[ui.KEY_RUN].report
    assert report.pooling == "mean"
    verdicts = {name: comparison.verdict for name, comparison in report.strategies.items() if name != "single"}
    # Pads counted in the mean, texts that see each other: corrupted; the fixes: exact.
    assert verdicts == {"right-naive": "corrupted", "right": "exact", "packed-naive": "corrupted", "packed": "exact"}
    shown = _markdown(mean_run)
    for name, verdict in verdicts.items():
        comparison = report.strategies[name]
        assert comparison.top1_agreement is None
        assert ui.verdict_badge(verdict) in shown
        assert ui.card_numbers(comparison.min_cosine, None, comparison.max_relative_l2) in shown
    (table,) = mean_run.dataframe
    assert table.value["top1_agreement"].tolist() == [NOT_APPLICABLE] * len(report.strategies)
    assert table.value["mean_kl"].tolist() == [NOT_APPLICABLE] * len(report.strategies)
    assert ui.pooling_line(report) in shown


def test_changing_the_pooling_without_running_keeps_the_results_and_says_so(mean_run):
    mean_run.radio(key="home.pooling").set_value("tokens").run()
    assert not mean_run.exception
    assert mean_run.session_state[ui.KEY_RUN].report.pooling == "mean"  # nothing recomputed
    assert len(mean_run.info) == 1  # these results use mean: click Run for tokens
    mean_run.radio(key="home.pooling").set_value("mean").run()
    assert not mean_run.info


def test_pages_say_the_pooling_and_draw_no_lm_head_chart(mean_run):
    report = mean_run.session_state[ui.KEY_RUN].report
    mean_run.switch_page("pages/1_Layers.py").run()
    assert not mean_run.exception
    assert ui.pooling_line(report) in _markdown(mean_run)
    assert len(mean_run.get("plotly_chart")) == 3  # per layer, heatmap, relative L2: drawn for any pooling

    mean_run.switch_page("pages/2_Predictions.py").run()
    assert not mean_run.exception
    assert not mean_run.get("plotly_chart")  # lm_head agreement is not drawn outside last
    assert len(mean_run.info) == 1 and LM_HEAD_ONLY_LAST in mean_run.info[0].value

    mean_run.switch_page("pages/3_How_it_works.py").run()
    assert not mean_run.exception
    charts = mean_run.get("plotly_chart")
    assert charts
    # The right-naive tab's layout marks pad cells averaged into the mean (red frames).
    layout_specs = [chart.proto.spec for chart in charts if '"name":"' + POOLED_LEGEND["mean"][1] in chart.proto.spec]
    assert layout_specs, "no layout marks a pad counted in the mean"


def test_bug_preset_goes_back_to_last(mean_run):
    mean_run.switch_page(APP).run()
    mean_run.button(key="home.preset").click().run()
    assert not mean_run.exception
    assert mean_run.radio(key="home.pooling").value == "last"
    assert mean_run.session_state[ui.KEY_RUN].report.pooling == "last"


def test_tokens_run_loads_every_page():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value("tiny-random-gpt2")
    at.multiselect(key="home.strategies").set_value(["right-naive", "right"])
    at.text_area(key="home.texts").input("Hello\nThe capital of France is\n2 + 2 =")
    at.radio(key="home.pooling").set_value("tokens")
    at.button(key="home.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    report = at.session_state[ui.KEY_RUN].report
    assert report.pooling == "tokens"
    # Pad positions kept as rows: right-naive has other row counts than single; right keeps the tokens.
    assert {name: c.verdict for name, c in report.strategies.items()} == {
        "single": "exact",
        "right-naive": "corrupted",
        "right": "exact",
    }
    assert at.dataframe[0].value["top1_agreement"].tolist() == [NOT_APPLICABLE] * 3
    for page in ("pages/1_Layers.py", "pages/2_Predictions.py", "pages/3_How_it_works.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert ui.pooling_line(report) in _markdown(at)
    kept = [chart for chart in at.get("plotly_chart") if POOLED_LEGEND["tokens"][1] in chart.proto.spec]
    assert kept  # How it works: right-naive's pad positions framed as kept rows
