"""Fixtures of the browser tier: Debian's chromium and one served app for the whole tier.

``streamlit run app.py`` runs on a free 127.0.0.1 port in its own process group, logging to
``test-artifacts/streamlit-server.log``; the group is stopped after the last browser test.
Without chromium the browser tests are skipped, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
STARTUP_SECONDS = 120


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium executable; a skip without it, a failure under CI."""
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; the browser tests must run under CI")
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def served_app() -> Iterator[str]:
    """The URL of the app served with the repository's config (``.streamlit/config.toml``)."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log = (ARTIFACTS / "streamlit-server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
        + ["--server.address", "127.0.0.1", "--server.port", str(port)]
        + ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, stopped as a whole below
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _healthy(url):
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with code {process.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer on {url} within {STARTUP_SECONDS} s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        log.close()
