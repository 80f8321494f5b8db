"""``check --python``: the user's function in the user's own interpreter, one child process for the
whole check (extraction/consistency/child.py, run by path; rows back as .npy files).

Toys run in this venv's own python (no model: the protocol and every failure path); the real case
is a pipeline pinned to transformers 4.57 in a venv the test cache builds once (venvs.py), with the
three classic defects, an order defect and an exact function, checked against itself and against
this package's single-sample extraction of the same tiny Llama (transformers 5 here)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from extraction import check_extractor, load_model
from extraction.cli import main
from extraction.consistency.remote import ChildFunction, ChildProcessFailed
from extraction.samples import SAMPLE_TEXTS
from tests.tiny.consistency.venvs import older_transformers_python, save_tiny_llama

TEXTS = SAMPLE_TEXTS[:6]
HERE = Path(__file__).resolve().parent
TF4_PIPELINE = HERE / "tf4_pipeline.py"

TOYS = """
import sys, time
import numpy as np
print("user code prints to stdout")

def exact(texts):
    return np.stack([np.array([float(len(t)), 1.0, 2.0]) for t in texts])

def padded(texts):
    longest = max(len(t) for t in texts)
    return np.stack([np.array([float(len(t)), float(longest - len(t)) * 3.0, 1.0]) for t in texts])

def bfloat16(texts):
    import torch
    return torch.tensor(exact(texts), dtype=torch.bfloat16)

def tokens(texts):
    rows = np.concatenate([np.ones((len(t) % 3 + 1, 4)) * len(t) for t in texts])
    return rows, np.cumsum([0] + [len(t) % 3 + 1 for t in texts])

def one_row_short(texts):
    return exact(texts)[1:]

def a_list(texts):
    return [1.0] * 3

def boom(texts):
    print("about to fail", file=sys.stderr)
    raise KeyError("layer 99")

def hang(texts):
    time.sleep(60)

def crash(texts):
    import os
    os._exit(3)

def where_am_i(texts):
    assert "extraction" not in sys.modules
    return exact(texts)
