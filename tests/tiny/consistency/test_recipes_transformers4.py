"""The recipes of libraries pinned to transformers 4.x, run for real through ``check --python``:
steering-vectors 0.12.2 (``transformers<5``) and repe 0.1.4 (fails under transformers 5), in
``venv-tf4-recipes``, which the test cache builds once from the registry (venvs.py; skipped with
pip's reason when the wheels are not reachable), on the tiny Llama saved for transformers 4."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from extraction import check_extractor, load_model
from extraction.consistency.remote import ChildFunction
from extraction.samples import SAMPLE_TEXTS
from tests.tiny.consistency.venvs import save_tiny_llama, transformers4_recipes_python

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
TEXTS = SAMPLE_TEXTS[:6]


@pytest.fixture(scope="module")
def recipes_python() -> Path:
    return transformers4_recipes_python()


@pytest.fixture(scope="module")
def llama4(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("llama4-recipes"), for_transformers4=True)


@pytest.fixture
def model_env(llama4, monkeypatch) -> Path:
    monkeypatch.setenv("PADDING_AUDIT_MODEL", str(llama4))
    return llama4


def _check(python: Path, target: str, folder: Path):
    with ChildFunction(python, f"{EXAMPLES}/{target}") as child:
        report = check_extractor(child, texts=TEXTS, tokenizer=AutoTokenizer.from_pretrained(folder))
    assert child.ready["versions"]["transformers"] == "4.57.6"
    return report


def test_steering_vectors_reads_the_last_real_token(recipes_python, model_env):
    report = _check(recipes_python, "steering_vectors_pipeline.py:extract", model_env)
    assert (report.verdict, report.likely_cause) == ("exact", None)


def test_repe_as_loaded_reads_pads_and_its_readme_settings_are_exact(recipes_python, model_env):
    as_loaded = _check(recipes_python, "repe_pipeline.py:extract_as_loaded", model_env)
    assert (as_loaded.verdict, as_loaded.likely_cause, as_loaded.cause_kind) == ("corrupted", "padding", "pad-state")
    readme = _check(recipes_python, "repe_pipeline.py:extract", model_env)
    assert (readme.verdict, readme.likely_cause) == ("exact", None)


def test_repe_as_loaded_against_single_sample_states_here(recipes_python, model_env):
    """repe reads ``hidden_states[-1]`` (after the final norm), this package's last layer: the audit's
    forensics name the layout, right padding read at position -1."""
    target = f"{EXAMPLES}/repe_pipeline.py:extract_as_loaded"
    report = check_extractor(target, load_model(str(model_env)), TEXTS, python=recipes_python)
    assert (report.verdict, report.likely_cause) == ("corrupted", "right-naive")
