"""Extraction functions people write, with plain transformers, for the self-consistency tests and
recipes: each a closure over a model and tokenizer the caller built (any architecture)."""

from __future__ import annotations

import torch


def _states(model, batch: dict) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(**batch, output_hidden_states=True).hidden_states


def _right_padded(model, tokenizer, texts: list[str], batch_size: int):
    """Each batch of ``batch_size`` right-padded: ``(attention mask (B, T), last hidden state (B, T, d))``."""
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, padding_side="right", return_tensors="pt")
        yield batch["attention_mask"], _states(model, batch)[-1]


def right_padding_read_at_last(model, tokenizer, batch_size: int = 4):
    """The classic bug: right padding, the state at position -1 (a pad's for the shorter texts)."""

    def extract(texts: list[str]) -> torch.Tensor:
        return torch.cat([states[:, -1].float() for _, states in _right_padded(model, tokenizer, texts, batch_size)])

    return extract


def right_padding_gathered(model, tokenizer, batch_size: int = 4):
    """Correct: right padding, the state at each text's last real token (``mask.sum - 1``)."""

    def extract(texts: list[str]) -> torch.Tensor:
        rows = []
        for mask, states in _right_padded(model, tokenizer, texts, batch_size):
            last = mask.sum(1) - 1  # (B,)
            rows.append(states[torch.arange(len(last)), last].float())  # (B, d)
        return torch.cat(rows)

    return extract


def packed_without_mask(model, tokenizer):
    """Every text concatenated into one row, no attention mask: each text sees those before it."""

    def extract(texts: list[str]) -> torch.Tensor:
        ids = [tokenizer(text)["input_ids"] for text in texts]
        ends = torch.tensor([len(i) for i in ids]).cumsum(0) - 1  # (N,) each text's last token in the row
        row = torch.tensor([[t for i in ids for t in i]])  # (1, T)
        return _states(model, {"input_ids": row})[-1][0, ends]  # (N, d)

    return extract


def sorted_and_not_put_back(model, tokenizer):
    """Sorted by length for speed (one text a pass, each exact), rows returned in the sorted order."""

    def extract(texts: list[str]) -> torch.Tensor:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        return torch.cat([right_padding_gathered(model, tokenizer)([texts[i]]) for i in order])

    return extract


def first_row_everywhere(model, tokenizer):
    """Every row is the batch's first row's state (``output[0]`` taken as "the" output)."""

    def extract(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
        return _states(model, batch)[-1][0, -1].expand(len(texts), -1).clone()  # (N, d)

    return extract


def centred_one_text_at_a_time(model, tokenizer):
    """One text a pass, its last state minus the mean of its token states: not the model's states,
    yet the same for a text whatever else is in the call."""

    def extract(texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            states = _states(model, tokenizer(text, return_tensors="pt"))[-1][0]  # (T, d)
            rows.append(states[-1] - states.mean(0))
        return torch.stack(rows)

    return extract
