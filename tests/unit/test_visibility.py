"""``BatchLayout.visibility_of`` (the read rows only) agrees with the full ``(B, T, T)`` visibility."""

import pytest
import torch

from extraction.strategies import STRATEGIES


def _full_visibility(layout):
    """The definition: causal, minus pads (padding mask) or other segments (block-diagonal)."""
    rows, cols = layout.input_ids.shape
    visible = torch.ones(cols, cols, dtype=torch.bool).tril().expand(rows, cols, cols).clone()
    if layout.mask_kind == "padding":
        visible &= ~layout.is_pad[:, None, :]
    elif layout.mask_kind == "block-diagonal":
        visible &= layout.segment_ids[:, :, None] == layout.segment_ids[:, None, :]
    return visible


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_visibility_of_read_rows_matches_the_full_mask(name):
    strategy = STRATEGIES[name]
    token_ids = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
    for group in strategy.plan([len(ids) for ids in token_ids], batch_size=3):
        layout = strategy.layout([token_ids[i] for i in group], pad_id=0)
        full = _full_visibility(layout)
        assert torch.equal(layout.visibility(), full)
        assert torch.equal(
            layout.visibility_of(layout.read_rows, layout.read_cols), full[layout.read_rows, layout.read_cols]
        )
