"""Forward passes on custom layouts, to reproduce what a defective extraction stored: the
states at a layout's read positions (:func:`states_at`), the pre-norm last state, and the
layouts of right padding, shifted positions and unmasked packing."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..strategies import BatchLayout
from ..texts import TokenizedTexts

if TYPE_CHECKING:
    from ..models import LoadedModel


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def states_at(loaded: LoadedModel, layout: BatchLayout, layers: Sequence[int]) -> torch.Tensor:
    """Run one forward pass on ``layout``; the states at its read positions: (K, L, d) float32."""
    kwargs = {"logits_to_keep": 1} if _supports_logits_to_keep(loaded.model) else {}
    with torch.inference_mode():
        output = loaded.model(
            **layout.model_inputs(loaded.dtype, loaded.device), output_hidden_states=True, use_cache=False, **kwargs
        )
        rows, cols = layout.read_rows.to(loaded.device), layout.read_cols.to(loaded.device)
        picked = torch.stack([output.hidden_states[layer][rows, cols] for layer in layers], dim=1)  # (K, L, d)
    return picked.float().cpu()


def pre_norm_states(loaded: LoadedModel, tokenized: TokenizedTexts) -> torch.Tensor:
    """The last block's output before the final norm at each text's last token: (N, d).

    Single-sample, read by a forward pre-hook on the final norm. ``ValueError`` if the
    model has no final norm module.
    """
    norm = loaded.final_norm
    if norm is None:
        raise ValueError(f"{loaded.name} has no final norm module to read the pre-norm state from")
    captured: list[torch.Tensor] = []

    def hook(module, args):
        captured.append(args[0][0, -1].float().cpu())  # (d,): batch of one, last position

    handle = norm.register_forward_pre_hook(hook)
    try:
        kwargs = {"logits_to_keep": 1} if _supports_logits_to_keep(loaded.model) else {}
        with torch.inference_mode():
            for ids in tokenized.token_ids:
                loaded.model(input_ids=torch.tensor([ids], device=loaded.device), use_cache=False, **kwargs)
    finally:
        handle.remove()
    if len(captured) != len(tokenized):
        raise ValueError("the final norm was not called exactly once per forward pass; cannot read pre-norm states")
    return torch.stack(captured)


def right_padded_layout(token_ids: Sequence[int], width: int, pad_id: int) -> BatchLayout:
    """One row: the text then pads up to ``width``; reads every position from the last real token on.

    Read k is position ``n - 1 + k``, i.e. position -1 of the text right-padded to length
    ``n + k`` (k = 0 is the last real token itself)."""
    n = len(token_ids)
    input_ids = torch.full((1, width), pad_id, dtype=torch.long)  # (1, W)
    input_ids[0, :n] = torch.tensor(token_ids)
    segment_ids = torch.full((1, width), -1, dtype=torch.long)
    segment_ids[0, :n] = 0
    cols = torch.arange(n - 1, width)
    return BatchLayout(input_ids, segment_ids, None, "padding", torch.zeros_like(cols), cols)


def shifted_positions_layout(token_ids: Sequence[int], offsets: Sequence[int]) -> BatchLayout:
    """One row per offset k: the text at positions k..k+n-1, as after k left pads without position ids."""
    n, count = len(token_ids), len(offsets)
    input_ids = torch.tensor([list(token_ids)] * count, dtype=torch.long)  # (C, n)
    position_ids = torch.tensor(offsets)[:, None] + torch.arange(n)[None, :]  # (C, n)
    segment_ids = torch.zeros(count, n, dtype=torch.long)
    return BatchLayout(input_ids, segment_ids, position_ids, "none", torch.arange(count), torch.full((count,), n - 1))


def concatenated_layout(packs: Sequence[Sequence[Sequence[int]]], pad_id: int) -> BatchLayout:
    """One row per pack: its texts concatenated, position ids restarting per text, no
    separation between texts (each sees the ones before it), right-padded to the longest
    pack; reads the last token of each pack."""
    rows = [[t for ids in pack for t in ids] for pack in packs]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (C, W)
    segment_ids = torch.full((len(rows), width), -1, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, pack in enumerate(packs):
        input_ids[r, : len(rows[r])] = torch.tensor(rows[r])
        segment_ids[r, : len(rows[r])] = 0  # one segment: the texts are not separated
        position_ids[r, : len(rows[r])] = torch.tensor([p for ids in pack for p in range(len(ids))])
    ends = torch.tensor([len(r) - 1 for r in rows])
    return BatchLayout(input_ids, segment_ids, position_ids, "padding", torch.arange(len(rows)), ends)
