"""The README's Python API example runs as written (tiny random GPT-2, seconds).

The fenced block after the ``<!-- readme-example -->`` marker is written to a file and run
in a fresh interpreter in a temporary folder, followed by a few lines that print what it
computed as JSON, so the test checks structured results rather than printed sentences.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- readme-example -->"
#: Appended to the example: what it computed, as one JSON line.
EPILOGUE = """
import json as _json
print(_json.dumps({
    "verdicts": {name: c.verdict for name, c in report.strategies.items()},
    "audit": [audit.verdict, audit.likely_cause],
}))
"""


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)\n```", readme, re.DOTALL)
    assert match, f"no ```python block after {MARKER} in README.md"
    return match.group(1)


def test_readme_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example() + "\n" + EPILOGUE, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    computed = json.loads(result.stdout.strip().splitlines()[-1])
    assert computed["verdicts"] == {"single": "exact", "right-naive": "corrupted", "right": "exact"}
    assert computed["audit"] == ["corrupted", "right-naive"]
    assert (tmp_path / "states.safetensors").stat().st_size > 0
    assert "plotly" in (tmp_path / "report.html").read_text(encoding="utf-8")
