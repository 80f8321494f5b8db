"""Every example in the README and docs/ still runs as written.

Python: every ```python block of README.md and docs/*.md runs. The blocks of a page run in
order in one namespace (a reader's session), in a temporary folder that already holds the
files the pages read: ``states.safetensors`` and ``tokens.safetensors``, written by
``extract`` on the tiny random GPT-2 (``last`` and ``tokens`` pooling), and, for a page that
loads ``my-model``, the tiny random Llama saved there as a Hugging Face folder. One interpreter runs
every page (each in its own namespace and folder) and prints, as JSON, what the names the
pages leave mean (``report``, ``audit``), so the test checks results, not printed sentences.
A page whose examples need the embedded model is run by the integration tier
(``tests/integration/test_docs_examples_embedded.py``); the recipes of ``docs/check.md`` by
``tests/tiny/consistency/test_recipes.py``.

Command lines: every ``python -m extraction ...`` (or ``padding-audit ...``) line of a ```bash
block is parsed by the command line's own parser, so a renamed or removed option fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from extraction.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Pages whose Python examples load the embedded model: the integration tier runs them.
EMBEDDED_PAGES = {"benchmark.md"}
#: Pages whose Python examples another test runs as they are written, and why here they cannot.
TESTED_ELSEWHERE = {
    # recipes for nnsight, TransformerLens, sentence-transformers, pyvene (and, through --python,
    # steering-vectors and repe) on a model folder: tests/tiny/consistency/test_recipes*.py run them
    # from examples/
    "check.md",
}
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)
COMMAND = re.compile(r"(?:^|\s)(?:(?:\S*/)?python3? -m extraction|padding-audit|-m extraction)\s+(.*)$")

#: Run in the child interpreter: the fixture files, then each page's blocks, then a summary.
RUNNER = """
import json, os, sys
from pathlib import Path

import extraction

pages = json.loads(sys.argv[1])
loaded = extraction.load_model("tiny-random-gpt2")
from extraction.samples import SAMPLE_TEXTS

texts = SAMPLE_TEXTS[:5]  # five texts of different lengths
results = {}
for name, blocks in pages.items():
    folder = Path(name + ".run")
    folder.mkdir()
    os.chdir(folder)
    extraction.extract_to_file(loaded, texts, "states.safetensors")
    extraction.extract_to_file(loaded, texts, "tokens.safetensors", pooling="tokens")
    if any("my-model" in block for block in blocks):  # a Hugging Face folder the page loads by name
        folder_model = extraction.load_model("tiny-random-llama")
        folder_model.model.save_pretrained("my-model")
        folder_model.tokenizer.save_pretrained("my-model")
    namespace = {"__name__": "__main__"}
    for number, block in enumerate(blocks):
        # each block from a file of its own, so that code reading its own source finds it (nnsight's trace)
        source = Path("..", f"{name}.block{number}.py").resolve()
        source.write_text(block, encoding="utf-8")
        exec(compile(block, str(source), "exec"), namespace)
    found = {}
    if "report" in namespace and hasattr(namespace["report"], "strategies"):
        found["verdicts"] = {n: c.verdict for n, c in namespace["report"].strategies.items()}
    if "report" in namespace and hasattr(namespace["report"], "noise_floor"):  # a check without a model
        found["check"] = [namespace["report"].verdict, namespace["report"].likely_cause]
    if "audit" in namespace:
        found["audit"] = [namespace["audit"].verdict, namespace["audit"].likely_cause]
    found["files"] = sorted(os.listdir("."))
    results[name] = found
    os.chdir("..")
print(json.dumps(results))
"""


def python_blocks(page: Path) -> list[str]:
    return PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))


def command_lines(page: Path) -> list[str]:
    """The argument strings of the extraction commands in ``page``'s bash blocks (placeholders skipped)."""
    found = []
    for block in BASH_BLOCK.findall(page.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():  # continuation lines joined
            line = line.split("  #")[0].split(" # ")[0].strip()
            match = COMMAND.search(line)
            if match and "..." not in line and "[" not in match.group(1):
                found.append(match.group(1))
    return found


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    """What every tiny-tier page's Python examples computed, page name -> summary."""
    pages = {page.name: python_blocks(page) for page in PAGES if page.name not in EMBEDDED_PAGES | TESTED_ELSEWHERE}
    pages = {name: blocks for name, blocks in pages.items() if blocks}
    folder = tmp_path_factory.mktemp("docs-examples")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(pages)],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_pages_have_python_examples():
    names = {page.name for page in PAGES if python_blocks(page)}
    assert {"README.md", "api.md", "scale.md"} <= names


def test_every_python_example_ran(ran):
    expected = {
        page.name for page in PAGES if python_blocks(page) and page.name not in EMBEDDED_PAGES | TESTED_ELSEWHERE
    }
    assert set(ran) == expected


def test_readme_checks_an_nnsight_pipeline_against_itself(ran):
    assert ran["README.md"]["check"] == ["exact", None]


def test_api_example_compares_audits_and_writes(ran):
    api = ran["api.md"]
    assert api["verdicts"] == {"single": "exact", "right-naive": "corrupted", "right": "exact"}
    assert api["audit"] == ["corrupted", "right-naive"]
    assert {"states.safetensors", "report.html"} <= set(api["files"])


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_command_lines_parse(page):
    parser = build_parser()
    for arguments in command_lines(page):
        try:
            parser.parse_args(shlex.split(arguments))
        except SystemExit as error:
            pytest.fail(f"{page.name}: `{arguments}` does not parse (exit {error.code})")
