"""The recipes in examples/ run for real in this interpreter: nnsight's, TransformerLens's,
sentence-transformers' and pyvene's extractions checked against themselves (and sentence-transformers
against this package's single-sample states), on the tiny random Llama with SmolLM2's tokenizer and
chat template, saved as a local Hugging Face folder (offline). Each test skips, saying why, only when
its package cannot be imported (requirements-dev.txt pins them). The libraries pinned to
transformers 4.x run through ``check --python``: test_recipes_transformers4.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from extraction import check_extractor, load_model
from extraction.samples import SAMPLE_TEXTS
from tests.tiny.consistency.venvs import save_tiny_llama

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
TEXTS = SAMPLE_TEXTS[:5]


def _recipe(name: str, package: str):
    pytest.importorskip(package, reason=f"{package} is not installed here (requirements-dev.txt pins it)")
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory) -> str:
    return str(save_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


def test_nnsight_recipe_is_exact(llama_folder):
    recipe = _recipe("nnsight_check", "nnsight")
    model = recipe.load(llama_folder)
    report = check_extractor(recipe.last_token_extractor(model), texts=TEXTS)
    assert (report.verdict, report.likely_cause) == ("exact", None)


def test_nnsight_first_row_habit_is_duplicate_rows(llama_folder):
    recipe = _recipe("nnsight_check", "nnsight")
    report = check_extractor(recipe.first_row_extractor(recipe.load(llama_folder)), texts=TEXTS)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("corrupted", "duplicate-rows", "other-row")


def test_transformerlens_default_reads_pads_and_left_padding_fixes_it(llama_folder):
    recipe = _recipe("transformerlens_check", "transformer_lens")
    bridge = recipe.load(llama_folder)
    default = check_extractor(recipe.resid_post_extractor(bridge), texts=TEXTS, tokenizer=bridge.tokenizer)
    assert (default.verdict, default.likely_cause, default.cause_kind) == ("corrupted", "padding", "pad-state")
    # TransformerLens passes no attention mask for right padding: the pads are attended as tokens,
    # so the text followed by pad tokens, run alone, reproduces the row exactly.
    assert "a pad token's state" in default.cause and "no attention mask" in default.cause
    left = check_extractor(recipe.resid_post_extractor(bridge, padding_side="left"), texts=TEXTS)
    assert (left.verdict, left.likely_cause) == ("exact", None)


@pytest.mark.parametrize("pooling", ["mean", "lasttoken"])
def test_sentence_transformers_batches_exactly_but_renders_the_chat_template(llama_folder, pooling):
    """6.3.0 pads on the right and pools with the mask (exact against itself), and renders each
    plain string through the tokenizer's chat template: the model-based check names it; popping
    the ``"message"`` modality embeds the text as it is (exact against single-sample states)."""
    recipe = _recipe("sentence_transformers_check", "sentence_transformers")
    checked_as = "mean" if pooling == "mean" else "last"
    model = load_model(llama_folder)
    as_loaded = recipe.load(llama_folder, pooling)
    assert "message" in as_loaded[0].modality_config  # the chat template is used because the tokenizer has one
    itself = check_extractor(recipe.encoder(as_loaded), texts=TEXTS)
    assert (itself.verdict, itself.likely_cause) == ("exact", None)
    against = check_extractor(recipe.encoder(as_loaded), model, TEXTS, pooling=checked_as)
    assert (against.verdict, against.likely_cause, against.cause_kind) == ("corrupted", "chat-template", "other-tokens")
    assert "formatted as one user turn with the chat template" in against.cause
    plain = recipe.encoder(recipe.load(llama_folder, pooling, chat_template=False))
    fixed = check_extractor(plain, model, TEXTS, pooling=checked_as)
    assert (fixed.verdict, fixed.likely_cause) == ("exact", None)


def test_pyvene_collects_exactly_and_a_padded_length_read_is_padding(llama_folder):
    recipe = _recipe("pyvene_check", "pyvene")
    intervenable, tokenizer = recipe.load(llama_folder)
    exact = check_extractor(recipe.collector(intervenable, tokenizer), texts=TEXTS, tokenizer=tokenizer)
    assert (exact.verdict, exact.likely_cause) == ("exact", None)
    padded = recipe.collector(intervenable, tokenizer, read="padded-length")
    report = check_extractor(padded, texts=TEXTS, tokenizer=tokenizer)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("corrupted", "padding", "pad-state")
