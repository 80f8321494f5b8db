"""The Python examples of the docs pages that load the embedded model (``EMBEDDED_PAGES`` of
``tests/tiny/test_docs_examples.py``) run as written, from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.tiny.test_docs_examples import EMBEDDED_PAGES, ROOT, python_blocks


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(EMBEDDED_PAGES))
def test_embedded_page_examples_run(name):
    blocks = python_blocks(ROOT / "docs" / name)
    assert blocks, f"docs/{name} has no Python example"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", "\n\n".join(blocks)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the example printed nothing"
