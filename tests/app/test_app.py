"""The dashboard pages under Streamlit's AppTest, plus the app's model cache in ``ui.model``
(its other helpers need no model: ``unit/test_ui.py``).

Every page loads without an exception, with and without results. The interaction tests
run the tiny random GPT-2 (seconds; its absolute position embeddings make all three
naive strategies break) through the home page, never the embedded SmolLM2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui
from extraction.samples import SAMPLE_TEXTS

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
PAGES = ["pages/1_Layers.py", "pages/2_Predictions.py", "pages/3_How_it_works.py"]
TIMEOUT = 60  # the first script run imports torch and transformers

TINY = "tiny-random-gpt2"
NAIVE = ["right-naive", "left-naive", "packed-naive"]
FIXED = ["right", "left", "packed"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _home() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _run_tiny(at: AppTest, strategies: list[str], texts: list[str] | None = None, batch_size: int = 4) -> AppTest:
    """Choose the tiny GPT-2 in the sidebar, set the inputs and click Run."""
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value(TINY)
    at.multiselect(key="home.strategies").set_value(strategies)
    at.number_input(key="home.batch_size").set_value(batch_size)
    if texts is not None:
        at.text_area(key="home.texts").input("\n".join(texts))
    at.button(key="home.run").click()
    return at.run()


def _assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _badge_text(at: AppTest) -> str:
    return "\n".join(element.value for element in at.markdown)


# --- every page loads -------------------------------------------------------------------


def test_home_loads_with_defaults():
    at = _home().run()
    _assert_clean(at)
    assert at.selectbox(key=ui.KEY_MODEL_CHOICE).value == "smollm2-135m"
    assert at.text_area(key="home.texts").value.splitlines() == SAMPLE_TEXTS
    assert len(SAMPLE_TEXTS) >= 8 and len({len(t) for t in SAMPLE_TEXTS}) >= 5  # clearly different lengths
    chosen = at.multiselect(key="home.strategies").value
    assert "right-naive" in chosen and "packed" in chosen and "single" not in chosen  # all, single is implied
    assert not any("Verdicts" in header.value for header in at.header)


@pytest.mark.parametrize("page", PAGES)
def test_page_without_results_points_home(page):
    at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT).run()
    _assert_clean(at)
    assert any("No results yet" in info.value for info in at.info)
    assert not at.get("plotly_chart")


# --- a run through the home page ----------------------------------------------------------


@pytest.fixture(scope="module")
def ran() -> AppTest:
    """One run of the tiny GPT-2 with the naive strategies and their fixes (shared, read-only)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    return _run_tiny(at, NAIVE + FIXED)


def test_run_shows_cards_with_expected_verdicts(ran):
    _assert_clean(ran)
    run = ran.session_state[ui.KEY_RUN]
    verdicts = {name: comparison.verdict for name, comparison in run.report.strategies.items()}
    assert set(verdicts) == {"single", *NAIVE, *FIXED}
    # GPT-2 has absolute positions: all three mistakes corrupt the states; every fix is exact.
    assert all(verdicts[name] == "corrupted" for name in NAIVE), verdicts
    assert all(verdicts[name] == "exact" for name in FIXED), verdicts
    shown = _badge_text(ran)
    for name in NAIVE + FIXED:
        assert f"<code>{name}</code>" in shown
        assert ui.verdict_badge(verdicts[name]) in shown
    for name in NAIVE + FIXED:
        comparison = run.report.strategies[name]
        assert ui.card_numbers(comparison.min_cosine, comparison.top1_agreement, comparison.max_relative_l2) in shown
    assert len(ran.dataframe) == 1  # the summary table
    notes = " ".join(warning.value for warning in ran.warning)
    assert "random weights" in notes  # report.notes are shown


def test_format_as_chat_applies_the_models_template():
    at = _home().run()
    at.toggle(key="home.chat").set_value(True)
    at = _run_tiny(at, ["right-naive", "right"], texts=["Hi", "What is two plus two?"])
    _assert_clean(at)
    report = at.session_state[ui.KEY_RUN].report
    # SmolLM2's template (the tiny models carry its tokenizer): a system turn, then the text as the user's
    assert all(text.startswith("<|im_start|>system\n") for text in report.texts)
    assert report.texts[1].endswith("<|im_start|>user\nWhat is two plus two?<|im_end|>\n")
    assert report.strategies["right-naive"].cause_kind == "pad-state"


