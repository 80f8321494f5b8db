"""Hook capture of the read rows gives exactly what ``output_hidden_states`` gives."""

import pytest
import torch

from extraction.extract import extract_states, find_blocks, hooks_reproduce_hidden_states
from extraction.samples import SAMPLE_TEXTS
from extraction.strategies import STRATEGIES
from extraction.texts import tokenize_texts
from tests.block_calls import BlockCalls


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
    import extraction.capture as capture_module

    monkeypatch.setattr(capture_module, "_HOOKS_VERIFIED", type(capture_module._HOOKS_VERIFIED)())
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


@pytest.mark.parametrize("pooling", ["last", "mean", "tokens"])
@pytest.mark.parametrize("strategy", ["single", "right", "left", "packed"])
def test_a_middle_layer_stops_the_pass_and_equals_the_full_pass_bit_for_bit(loaded, tokenized, strategy, pooling):
    full = extract_states(loaded, tokenized, strategy, batch_size=4, keep_logits=False, pooling=pooling)
    middle = 2  # hidden_states[2]: the output of block 1, the input of block 2
    with BlockCalls(loaded) as counted:
        short = extract_states(
            loaded, tokenized, strategy, batch_size=4, layers=[0, middle], keep_logits=False, pooling=pooling
        )
    assert full.blocks_run == loaded.num_hidden_layers and full.lm_head_run
    assert short.blocks_run == middle and not short.lm_head_run and "stopped after block 2" in short.pass_note
    passes = short.forward_passes
    assert counted.calls == [passes] * middle + [0] * (loaded.num_hidden_layers - middle)
    assert counted.lm_head_calls == 0 and short.logits is None
    assert torch.equal(short.hidden, full.hidden[..., [0, middle], :])
    if pooling == "tokens":
        assert torch.equal(short.offsets, full.offsets)


def test_logits_or_the_final_state_need_the_whole_pass(loaded, tokenized):
    last = loaded.num_hidden_layers
    with BlockCalls(loaded) as counted:
        with_logits = extract_states(loaded, tokenized, "sorted", batch_size=4, layers=[1])
    assert with_logits.blocks_run == last and with_logits.lm_head_run and with_logits.logits is not None
    assert "logits were asked" in with_logits.pass_note
    assert counted.calls == [with_logits.forward_passes] * last and counted.lm_head_calls == with_logits.forward_passes
    final = extract_states(loaded, tokenized, "sorted", batch_size=4, layers=[1, last], keep_logits=False)
    assert final.blocks_run == last and f"hidden_states[{last}]" in final.pass_note
    plain = extract_states(loaded, tokenized, "sorted", batch_size=4, layers=[1], keep_logits=False,
                           capture="hidden-states")  # fmt: skip
    assert plain.blocks_run == last and "capture='hidden-states'" in plain.pass_note
    assert torch.equal(plain.hidden, final.hidden[:, :1])


def test_a_model_whose_blocks_cannot_be_found_runs_the_whole_pass_with_a_note(loaded, tokenized, monkeypatch):
    import extraction.capture as capture_module

    full = extract_states(loaded, tokenized, "right", batch_size=4, keep_logits=False)
    monkeypatch.setattr(capture_module, "_HOOKS_VERIFIED", type(capture_module._HOOKS_VERIFIED)())
    monkeypatch.setattr(capture_module, "find_blocks", lambda model, num_layers: None)
    result = extract_states(loaded, tokenized, "right", batch_size=4, layers=[2], keep_logits=False)
    assert result.capture == "hidden-states" and result.blocks_run == loaded.num_hidden_layers
    assert result.lm_head_run and "blocks cannot be found" in result.pass_note
    assert torch.equal(result.hidden, full.hidden[:, [2]])
