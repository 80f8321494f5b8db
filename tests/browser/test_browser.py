"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

On the app the tier's ``served_app`` fixture serves (``conftest.py``), clicks
"Show me the bug" (tiny random GPT-2: seconds), waits for the verdict cards and charts,
visits every page through the sidebar (a new URL would start a new session without
results; pages added later only need to load without an exception), runs the Probe page's
default layer sweep, and saves a screenshot of each page under ``test-artifacts/``.

Without chromium the test is skipped, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Generous: the run loads a model and extracts with 7 strategies on a shared 2-core machine.
RUN_TIMEOUT_MS = 240_000
PAGE_TIMEOUT_MS = 60_000
#: The Probe page's default sweep: 200 texts, 4 strategies, every layer, 5 splits, on tiny GPT-2.
PROBE_TIMEOUT_MS = 400_000
#: Pages after Home, as the sidebar names them, with a heading each must show.
PAGES = [("Layers", "Layers"), ("Predictions", "Predictions"), ("How it works", "How it works")]


@pytest.fixture(scope="module")
def browser_page(chromium):
    executable = chromium
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1400})
            page = context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def _screenshot(page, name: str) -> Path:
    """Save the page; the tall viewport holds most of it (Streamlit scrolls inside its main area)."""
    path = ARTIFACTS / f"{name}.png"
    page.wait_for_timeout(800)  # let plotly finish drawing after the element appears
    page.screenshot(path=str(path))
    return path


def _no_exception(page) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()


def test_bug_preset_and_every_page(browser_page, served_app):  # chromium is checked before the server starts
    sync_api = pytest.importorskip("playwright.sync_api")
    page = browser_page
    page.goto(served_app)
    page.get_by_role("button", name="Show me the bug").click()

    cards = page.locator('[class*="st-key-home-card-"]')
    cards.first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.get_by_role("heading", name="Downloads").wait_for()  # the last section of the page
    _no_exception(page)
    # The preset runs three naive strategies and their fixes on GPT-2 (absolute positions).
    assert cards.count() == 6
    expect = sync_api.expect
    expect(page.locator(".st-key-home-card-right-naive")).to_contain_text("corrupted")
    expect(page.locator(".st-key-home-card-right")).to_contain_text("exact")
    expect(page.locator(".st-key-home-card-right")).not_to_contain_text("corrupted")
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    _screenshot(page, "01-home")

    for number, (link, heading) in enumerate(PAGES, start=2):
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link).click()
        page.get_by_role("heading", name=heading, exact=True).wait_for()
        page.locator(".js-plotly-plot >> visible=true").first.wait_for()
        _no_exception(page)
        assert "No results yet" not in page.locator('[data-testid="stMain"]').inner_text()
        _screenshot(page, f"{number:02d}-{link.lower().replace(' ', '-')}")

    # Pages added later (found by app.py in pages/) must at least load without an exception.
    nav = page.locator('[data-testid="stSidebarNav"]')
    known = {"Home", *(link for link, _ in PAGES)}
    # A link's text may start with its icon's ligature name ("home\n\nHome"): the label is the last line.
    labels = [text.strip().splitlines()[-1].strip() for text in nav.get_by_role("link").all_inner_texts()]
    others = [label for label in labels if label not in known]
    for number, link in enumerate(others, start=len(PAGES) + 2):
        nav.get_by_role("link", name=link, exact=True).click()
        page.locator('[data-testid="stMain"] h1').first.wait_for()
        _wait_until_idle(page)
        _no_exception(page)
        _screenshot(page, f"{number:02d}-{link.lower().replace(' ', '-')}")

    # The Probe page, run with its defaults on the preset's model, opens on the layer sweep.
    nav.get_by_role("link", name="Probe", exact=True).click()
    page.get_by_role("button", name="Train the probes").click()
    page.get_by_role("heading", name="Where validation lies: the gap across layers").wait_for(timeout=PROBE_TIMEOUT_MS)
    _wait_until_idle(page)
    _no_exception(page)
    main = page.locator('[data-testid="stMain"]')
    charts = main.locator(".js-plotly-plot")
    assert charts.count() == 2  # the gap across layers, and the chosen layer's bars
    expect(charts.first).to_contain_text("Probe gap across layers")
    expect(main).to_contain_text("right: no significant gap at any of the")  # right padding read right is exact
    expect(page.locator(".st-key-probe-layer_view")).to_be_visible()  # the single-layer view's select box
    _screenshot(page, f"{len(PAGES) + len(others) + 2:02d}-probe-sweep")


def _wait_until_idle(page) -> None:
    """Wait until the script run is over (Streamlit shows a status widget while running)."""
    page.wait_for_timeout(1000)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=RUN_TIMEOUT_MS)