def test_the_generation_prompt_needs_format_as_chat_and_ends_each_text_in_the_assistant_header():
    at = _home().run()
    assert at.toggle(key="home.generation_prompt").disabled  # greyed out until chat formatting is on
    at.toggle(key="home.chat").set_value(True).run()
    assert not at.toggle(key="home.generation_prompt").disabled
    at.toggle(key="home.generation_prompt").set_value(True)
    at = _run_tiny(at, ["right"], texts=["Hi", "What is two plus two?"])
    _assert_clean(at)
    texts = at.session_state[ui.KEY_RUN].report.texts
    assert texts[1].endswith("What is two plus two?<|im_end|>\n<|im_start|>assistant\n")


def test_pages_show_charts_without_recomputing(ran):
    run = ran.session_state[ui.KEY_RUN]
    for page in PAGES:
        ran.switch_page(page).run()
        _assert_clean(ran)
        assert len(ran.get("plotly_chart")) >= 2, page
        assert ran.session_state[ui.KEY_RUN] is run  # the same results object: nothing recomputed
    ran.switch_page("pages/1_Layers.py").run()
    ran.segmented_control(key="layers.view").set_value("cosine").run()
    ran.selectbox(key="layers.heatmap_strategy").set_value("packed-naive").run()
    _assert_clean(ran)
    assert ran.session_state[ui.KEY_RUN] is run
    ran.switch_page(APP).run()  # back home: the verdicts are still there
    _assert_clean(ran)
    assert ui.verdict_badge("corrupted") in _badge_text(ran)


def test_bug_preset_runs_in_one_click():
    at = _home().run()
    at.button(key="home.preset").click().run()
    _assert_clean(at)
    assert at.selectbox(key=ui.KEY_MODEL_CHOICE).value == TINY
    run = at.session_state[ui.KEY_RUN]
    assert run.settings.name == TINY
    assert run.report.strategies["right-naive"].verdict == "corrupted"
    assert run.report.strategies["right"].verdict == "exact"


# --- bad input: a clear message, and the app stays usable -----------------------------------


def test_bad_model_then_good_model_without_restart():
    at = _home().run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value(ui.OTHER_MODEL).run()  # enables the text box
    at.text_input(key=ui.KEY_MODEL_CUSTOM).input("/nonexistent/folder/model")
    at.multiselect(key="home.strategies").set_value(["right"])
    at.button(key="home.run").click().run()
    _assert_clean(at)
    assert any("Could not load the model" in error.value for error in at.error)
    assert ui.KEY_RUN not in at.session_state

    at = _run_tiny(at, ["right"], texts=SAMPLE_TEXTS[:3])
    _assert_clean(at)
    assert not at.error
    assert at.session_state[ui.KEY_RUN].report.strategies["right"].verdict == "exact"


def test_no_texts_and_no_strategy_are_clear_errors():
    at = _home().run()
    at.text_area(key="home.texts").input("  \n \n")
    at.button(key="home.run").click().run()
    _assert_clean(at)
    assert any("no texts" in error.value for error in at.error)

    at.text_area(key="home.texts").input("one text")
    at.multiselect(key="home.strategies").set_value([])
    at.button(key="home.run").click().run()
    _assert_clean(at)
    assert any("no strategy" in error.value for error in at.error)
    assert ui.KEY_RUN not in at.session_state


def test_truncation_and_text_limit_are_reported():
    long_text = "word " * 700  # longer than the tiny model's 512 positions
    texts = [long_text] + [f"text number {i}" for i in range(ui.MAX_INTERACTIVE_TEXTS)]
    at = _run_tiny(_home().run(), ["right"], texts=texts, batch_size=16)
    _assert_clean(at)
    run = at.session_state[ui.KEY_RUN]
    assert len(run.report.texts) == ui.MAX_INTERACTIVE_TEXTS
    assert run.texts_dropped == len(texts) - ui.MAX_INTERACTIVE_TEXTS
    warnings = " ".join(warning.value for warning in at.warning)
    assert "text 1" in warnings and "cut to the first 512 tokens" in warnings
    assert "python -m extraction" in warnings  # where to go for more texts


# --- the app's model cache ------------------------------------------------------------------


def test_model_cache_key_holds_every_setting():
    tiny = ui.ModelSettings(TINY)
    first = ui.get_loaded_model(tiny)
    assert ui.get_loaded_model(ui.ModelSettings(TINY)) is first  # cached
    half = ui.get_loaded_model(ui.ModelSettings(TINY, dtype="bfloat16"))
    assert str(half.dtype) == "torch.bfloat16" and half is not first
    eager = ui.get_loaded_model(ui.ModelSettings(TINY, attn_implementation="eager"))
    assert eager.attn_implementation == "eager"
    with pytest.raises(ValueError, match="no model named"):
        ui.get_loaded_model(ui.ModelSettings("  "))
