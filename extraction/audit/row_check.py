"""Stored rows measured against fresh extraction (single-sample, or a layout verified to give its
states: :mod:`.reference`): :class:`RowCheck`, the record
:mod:`.check` fills and :mod:`.pattern`, :mod:`.report` and the extraction's verification read."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..verdicts import Verdict, corrupted_rows, verdict_for


@dataclass
class RowCheck:
    """Stored rows measured against fresh extraction (K texts, L stored layers).

    Under ``tokens`` pooling each of the K is a text's rows: cosine and relative L2 are the
    worst over its rows both sides have, and ``rows_differ`` says its row count is not its
    token count. The ``top1_*`` checks are None outside ``last`` (lm_head reads a last token).
    """

    cosine: torch.Tensor  # (K, L) cos(stored, fresh) per row and stored layer
    relative_l2: torch.Tensor  # (K, L) |stored - fresh| / |fresh| per row and stored layer
    bit_exact: torch.Tensor  # (K,) bool: the stored row equals the fresh one bit for bit at every stored layer
    norm_ratio: torch.Tensor  # (K, L) |stored| / |fresh|
    top1_stored: torch.Tensor | None  # (K,) bool: lm_head on the stored state gives the model's own top-1 token
    top1_fresh: torch.Tensor | None  # (K,) bool: the same on the fresh state (True for the last layer)
    top1_same: torch.Tensor | None  # (K,) bool: stored and fresh states give the same top-1 (near-tie counts)
    top1_stored_renormed: torch.Tensor | None  # (K,) bool: lm_head(final_norm(stored last)) gives the model's top-1
    rows_differ: torch.Tensor | None = None  # (K,) bool, tokens only: another row count than the text's tokens'
    fresh: torch.Tensor | None = None  # (K, L, d) the fresh states (last/mean; None under tokens)

    @property
    def rows_match(self) -> bool:
        return self.rows_differ is None or not bool(self.rows_differ.any())

    @property
    def top1_differs(self) -> torch.Tensor:
        """(K,) bool: lm_head top-1 differs from the fresh state's (all False outside ``last``)."""
        if self.top1_same is None:
            return torch.zeros(self.cosine.shape[0], dtype=torch.bool)
        return ~self.top1_same

    @property
    def row_min_cosine(self) -> torch.Tensor:
        """(K,) worst stored layer per row (NaN counts as -1)."""
        return self.cosine.nan_to_num(-1.0).min(1).values

    @property
    def row_max_relative_l2(self) -> torch.Tensor:
        """(K,) worst stored layer per row by relative L2 error (NaN counts as infinite)."""
        return self.relative_l2.nan_to_num(float("inf")).max(1).values

    @property
    def verdict(self) -> Verdict:
        min_cosine = float(self.cosine.min()) if self.cosine.numel() else float("nan")
        max_relative_l2 = float(self.row_max_relative_l2.max()) if self.relative_l2.numel() else float("nan")
        return verdict_for(
            min_cosine, not bool(self.top1_differs.any()), max_relative_l2=max_relative_l2, rows_match=self.rows_match
        )

    @property
    def corrupted(self) -> torch.Tensor:
        """(K,) bool: rows whose worst stored layer is corrupted (:func:`~extraction.verdicts.corrupted_rows`),
        or whose row count is not the text's token count (``tokens``)."""
        corrupted = corrupted_rows(self.row_min_cosine, self.row_max_relative_l2)
        return corrupted if self.rows_differ is None else corrupted | self.rows_differ
