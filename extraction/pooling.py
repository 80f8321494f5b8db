"""Pooling: which positions of a batch layout make a text's state, and how they are combined.

Three poolings, one name each:

* ``last`` (the default): the state at the position the layout reads
  (``read_rows``/``read_cols``), one row per text;
* ``mean``: the mean, at each layer, of the states at the positions the layout pools for
  the text, one row per text;
* ``tokens``: the states at those positions, one row per position (a text of n tokens
  gives n rows when the layout is sound).

The positions pooled for a text follow from its layout (:meth:`BatchLayout.pooled_ids`):
its own segment (its real tokens) for every layout that knows where a text is, every
column of its row for a layout that ignores the mask (``right-naive``'s ``hidden.mean(1)``:
pads counted in the mean, and stored as rows under ``tokens``). Everything here is pure
tensor code, no model needed.
"""

from __future__ import annotations

from typing import Literal

import torch

from .strategies import BatchLayout, row_before

Pooling = Literal["last", "mean", "tokens"]
POOLINGS: tuple[Pooling, ...] = ("last", "mean", "tokens")
DEFAULT_POOLING: Pooling = "last"
#: The poolings that give one state per text (what a probe trains on).
PER_TEXT_POOLINGS: tuple[Pooling, ...] = ("last", "mean")
#: What each pooling keeps, in a few words (CLI help, the app, reports).
POOLING_SUMMARY: dict[str, str] = {
    "last": "the last real token's state",
    "mean": "the mean of the text's tokens' states",
    "tokens": "every token's state (one row per token)",
}


def parse_pooling(name: str) -> Pooling:
    """``name`` if it is a pooling, else a ``ValueError`` naming the valid ones."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; valid: {', '.join(POOLINGS)}")
    return name  # type: ignore[return-value]


def pooled_positions(layout: BatchLayout, pooling: Pooling) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows, cols, owner)``, each ``(P,)`` long: the positions that make the texts' states
    and the text ``k`` (within the group) each belongs to, grouped by text, columns ascending.

    ``last``: the read positions, ``owner = arange(K)``; ``mean``/``tokens``: the positions
    where :meth:`BatchLayout.pooled_ids` names a text.
    """
    if pooling == "last":
        return layout.read_rows, layout.read_cols, torch.arange(len(layout.read_rows))
    pool_ids = layout.pooled_ids()
    rows, cols = (pool_ids >= 0).nonzero(as_tuple=True)  # row-major: columns ascend within a row
    owner = pool_ids[rows, cols]
    order = torch.sort(owner, stable=True).indices
    return rows[order], cols[order], owner[order]


def pool_rows(picked: torch.Tensor, owner: torch.Tensor, num_texts: int, pooling: Pooling) -> torch.Tensor:
    """Combine the states at the pooled positions, ``picked`` ``(P, ...)``, per ``owner`` ``(P,)``.

    ``mean``: ``(K, ...)`` float32 means (summed in float32 in position order, so that a
    layout and single-text extraction sum the same values the same way); ``last`` and
    ``tokens``: ``picked`` unchanged (one row per position).
    """
    if pooling != "mean":
        return picked
    owner = owner.to(picked.device)
    sums = torch.zeros((num_texts, *picked.shape[1:]), dtype=torch.float32, device=picked.device)
    sums.index_add_(0, owner, picked.float())
    counts = torch.bincount(owner, minlength=num_texts).clamp(min=1).to(sums.dtype)
    return sums / counts.view(-1, *([1] * (picked.dim() - 1)))


def span_facts(
    layout: BatchLayout, pooling: Pooling, positions: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Per text of the group ``(K,)``: what its pooled positions held and could see.

    ``last``: :meth:`BatchLayout.read_facts`. ``mean``/``tokens``, over the text's pooled
    positions: ``read_is_pad`` some of them is padding (pads counted or stored);
    ``saw_other_text``/``saw_padding`` some of them could attend to another text / to padding
    (or is padding); ``after_other_text``/``after_padding`` some of them has another text /
    padding earlier in its row, mask or no mask; ``token_ids``/``position_ids`` at the text's
    last real token among them,
    so a shifted position shows as it does under ``last``; ``rows`` the positions pooled.
    ``positions``: :func:`pooled_positions` of the layout, when the caller has them already.
    """
    if pooling == "last":
        facts = layout.read_facts()
        facts["rows"] = torch.ones(len(layout.read_rows), dtype=torch.long)
        return facts
    rows, cols, owner = positions if positions is not None else pooled_positions(layout, pooling)
    num_texts = len(layout.read_rows)
    segments = layout.segment_ids[rows]  # (P, T)
    visible = layout.visibility_of(rows, cols)  # (P, T)
    is_pad = layout.segment_ids[rows, cols] < 0  # (P,)
    saw_other = (visible & (segments >= 0) & (segments != owner[:, None])).any(-1)  # (P,)
    saw_pad = (visible & (segments < 0)).any(-1) | is_pad
    before = row_before(segments, cols, owner)  # (P,) each

    def any_per_text(flags: torch.Tensor) -> torch.Tensor:
        return torch.zeros(num_texts, dtype=torch.long).index_add_(0, owner, flags.long()) > 0

    # The last real token of each text among its pooled positions (its own segment).
    real = layout.segment_ids[rows, cols] == owner  # (P,)
    last_index = torch.full((num_texts,), -1, dtype=torch.long)
    positions = torch.arange(len(owner))
    last_index.scatter_reduce_(0, owner[real], positions[real], reduce="amax")
    fallback = torch.zeros(num_texts, dtype=torch.long).scatter_reduce_(0, owner, positions, reduce="amax")
    last_index = torch.where(last_index >= 0, last_index, fallback)
    last_rows, last_cols = rows[last_index], cols[last_index]
    return {
        "token_ids": layout.input_ids[last_rows, last_cols],
        "position_ids": layout.effective_position_ids()[last_rows, last_cols],
        "read_is_pad": any_per_text(is_pad),
        "saw_other_text": any_per_text(saw_other),
        "saw_padding": any_per_text(saw_pad),
        "after_other_text": any_per_text(before["after_other_text"]),
        "after_padding": any_per_text(before["after_padding"]),
        "rows": torch.bincount(owner, minlength=num_texts),
    }


def row_offsets(rows_per_text: torch.Tensor) -> torch.Tensor:
    """``(N + 1,)`` int64: text ``i`` owns rows ``offsets[i]:offsets[i + 1]``."""
    return torch.cat([torch.zeros(1, dtype=torch.long), rows_per_text.long().cumsum(0)])
