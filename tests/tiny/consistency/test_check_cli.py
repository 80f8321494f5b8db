"""``padding-audit check FILE.py:FUNCTION``: the user's file imported, the report printed, JSON and
HTML written, and every mistake one line with exit code 2. The functions here are toys (no model):
the command needs none."""

from __future__ import annotations

import json
import re

import pytest

from extraction.cli import main
from extraction.samples import SAMPLE_TEXTS

USER_FILE = '''
import torch

def exact(texts):
    """Each text's row depends on the text alone."""
    return torch.stack([torch.tensor([float(len(t)), 1.0, 2.0]) for t in texts])

def padded(texts):
    """Each text's row depends on the longest text of the call, as a pad read does."""
    longest = max(len(t) for t in texts)
    return torch.stack([torch.tensor([float(len(t)), float(longest - len(t)) * 3.0, 1.0]) for t in texts])

NOT_A_FUNCTION = 3
'''


@pytest.fixture
def files(tmp_path):
    (tmp_path / "pipeline.py").write_text(USER_FILE, encoding="utf-8")
    (tmp_path / "broken.py").write_text("raise RuntimeError('no GPU here')\n", encoding="utf-8")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SAMPLE_TEXTS[:5]) + "\n", encoding="utf-8")
    return tmp_path, texts


def test_check_prints_the_report_and_writes_json_and_html(files, capsys):
    folder, texts = files
    out, page = folder / "report.json", folder / "report.html"
    code = main(
        ["check", f"{folder}/pipeline.py:padded", "--texts", str(texts), "--json", str(out), "--html", str(page)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "verdict: corrupted" in printed and "likely cause: padding (cause kind pad-state)" in printed
    assert "noise floor" in printed and "no lm_head check" in printed
    data = json.loads(out.read_text())
    assert (data["check"], data["verdict"], data["likely_cause"]) == ("self-consistency", "corrupted", "padding")
    assert data["n_calls"] == len(data["calls"])
    html = page.read_text()
    assert 'data-verdict="corrupted"' in html and "pipeline.py:padded" in html and "<script" not in html


def test_strict_exit_code(files, capsys):
    folder, texts = files
    assert main(["check", f"{folder}/pipeline.py:exact", "--texts", str(texts), "--strict"]) == 0
    assert "verdict: exact" in capsys.readouterr().out
    assert main(["check", f"{folder}/pipeline.py:padded", "--texts", str(texts), "--strict", "--no-probes"]) == 1


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("pipeline.py", "expected FILE.py:FUNCTION"),
        ("missing.py:extract", "no such file"),
        ("texts.txt:extract", "not a .py file"),
        ("pipeline.py:extract", "has no 'extract'; its functions: exact, padded"),
        ("pipeline.py:NOT_A_FUNCTION", "is a int, not a function"),
        ("broken.py:extract", "importing .*broken.py raised RuntimeError: no GPU here"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(files, capsys, target, message):
    folder, texts = files
    assert main(["check", f"{folder}/{target}", "--texts", str(texts)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert re.search(message, lines[0])


def test_help_says_it_runs_your_code(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    assert "YOUR OWN CODE" in capsys.readouterr().out
