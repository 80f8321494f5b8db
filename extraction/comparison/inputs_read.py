"""What a model's forward pass reads, by measurement: the position ids, the 2-D attention mask,
and the position of a text in its row.

A cause sentence must not assume that a model reads the inputs a layout gives it: TrOCR
swallows ``position_ids`` through ``**kwargs`` and counts positions along the row, RWKV and
xLSTM run every token through their recurrence whatever the mask says. :func:`inputs_read`
finds out with a few forward passes on one short sequence (cached per model), so that
:mod:`extraction.comparison.causes` and the audit derive their causes from what the model does.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..models import LoadedModel

#: A change of the probed state above this fraction of its norm counts as "reads it" (float32
#: rounding of a changed input path stays far below; an ignored input changes nothing at all).
READ_CHANGE = 1e-3
#: The probe sequence's length and the left pads put before it (token ids spread over the vocabulary).
PROBE_TOKENS = 8
PROBE_PADS = 5

_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, InputsRead] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class InputsRead:
    """Measured on one sequence, each True when the last token's final state changes."""

    position_ids: bool  # all position ids 0 instead of arange (a relative encoding changes too)
    attention_mask: bool  # every token but the last masked out of a 2-D mask
    row_offset: bool  # masked left pads before the text, position ids restarting at the text, whatever the pads hold

    def to_dict(self) -> dict:
        return {"position_ids": self.position_ids, "attention_mask": self.attention_mask, "row_offset": self.row_offset}


def _changed(state: torch.Tensor, plain: torch.Tensor) -> bool:
    return float((state - plain).norm()) > READ_CHANGE * float(plain.norm())


def reads_inputs(
    model: torch.nn.Module,
    token_ids: Sequence[int],
    pad_token_id: int | None = None,
    device: torch.device | str | None = None,
) -> InputsRead:
    """Whether ``model`` reads ``position_ids``, a 2-D ``attention_mask``, and the column its text
    starts at, measured on ``token_ids``: the last state with all position ids 0 against ``arange``;
    with every token but the last masked against none; after :data:`PROBE_PADS` masked pads (position
    ids 0 there and restarting at 0 on the text, as the ``left`` layout gives) against the text alone,
    counted only when pads of other content give the same state (so the change is the offset, not the
    pads leaking in)."""
    device = device if device is not None else next(model.parameters()).device
    ids = torch.tensor([list(token_ids)], device=device)  # (1, T)
    n = ids.shape[1]
    arange = torch.arange(n, device=device)[None]  # (1, T)
    ones = torch.ones_like(ids)

    def last_state(input_ids: torch.Tensor, **inputs) -> torch.Tensor:
        with torch.inference_mode():
            output = model(input_ids=input_ids, output_hidden_states=True, use_cache=False, **inputs)
        return output.hidden_states[-1][0, -1].float()

    plain = last_state(ids, attention_mask=ones, position_ids=arange)
    moved = last_state(ids, attention_mask=ones, position_ids=torch.zeros_like(arange))
    only_last = torch.zeros_like(ids)
    only_last[:, -1] = 1
    masked = last_state(ids, attention_mask=only_last, position_ids=arange)
    pad = int(pad_token_id) if pad_token_id is not None else int(token_ids[0])
    padded_mask = torch.cat([torch.zeros(1, PROBE_PADS, dtype=ids.dtype, device=device), ones], 1)  # (1, k + T)
    padded_positions = torch.cat([torch.zeros(1, PROBE_PADS, dtype=ids.dtype, device=device), arange], 1)

    def after_pads(pad_id: int) -> torch.Tensor:
        pads = torch.full((1, PROBE_PADS), pad_id, dtype=ids.dtype, device=device)
        return last_state(torch.cat([pads, ids], 1), attention_mask=padded_mask, position_ids=padded_positions)

    offset = after_pads(pad)
    other_pads = after_pads(int(token_ids[len(token_ids) // 2]) if int(token_ids[len(token_ids) // 2]) != pad else 1)
    return InputsRead(
        position_ids=_changed(moved, plain),
        attention_mask=_changed(masked, plain),
        row_offset=_changed(offset, plain) and not _changed(other_pads, offset),
    )


def probe_token_ids(vocab_size: int, avoid: int | None = None) -> list[int]:
    """:data:`PROBE_TOKENS` token ids spread over the vocabulary, none of them 0 or ``avoid``."""
    spread = [1 + (7919 * k + 13) % max(1, vocab_size - 1) for k in range(PROBE_TOKENS + 1)]
    return [t for t in spread if t != avoid][:PROBE_TOKENS]


def inputs_read(loaded: LoadedModel) -> InputsRead:
    """:func:`reads_inputs` on :func:`probe_token_ids`, measured once per model (cached)."""
    found = _CACHE.get(loaded.model)
    if found is None:
        tokens = probe_token_ids(loaded.vocab_size, loaded.pad_token_id)
        found = _CACHE[loaded.model] = reads_inputs(loaded.model, tokens, loaded.pad_token_id, loaded.device)
    return found
