"""The batched logit lens (certified rows skip ``lm_head``) gives what computing every row gives."""

import pytest
import torch

from extraction import logit_lens, metrics
from extraction.extract import extract_states
from extraction.logit_lens import apply_lm_head, logit_lens_agreement, logit_tolerance
from extraction.samples import SAMPLE_TEXTS
from extraction.texts import tokenize_texts


def _every_row(loaded, reference, hidden):
    """The plain logit lens: every row of every layer through lm_head."""
    atol, rtol = logit_tolerance(loaded.dtype)
    num_states = reference.shape[1]
    out = []
    for layer in range(num_states):
        normed = layer < num_states - 1
        ref = apply_lm_head(loaded, reference[:, layer], final_norm=normed)
        own = apply_lm_head(loaded, hidden[:, layer], final_norm=normed)
        out.append(metrics.top1_agrees(own, ref, atol, rtol).float().mean())
    return torch.stack(out)


@pytest.mark.parametrize("strategies", [("right", "right-naive", "left-naive", "packed-naive", "sorted")])
def test_lens_matches_every_row_computed(tiny_model, strategies):
    tokenized = tokenize_texts(tiny_model.tokenizer, SAMPLE_TEXTS)
    reference = extract_states(tiny_model, tokenized, "single", keep_logits=False).hidden
    hidden = {name: extract_states(tiny_model, tokenized, name, 4, keep_logits=False).hidden for name in strategies}
    noise = torch.randn(reference.shape, generator=torch.Generator().manual_seed(0))
    hidden["tiny-noise"] = reference + 1e-7 * noise * reference.abs()  # rounding-sized: certified
    hidden["large-noise"] = reference + 0.5 * noise * reference.abs().mean()  # must be computed
    lens = logit_lens_agreement(tiny_model, reference, hidden)
    for name, states in hidden.items():
        assert torch.equal(lens[name], _every_row(tiny_model, reference, states)), name
    assert lens["tiny-noise"].min() == 1.0 and lens["large-noise"].min() < 1.0


def test_certificate_skips_lm_head_for_rounding_level_rows(tiny_llama, monkeypatch):
    tokenized = tokenize_texts(tiny_llama.tokenizer, SAMPLE_TEXTS[:4])
    reference = extract_states(tiny_llama, tokenized, "single", keep_logits=False).hidden
    rows_through_head = []
    head = tiny_llama.lm_head
    handle = head.register_forward_hook(lambda module, args, out: rows_through_head.append(args[0].shape[0]))
    try:
        logit_lens_agreement(tiny_llama, reference, {"same": reference.clone()})
    finally:
        handle.remove()
    num_states = reference.shape[1]
    assert sum(rows_through_head) == 4 * num_states  # the reference's rows only
    monkeypatch.setattr(logit_lens, "_max_head_row_norm", lambda loaded: None)  # no certificate: every row
    rows_through_head.clear()
    handle = head.register_forward_hook(lambda module, args, out: rows_through_head.append(args[0].shape[0]))
    try:
        logit_lens_agreement(tiny_llama, reference, {"same": reference.clone()})
    finally:
        handle.remove()
    assert sum(rows_through_head) == 2 * 4 * num_states