"""


@pytest.fixture
def toys(tmp_path, monkeypatch):
    """The toy file, and a temp folder of its own (to see that a child leaves nothing behind)."""
    (tmp_path / "toys.py").write_text(TOYS, encoding="utf-8")
    (tmp_path / "broken.py").write_text("import no_such_package_here\n", encoding="utf-8")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return tmp_path


def _left(toys: Path) -> list[Path]:
    return list((toys / "scratch").iterdir())


def test_one_child_serves_every_call_and_reports_what_the_function_did(toys):
    with ChildFunction(sys.executable, f"{toys}/toys.py:padded") as child:
        report = check_extractor(child, texts=TEXTS)
        assert child.ready["versions"]["numpy"]
    assert (report.verdict, report.likely_cause) == ("corrupted", "padding")
    assert child.calls == report.to_dict()["n_calls"] > len(TEXTS)  # one process, every call of the check
    assert report.states_source == "extract_fn toys.py:padded"
    assert _left(toys) == []


@pytest.mark.parametrize(
    ("function", "verdict", "cause", "pooling"),
    [("exact", "exact", None, "last"), ("bfloat16", "exact", None, "last"), ("tokens", "exact", None, "tokens"),
     ("where_am_i", "exact", None, "last")],
)  # fmt: skip
def test_returns_travel_as_they_were(toys, function, verdict, cause, pooling):
    report = check_extractor(f"{toys}/toys.py:{function}", texts=TEXTS, pooling=pooling, python=sys.executable)
    assert (report.verdict, report.likely_cause) == (verdict, cause)
    assert report.states_dtype == ("bfloat16" if function == "bfloat16" else "float64")
    assert _left(toys) == []


@pytest.mark.parametrize(
    ("target", "timeout", "message"),
    [
        ("boom", None, r"toys.py:boom in .* raised: KeyError: 'layer 99' \(on all 6 texts in one call"),
        ("hang", 10, r"did not answer the call within the timeout of 10 s; killed"),
        ("crash", None, r"exited \(code 3\) during the call"),
        ("one_row_short", None, r"returned 5 rows \(shape \(5, 3\)\) for 6 texts.*\(on all 6 texts"),
        ("a_list", None, r"returned something unusable: TypeError: extract_fn returned a list"),
    ],
)
def test_the_childs_failure_is_one_message_with_its_stderr_and_nothing_left(toys, target, timeout, message):
    with pytest.raises(ValueError, match=message) as raised:
        check_extractor(f"{toys}/toys.py:{target}", texts=TEXTS, python=sys.executable, timeout=timeout)
    if isinstance(raised.value, ChildProcessFailed):
        assert "user code prints to stdout" in raised.value.stderr_tail  # the user's prints, not the protocol's
    if target == "boom":
        assert "about to fail" in str(raised.value) and 'raise KeyError("layer 99")' in str(raised.value)
    assert _left(toys) == []


def test_missing_interpreter_and_import_error(toys):
    with pytest.raises(ValueError, match="python=/no/such/python: no such interpreter"):
        check_extractor(f"{toys}/toys.py:exact", texts=TEXTS, python="/no/such/python")
    with pytest.raises(ChildProcessFailed, match="importing broken.py raised ModuleNotFoundError") as raised:
        check_extractor(f"{toys}/broken.py:extract", texts=TEXTS, python=sys.executable)
    assert "no_such_package_here" in raised.value.stderr_tail
    with pytest.raises(ChildProcessFailed, match="has no function 'nothing'"):
        check_extractor(f"{toys}/toys.py:nothing", texts=TEXTS, python=sys.executable)
    with pytest.raises(ValueError, match="timeout= bounds a child process"):
        check_extractor(lambda texts: None, texts=TEXTS, timeout=3)
    assert _left(toys) == []


def test_cli_python_runs_the_child_and_fails_in_one_message(toys, capsys):
    texts = toys / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert main(["check", f"{toys}/toys.py:padded", "--texts", str(texts), "--python", sys.executable]) == 0
    assert "likely cause: padding" in capsys.readouterr().out
    code = main(["check", f"{toys}/toys.py:hang", "--texts", str(texts), "--python", sys.executable, "--timeout", "10"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: toys.py:hang in ") and "timeout of 10 s; killed" in err
    assert main(["check", f"{toys}/toys.py:exact", "--texts", str(texts), "--python", "/no/python"]) == 2
    assert "no such interpreter" in capsys.readouterr().err
    assert _left(toys) == []


def test_help_says_it_runs_your_code_with_your_interpreter(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    assert "YOUR INTERPRETER" in " ".join(capsys.readouterr().out.split())


# -- a transformers-4 pipeline in its own venv --------------------------------------------------


@pytest.fixture(scope="module")
def tf4_python() -> Path:
    return older_transformers_python()


@pytest.fixture(scope="module")
def llama4(tmp_path_factory) -> Path:
    """The tiny Llama, saved here and readable by transformers 4.57."""
    return save_tiny_llama(tmp_path_factory.mktemp("llama4"), for_transformers4=True)


@pytest.fixture
def pipeline_env(llama4, monkeypatch):
    monkeypatch.setenv("PIPELINE_MODEL", str(llama4))


@pytest.mark.parametrize(
    ("function", "verdict", "cause"),
    [
        ("where_am_i", "exact", None),
        ("read_at_last", "corrupted", "padding"),
        ("packed", "corrupted", "packing"),
        ("first_row", "corrupted", "duplicate-rows"),
        ("sorted_rows", "corrupted", "order"),
    ],
)
def test_transformers4_pipeline_against_itself(tf4_python, pipeline_env, function, verdict, cause):
    with ChildFunction(tf4_python, f"{TF4_PIPELINE}:{function}") as child:
        report = check_extractor(child, texts=TEXTS)
    assert child.ready["versions"]["transformers"] == "4.57.6"
    assert (report.verdict, report.likely_cause) == (verdict, cause)


@pytest.mark.parametrize(
    ("function", "verdict", "cause"),
    [("exact", "exact", None), ("read_at_last", "corrupted", "right-naive"), ("packed", "corrupted", "packed-naive")],
)
def test_transformers4_pipeline_against_single_sample_here(tf4_python, pipeline_env, llama4, function, verdict, cause):
    """The function there, the truth here: transformers 5's single-sample states of the same weights."""
    report = check_extractor(f"{TF4_PIPELINE}:{function}", load_model(str(llama4)), TEXTS, python=tf4_python)
    assert (report.verdict, report.likely_cause) == (verdict, cause)
