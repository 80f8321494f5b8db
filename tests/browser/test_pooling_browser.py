"""One pooled comparison in a real browser: Show me the bug (tiny GPT-2), then mean pooling
on Home and Run; the verdicts stay (right-naive corrupted: pads counted in the mean; right
exact), top-1 agreement reads n/a, Layers names the pooling and How it works frames the
averaged cells. Screenshots go to ``test-artifacts/pooling-*.png``.

Without chromium the test is skipped, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import pytest

from tests.browser.test_browser import ARTIFACTS, CHROMIUM_ARGS, PAGE_TIMEOUT_MS, RUN_TIMEOUT_MS

pytestmark = pytest.mark.browser


def _screenshot(page, name: str) -> None:
    page.wait_for_timeout(800)  # let plotly finish drawing
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _no_exception(page) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()


def test_mean_pooling_run_shows_verdicts_and_pooled_layouts(chromium, served_app):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 1400}).new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(served_app)
            # The preset chooses the tiny GPT-2 and the naive strategies with their fixes (pooling last).
            page.get_by_role("button", name="Show me the bug").click()
            main = page.locator('[data-testid="stMain"]')
            expect(page.locator(".st-key-home-card-right-naive")).to_be_visible(timeout=RUN_TIMEOUT_MS)
            expect(main).to_contain_text("Pooling: last")

            page.locator(".st-key-home-pooling").get_by_text("mean", exact=True).click()
            page.get_by_role("button", name="Run", exact=True).click()
            expect(main).to_contain_text("Pooling: mean", timeout=RUN_TIMEOUT_MS)
            page.get_by_role("heading", name="Downloads").wait_for()
            _no_exception(page)
            naive, right = page.locator(".st-key-home-card-right-naive"), page.locator(".st-key-home-card-right")
            expect(naive).to_contain_text("corrupted")  # pads counted in the mean
            expect(right).to_contain_text("exact")
            expect(right).not_to_contain_text("corrupted")
            expect(right).to_contain_text("n/a")  # top-1 agreement: lm_head reads the last token only
            page.locator('[data-testid="stDataFrame"]').first.wait_for()
            _screenshot(page, "pooling-mean-home")

            nav = page.locator('[data-testid="stSidebarNav"]')
            nav.get_by_role("link", name="Layers").click()
            page.get_by_role("heading", name="Layers", exact=True).wait_for()
            expect(main).to_contain_text("Pooling: mean")
            _no_exception(page)

            nav.get_by_role("link", name="How it works").click()
            page.get_by_role("heading", name="How it works", exact=True).wait_for()
            page.locator(".js-plotly-plot >> visible=true").first.wait_for()
            _no_exception(page)
            # right-naive's layout frames the pad cells counted in the mean.
            page.get_by_role("tab", name="right-naive", exact=True).click()
            expect(main.locator(".js-plotly-plot >> visible=true").first).to_contain_text("pad counted in the mean")
            _screenshot(page, "pooling-mean-how-it-works")
        finally:
            browser.close()
