"""The shareable HTML report opens offline in headless Chromium with its charts drawn.

The report of a tiny random GPT-2 comparison is written to a file and opened from disk in
an offline browser context that also aborts every request that is not for a file: each
figure must draw its plotly SVG, no request may leave the page and no script may fail.
A screenshot goes to ``test-artifacts/report-html.png``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from extraction import compare_strategies, comparison_report_html
from extraction.samples import SAMPLE_TEXTS
from tests.browser.test_browser import ARTIFACTS, CHROMIUM_ARGS, PAGE_TIMEOUT_MS

pytestmark = pytest.mark.browser

FIGURE_IDS = ("figure-layers", "figure-predictions", "figure-layout")


def test_report_opens_offline_with_its_charts(chromium, tiny_gpt2, tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api")
    report = compare_strategies(tiny_gpt2, SAMPLE_TEXTS, ["right-naive", "right", "packed-naive"], batch_size=4)
    path = tmp_path / "report.html"
    path.write_text(comparison_report_html(report, tiny_gpt2.tokenizer), encoding="utf-8")

    page_errors: list[str] = []
    blocked: list[str] = []

    def only_files(route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 1400})
            context.route("**/*", only_files)
            page = context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(path.as_uri())
            for figure_id in FIGURE_IDS:
                page.locator(f"#{figure_id}.js-plotly-plot .main-svg").first.wait_for()
            drawn = {
                figure_id: page.locator(f"#{figure_id}.js-plotly-plot .main-svg").count() for figure_id in FIGURE_IDS
            }
            cards = page.locator(".card").count()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report-html.png"), full_page=True)
        finally:
            browser.close()

    assert all(count >= 1 for count in drawn.values()), drawn
    assert cards == 3
    assert page_errors == []
    assert blocked == []
