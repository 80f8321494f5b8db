"""Causes on models that do not read the inputs a layout gives them, measured, never by name.

TrOCR swallows ``position_ids`` (and counts positions along the row); RWKV reads no attention
mask (the pads run through its recurrence). Each verdict is checked against a plain-transformers
computation that shares no code with extraction's layouts: the tokenizer's own left padding, a
plain call, the last column read, compared with one text at a time.
"""

from __future__ import annotations

import pytest
import torch

from extraction.audit import audit_states
from extraction.comparison.compare import compare_strategies
from extraction.comparison.inputs_read import inputs_read
from extraction.conformance.matrix import load_architecture
from extraction.texts import tokenize_texts

TEXTS = ["Hi there.", "The cat sat quietly on the warm mat by the door.", "Padding is harmless only here."]
KINDS = ["trocr", "rwkv"]


@pytest.fixture(scope="module", params=KINDS)
def loaded(request):
    return load_architecture(request.param)


def _last_states(model, **inputs) -> torch.Tensor:
    """(B, L, d): every hidden state at the last column of a plain forward call."""
    with torch.no_grad():
        return torch.stack(model(**inputs, output_hidden_states=True).hidden_states, 1)[:, :, -1]


def _plain(loaded, with_position_ids: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded batch (optionally with position ids from the mask) and one text at a time: (N, L, d) each."""
    batch = loaded.tokenizer(TEXTS, padding=True, padding_side="left", return_tensors="pt")
    if with_position_ids:
        batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    padded = _last_states(loaded.model, **batch)
    alone = torch.cat([_last_states(loaded.model, **loaded.tokenizer([t], return_tensors="pt")) for t in TEXTS])
    return padded, alone


def _relative_l2(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """(N,) max over layers of |got - want| / |want|."""
    return ((got - want).norm(dim=-1) / want.norm(dim=-1)).max(-1).values


def test_the_probe_measures_what_the_model_reads(loaded):
    read = inputs_read(loaded)
    batch = loaded.tokenizer(TEXTS[1:2], return_tensors="pt")
    ids = torch.arange(batch["input_ids"].shape[1])[None]
    given = _last_states(loaded.model, **batch, position_ids=ids)
    moved = _last_states(loaded.model, **batch, position_ids=ids + 7)
    assert read.position_ids == bool(_relative_l2(moved, given).max() > 1e-3)
    assert not read.position_ids  # both drop the ids: TrOCR through **kwargs, RWKV reads no positions
    masked = batch["attention_mask"].clone()
    masked[:, :-1] = 0
    hidden = _last_states(loaded.model, input_ids=batch["input_ids"], attention_mask=masked)
    assert read.attention_mask == bool(_relative_l2(hidden, given).max() > 1e-3)
    assert read.attention_mask == (loaded.config.model_type == "trocr")


def test_left_padding_causes(loaded):
    report = compare_strategies(loaded, TEXTS, strategies=["left", "left-naive"], batch_size=len(TEXTS))
    for strategy, with_ids in (("left", True), ("left-naive", False)):
        padded, alone = _plain(loaded, with_ids)
        plain_corrupted = bool(_relative_l2(padded, alone).max() > 1e-2)
        comparison = report.strategies[strategy]
        assert plain_corrupted and comparison.verdict == "corrupted", (strategy, comparison.cause)
        if loaded.config.model_type == "rwkv":  # no mask read: the pads ran through the recurrence
            assert comparison.cause_kind == "pad-state", comparison.cause
            assert "ignores the attention mask" in comparison.cause
        else:  # the ids are dropped: positions from the row, the pads masked
            assert comparison.cause_kind == "position-shift", comparison.cause
    if loaded.config.model_type == "trocr":
        assert "ignores the position ids it was given" in report.strategies["left"].cause


def test_a_left_naive_file_from_plain_transformers_is_named(loaded):
    stored, _ = _plain(loaded, with_position_ids=False)  # tokenizer(padding_side="left") + model(**batch)
    tokenized = tokenize_texts(loaded.tokenizer, TEXTS)
    report = audit_states(loaded, tokenized, stored)
    assert report.verdict == "corrupted"
    assert report.likely_cause == "left-naive", report.cause
    expected = "pad-state" if loaded.config.model_type == "rwkv" else "position-shift"
    assert report.cause_kind == expected, report.cause


def test_recurrent_gemma_left_is_exact_only_through_its_reset():
    """Its RG-LRU resets where ``position_ids == 0``; ``left`` gives the first real token 0."""
    loaded = load_architecture("recurrent_gemma")
    batch = loaded.tokenizer(TEXTS[1:2], return_tensors="pt")
    n, pads = batch["input_ids"].shape[1], 5
    alone = _last_states(loaded.model, **batch)
    padded = torch.cat([torch.full((1, pads), loaded.pad_token_id), batch["input_ids"]], 1)
    mask = torch.cat([torch.zeros(1, pads, dtype=torch.long), batch["attention_mask"]], 1)
    zeros = torch.zeros(pads, dtype=torch.long)
    for text_ids, exact in ((torch.arange(n), True), (torch.arange(1, n + 1), False)):  # from 0: reset; from 1: none
        positions = torch.cat([zeros, text_ids])[None]
        state = _last_states(loaded.model, input_ids=padded, attention_mask=mask, position_ids=positions)
        assert (_relative_l2(state, alone) < 1e-4) == exact
    assert not inputs_read(loaded).attention_mask  # the mask changes nothing: the reset is what saves `left`
    report = compare_strategies(loaded, TEXTS, strategies=["left"], batch_size=len(TEXTS))
    assert report.strategies["left"].verdict == "exact", report.strategies["left"].cause
