"""Hook capture of the read rows gives exactly what ``output_hidden_states`` gives."""

import pytest
import torch

from extraction.extract import extract_states, find_blocks, hooks_reproduce_hidden_states
from extraction.samples import SAMPLE_TEXTS
from extraction.strategies import STRATEGIES
from extraction.texts import tokenize_texts


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def tokenized(loaded):
    return tokenize_texts(loaded.tokenizer, SAMPLE_TEXTS)


def test_blocks_are_found_and_hooks_verified(loaded):
    blocks = find_blocks(loaded.model, loaded.num_hidden_layers)
    assert blocks is not None and len(blocks) == loaded.num_hidden_layers
    assert hooks_reproduce_hidden_states(loaded)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_hooks_equal_output_hidden_states(loaded, tokenized, strategy):
    hooked = extract_states(loaded, tokenized, strategy, batch_size=4, capture="hooks")
    plain = extract_states(loaded, tokenized, strategy, batch_size=4, capture="hidden-states")
    assert hooked.capture == "hooks" and plain.capture == "hidden-states"
    # The same forward computation: the states are bit for bit the same.
    assert torch.equal(hooked.hidden, plain.hidden)
    # lm_head runs on (1, K, d) instead of (B, C, d): only matmul rounding may differ.
    torch.testing.assert_close(hooked.logits, plain.logits, atol=1e-4, rtol=1e-5)
    for field in ("read_token_ids", "read_position_ids", "read_is_pad", "saw_other_text", "saw_padding"):
        assert torch.equal(getattr(hooked, field), getattr(plain, field)), field
    assert hooked.computed_positions == plain.computed_positions


def test_hidden_states_convention_embeddings_blocks_final_norm(loaded, tokenized):
    """Index 0 is the embeddings output, the last index is what lm_head receives."""
    result = extract_states(loaded, tokenized, "single", capture="hooks")
    ids = torch.tensor([tokenized.token_ids[0]])
    with torch.inference_mode():
        output = loaded.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    expected = torch.stack(output.hidden_states, dim=1)[0, :, -1]  # (L+1, d) at the last token
    torch.testing.assert_close(result.hidden[0], expected, atol=0, rtol=0)
    torch.testing.assert_close(result.logits[0], output.logits[0, -1], atol=1e-4, rtol=1e-5)
    assert loaded.lm_head(result.hidden[0, -1]).argmax() == output.logits[0, -1].argmax()


def test_selected_layers_only(loaded, tokenized):
    last = loaded.num_hidden_layers
    full = extract_states(loaded, tokenized, "sorted", batch_size=3)
    some = extract_states(loaded, tokenized, "sorted", batch_size=3, layers=[0, 2, last], keep_logits=False)
    assert some.logits is None
    assert torch.equal(some.hidden, full.hidden[:, [0, 2, last]])


def test_models_whose_hooks_do_not_match_fall_back(loaded, tokenized, monkeypatch):
    """A model that transforms the final state before lm_head is caught by the probe."""
    import extraction.extract as extract_module

    monkeypatch.setattr(extract_module, "_HOOKS_VERIFIED", type(extract_module._HOOKS_VERIFIED)())
    # Registered first, so it runs before the recorder's hook: lm_head's input is no longer hidden_states[-1].
    handle = loaded.lm_head.register_forward_pre_hook(lambda module, args: (args[0] * 2.0,))
    try:
        assert not hooks_reproduce_hidden_states(loaded)
        result = extract_states(loaded, tokenized, "right", batch_size=4)
        assert result.capture == "hidden-states"
        with pytest.raises(ValueError, match="hidden-states"):
            extract_states(loaded, tokenized, "right", capture="hooks")
    finally:
        handle.remove()


def test_unknown_capture_names_the_valid_ones(loaded, tokenized):
    with pytest.raises(ValueError, match="auto, hooks, hidden-states"):
        extract_states(loaded, tokenized, "single", capture="fast")
