"""The served app (a real ``streamlit run``): uploads without an XSRF token are refused,
and an upload over the cap is refused in a real browser while the app stays usable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bad_input_cases import write

REPO = Path(__file__).resolve().parents[2]


# --- the served app: upload cap and XSRF (a real server; the cap check in a real browser) --


@pytest.mark.browser
def test_served_app_refuses_uploads_without_an_xsrf_token(served_app):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{served_app}/_stcore/upload_file/some-session/some-file", data=b"x" * 100, method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 403


@pytest.mark.browser
def test_upload_over_the_cap_is_refused_and_the_app_stays_usable(chromium, served_app, tmp_path):
    import tomllib

    playwright = pytest.importorskip("playwright.sync_api")
    cap_mb = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    big = tmp_path / "big.txt"
    line = b"a perfectly ordinary line of text, repeated until the file is over the cap\n"
    with big.open("wb") as handle:
        handle.write(line * ((cap_mb * 1024 * 1024) // len(line) + 2000))
    assert big.stat().st_size > cap_mb * 1024 * 1024
    small = write(tmp_path, "small.txt", "a small text\nanother one\n")

    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run"]
    args += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(served_app, timeout=120_000)
            dropzone = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
            dropzone.wait_for(state="attached", timeout=120_000)
            dropzone.set_input_files(str(big))
            refusal = page.get_by_text(re.compile(rf"File must be {cap_mb}(\.0)?\s*MB or smaller"))
            refusal.first.wait_for(timeout=60_000)
            # The app is still usable: a small file goes through and nothing raised.
            dropzone.set_input_files(str(small))
            page.get_by_text("small.txt").first.wait_for(timeout=60_000)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
