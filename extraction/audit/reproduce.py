"""Forward passes on custom layouts, to reproduce what a defective extraction stored: the
states a layout gives its texts under a pooling (:func:`states_at`, pooled as extraction pools:
:func:`extraction.pooling.pooled_positions` and :func:`~extraction.pooling.pool_rows` over the
layout's ``pool_ids``), the pooled means of a right-padded row at every padded length at once
(:func:`padded_means`), the pre-norm last state, and the layouts of right padding, shifted
left padding, unmasked packing and a text's every prefix."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..pooling import DEFAULT_POOLING, Pooling, pool_rows, pooled_positions
from ..strategies import BatchLayout
from ..texts import TokenizedTexts

if TYPE_CHECKING:
    from ..models import LoadedModel


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _positions_states(
    loaded: LoadedModel, layout: BatchLayout, layers: Sequence[int], rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """One forward pass on ``layout``; the states at positions ``(rows, cols)`` (P,): (P, L, d) float32."""
    kwargs = {"logits_to_keep": 1} if _supports_logits_to_keep(loaded.model) else {}
    with torch.inference_mode():
        output = loaded.model(
            **layout.model_inputs(loaded.dtype, loaded.device), output_hidden_states=True, use_cache=False, **kwargs
        )
        rows, cols = rows.to(loaded.device), cols.to(loaded.device)
        picked = torch.stack([output.hidden_states[layer][rows, cols] for layer in layers], dim=1)  # (P, L, d)
    return picked.float().cpu()


def states_at(
    loaded: LoadedModel, layout: BatchLayout, layers: Sequence[int], pooling: Pooling = DEFAULT_POOLING
) -> torch.Tensor:
    """Run one forward pass on ``layout``; each of its K texts' states under ``pooling``, pooled
    as extraction pools them: ``last`` the read positions, (K, L, d); ``mean`` the mean over the
    positions ``layout.pooled_ids()`` gives the text, (K, L, d); ``tokens`` those positions as rows,
    (K, n, L, d), which needs every text to pool the same number ``n`` of positions."""
    rows, cols, owner = pooled_positions(layout, pooling)
    # Pooled, the texts are those pool_ids names (a right-padded row reads many positions of one text).
    num_texts = len(layout.read_rows) if pooling == "last" else int(owner.max()) + 1
    picked = _positions_states(loaded, layout, layers, rows, cols)  # (P, L, d)
    pooled = pool_rows(picked, owner, num_texts, pooling)  # last/mean (K, L, d); tokens (P, L, d)
    if pooling != "tokens":
        return pooled
    counts = torch.bincount(owner, minlength=num_texts)
    if (counts != counts[0]).any():
        raise ValueError(f"tokens reproduction needs equal row counts per text, got {counts.tolist()}")
    return pooled.view(num_texts, int(counts[0]), *pooled.shape[1:])  # (K, n, L, d)


def padded_means(
    loaded: LoadedModel, layout: BatchLayout, layers: Sequence[int], widths: Sequence[int]
) -> torch.Tensor:
    """The mean over the first ``w`` pooled positions of ``layout``'s one row, for each ``w`` of
    ``widths``: (C, L, d) float32, from one forward pass.

    With a causal model the state at a column depends only on the columns before it, so the row
    padded to its full width gives every shorter padded row's states too: the mean that
    ``hidden.mean(1)`` takes over a row right-padded to ``w`` (pads counted) is the mean over
    its first ``w`` columns. Each mean is :func:`~extraction.pooling.pool_rows`'s (float32, in
    position order), over the positions ``layout.pooled_ids()`` names."""
    rows, cols, _ = pooled_positions(layout, "mean")
    picked = _positions_states(loaded, layout, layers, rows, cols)  # (P, L, d)
    means = []
    for width in widths:
        keep = cols < width  # (P,)
        means.append(pool_rows(picked[keep], torch.zeros(int(keep.sum()), dtype=torch.long), 1, "mean")[0])
    return torch.stack(means)  # (C, L, d)


def pre_norm_states(loaded: LoadedModel, tokenized: TokenizedTexts, pooling: Pooling = DEFAULT_POOLING) -> torch.Tensor:
    """The last block's output before the final norm at each text's last token (``mean``: the
    mean over the text's tokens, in float32): (N, d).

    Single-sample, read by a forward pre-hook on the final norm. ``ValueError`` if the
    model has no final norm module, or for ``tokens`` pooling.
    """
    if pooling == "tokens":
        raise ValueError("pre-norm states are read per text (last or mean), not per token")
    norm = loaded.final_norm
    if norm is None:
        raise ValueError(f"{loaded.name} has no final norm module to read the pre-norm state from")
    captured: list[torch.Tensor] = []

    def hook(module, args):
        states = args[0][0].float()  # (T, d): batch of one
        captured.append((states.mean(0) if pooling == "mean" else states[-1]).cpu())  # (d,)

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


def right_padded_layout(token_ids: Sequence[int], width: int, pad_id: int, masked: bool = True) -> BatchLayout:
    """One row: the text then pads up to ``width``; reads every position from the last real token on.

    Read k is position ``n - 1 + k``, i.e. position -1 of the text right-padded to length
    ``n + k`` (k = 0 is the last real token itself). ``masked=False``: no attention mask (an
    all-ones one, as ``model(input_ids)`` has), so the pads attend to each other too."""
    n = len(token_ids)
    input_ids = torch.full((1, width), pad_id, dtype=torch.long)  # (1, W)
    input_ids[0, :n] = torch.tensor(token_ids)
    segment_ids = torch.full((1, width), -1, dtype=torch.long)
    segment_ids[0, :n] = 0
    cols = torch.arange(n - 1, width)
    # Pooled (mean/tokens), every column of the row counts, pads included, as right-naive pools.
    every_column = torch.zeros((1, width), dtype=torch.long)
    mask_kind = "padding" if masked else "none"
    return BatchLayout(input_ids, segment_ids, None, mask_kind, torch.zeros_like(cols), cols, pool_ids=every_column)


def prefix_layout(token_ids: Sequence[int]) -> BatchLayout:
    """One row: the text alone; reads every position (read k is the state after its first k + 1
    tokens: the text cut to k + 1 tokens, read at its last). Pooled, the text's every column."""
    n = len(token_ids)
    input_ids = torch.tensor([list(token_ids)], dtype=torch.long)  # (1, n)
    segment_ids = torch.zeros((1, n), dtype=torch.long)
    return BatchLayout(input_ids, segment_ids, None, "padding", torch.zeros(n, dtype=torch.long), torch.arange(n))


def left_padded_layout(
    token_ids: Sequence[int], widths: Sequence[int], pad_id: int, pads_pooled: bool = False
) -> BatchLayout:
    """One row per width P: the text left-padded to P, the pads masked, no position ids (the
    model's default ``arange``), as ``tokenizer(padding_side="left")`` + ``model(**batch)`` run it;
    reads the text's last token (pooled: its own tokens). Rows are right-filled with masked pads to
    the widest; a causal model never reads them. Whatever the model does with the pads (masks them,
    runs them through a recurrence) or with the positions (shifted by P - n), it does here too.
    ``pads_pooled``: pooled, row k's every column up to P (``hidden.mean(1)`` of the left-padded
    batch: the pads counted in the mean)."""
    n, count, width = len(token_ids), len(widths), max(widths)
    input_ids = torch.full((count, width), pad_id, dtype=torch.long)  # (C, W)
    segment_ids = torch.full((count, width), -1, dtype=torch.long)  # (C, W): row k's text is segment k
    for row, padded in enumerate(widths):
        input_ids[row, padded - n : padded] = torch.tensor(list(token_ids))
        segment_ids[row, padded - n : padded] = row
    ends = torch.tensor(list(widths)) - 1
    pool_ids = None
    if pads_pooled:
        columns = torch.arange(width)[None, :]  # (1, W)
        pool_ids = torch.where(columns < ends[:, None] + 1, torch.arange(count)[:, None], -1)  # (C, W)
    return BatchLayout(input_ids, segment_ids, None, "padding", torch.arange(count), ends, pool_ids=pool_ids)


def concatenated_layout(
    packs: Sequence[Sequence[Sequence[int]]], pad_id: int, reset_positions: bool = True
) -> BatchLayout:
    """One row per pack: its texts concatenated, position ids restarting per text (or, with
    ``reset_positions=False``, running on over the pack, as ``model(torch.cat(ids))`` has them),
    no separation between texts (each sees the ones before it), right-padded to the longest
    pack; reads the last token of each pack (pooled: the last text's tokens of each pack)."""
    rows = [[t for ids in pack for t in ids] for pack in packs]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (C, W)
    segment_ids = torch.full((len(rows), width), -1, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    last_text = torch.full((len(rows), width), -1, dtype=torch.long)  # pooled: row r's last text is candidate r
    for r, pack in enumerate(packs):
        last_text[r, len(rows[r]) - len(pack[-1]) : len(rows[r])] = r
        input_ids[r, : len(rows[r])] = torch.tensor(rows[r])
        segment_ids[r, : len(rows[r])] = 0  # one segment: the texts are not separated
        running = range(len(rows[r]))
        position_ids[r, : len(rows[r])] = torch.tensor(
            [p for ids in pack for p in range(len(ids))] if reset_positions else list(running)
        )
    ends = torch.tensor([len(r) - 1 for r in rows])
    return BatchLayout(
        input_ids, segment_ids, position_ids, "padding", torch.arange(len(rows)), ends, pool_ids=last_text
    )
