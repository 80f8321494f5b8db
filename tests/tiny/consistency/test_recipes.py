"""The recipes in examples/ run for real: nnsight's and TransformerLens's extractions checked
against themselves, on a tiny random Llama saved as a local Hugging Face folder (offline). Each
test skips, saying why, only when its package cannot be imported (requirements-dev.txt pins them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from extraction import check_extractor
from extraction.models.embedded import embedded_tokenizer
from extraction.samples import SAMPLE_TEXTS

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
    """A tiny random Llama and the SmolLM2 tokenizer, saved with save_pretrained."""
    tokenizer = embedded_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=256, initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


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
