"""Hook capture on the embedded model gives exactly what ``output_hidden_states`` gives."""

import pytest
import torch

from extraction.extract import extract_states, hooks_reproduce_hidden_states
from extraction.samples import SAMPLE_TEXTS
from extraction.texts import tokenize_texts


@pytest.mark.integration
def test_hooks_equal_output_hidden_states_on_the_embedded_model(embedded_model):
    loaded = embedded_model
    tokenized = tokenize_texts(loaded.tokenizer, SAMPLE_TEXTS[:5])
    assert hooks_reproduce_hidden_states(loaded)
    for strategy in ("right", "packed"):
        hooked = extract_states(loaded, tokenized, strategy, batch_size=5, capture="hooks")
        plain = extract_states(loaded, tokenized, strategy, batch_size=5, capture="hidden-states")
        assert torch.equal(hooked.hidden, plain.hidden), strategy
        torch.testing.assert_close(hooked.logits, plain.logits, atol=1e-4, rtol=1e-5)


@pytest.mark.integration
def test_layer_12_from_the_shortened_pass_equals_the_full_pass_on_the_embedded_model(embedded_model):
    loaded = embedded_model
    tokenized = tokenize_texts(loaded.tokenizer, SAMPLE_TEXTS[:6])
    full = extract_states(loaded, tokenized, "sorted", batch_size=3, keep_logits=False)
    short = extract_states(loaded, tokenized, "sorted", batch_size=3, layers=[12], keep_logits=False)
    assert full.blocks_run == loaded.num_hidden_layers == 30 and full.lm_head_run
    assert short.blocks_run == 12 and not short.lm_head_run and "stopped after block 12 of 30" in short.pass_note
    assert torch.equal(short.hidden[:, 0], full.hidden[:, 12])  # bit for bit
