"""The embedded model's conversion and cache: converted once per module into a temporary
cache (not the session's shared ``embedded_model``: the first load must convert), then
loaded from that cache; its logits, facts and bfloat16 variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from extraction.models import DEFAULT_MODEL, LoadedModel, embedded_gguf_path, gguf_cache_key, load_model

TEXTS = [
    "The capital of France is",
    "Hello world, how are you doing today my friend?",
    "A short one.",
    "Padding corrupts hidden states when extraction reads the wrong position in a batch.",
]


# --- the embedded model (integration) -------------------------------------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, LoadedModel, Path]:
    """(freshly converted, loaded from the cache, cache root): the conversion runs once."""
    cache_home = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache_home))
        fresh = load_model(DEFAULT_MODEL, device="cpu")
        cached = load_model(DEFAULT_MODEL, device="cpu")
    return fresh, cached, cache_home / "padding-audit"


@pytest.mark.integration
def test_embedded_first_load_converts_then_the_cache_is_used(embedded: tuple[LoadedModel, LoadedModel, Path]):
    fresh, cached, root = embedded
    assert not fresh.from_cache and fresh.source == str(embedded_gguf_path())
    assert cached.from_cache and Path(cached.source).parent == root
    key = gguf_cache_key(embedded_gguf_path())
    assert sorted(entry.name for entry in root.iterdir()) == [
        f"smollm2-135m-model-{key}",
        f"smollm2-135m-tokenizer-{key}",
    ]
    config = json.loads((Path(cached.source) / "config.json").read_text())
    assert "quantization_config" not in config
    assert getattr(cached.model, "hf_quantizer", None) is None


@pytest.mark.integration
def test_cached_model_gives_identical_logits(embedded: tuple[LoadedModel, LoadedModel, Path]):
    fresh, cached, _ = embedded
    for text in TEXTS:
        ids = fresh.tokenizer(text).input_ids
        assert cached.tokenizer(text).input_ids == ids
        with torch.no_grad():
            assert torch.equal(fresh.model(torch.tensor([ids])).logits, cached.model(torch.tensor([ids])).logits)


@pytest.mark.integration
def test_embedded_model_knows_paris(embedded: tuple[LoadedModel, LoadedModel, Path]):
    _, cached, _ = embedded
    ids = torch.tensor([cached.tokenizer("The capital of France is").input_ids])
    with torch.no_grad():
        output = cached.model(ids, output_hidden_states=True)
    assert cached.tokenizer.decode(output.logits[0, -1].argmax()) == " Paris"
    torch.testing.assert_close(cached.lm_head(output.hidden_states[-1]), output.logits, rtol=1e-5, atol=1e-4)
    # Norming the last state again is the classic mistake: with trained norm weights it
    # changes the logits (on the random models the norm weights are all 1, so it does not).
    with torch.no_grad():
        renormed = cached.lm_head(cached.final_norm(output.hidden_states[-1]))
    assert not torch.allclose(renormed, output.logits, rtol=1e-2, atol=1e-2)


@pytest.mark.integration
def test_embedded_model_facts(embedded: tuple[LoadedModel, LoadedModel, Path]):
    _, cached, _ = embedded
    assert not cached.is_random and "RANDOM" not in cached.description
    assert (cached.num_hidden_layers, cached.hidden_size, cached.vocab_size) == (30, 576, 49152)
    assert cached.context_length == 8192
    assert not cached.uses_absolute_positions
    assert cached.final_norm is cached.model.model.norm
    assert cached.pad_token_id == 2
    assert cached.pad_token_note == "the pad token is the eos token '<|im_end|>' (id 2)"


@pytest.mark.integration
def test_embedded_bfloat16_comes_from_the_same_cache(
    embedded: tuple[LoadedModel, LoadedModel, Path], monkeypatch: pytest.MonkeyPatch
):
    _, cached, root = embedded
    monkeypatch.setenv("XDG_CACHE_HOME", str(root.parent))
    low = load_model(DEFAULT_MODEL, dtype="bfloat16", device="cpu")
    assert low.from_cache and low.source == cached.source
    assert {parameter.dtype for parameter in low.model.parameters()} == {torch.bfloat16}
    ids = torch.tensor([low.tokenizer("The capital of France is").input_ids])
    with torch.no_grad():
        assert low.tokenizer.decode(low.model(ids).logits[0, -1].argmax()) == " Paris"
