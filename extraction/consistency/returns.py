"""What a user's extraction function returned, as float32 tensors, or one ``ValueError`` naming
what is wrong with it (type, dtype, rank, row count, NaN/inf, offsets that do not fit).

Shared by the model-based check (:func:`extraction.check_extractor.check_extractor` with a
model) and the self-consistency check (:mod:`extraction.consistency`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..storage.stored_states import validate_offsets


def token_states_from_return(
    value: Any, num_texts: int, layers: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(rows as float32, offsets (N + 1,) int64, dtype name)`` from a ``tokens`` return
    ``(rows, offsets)``, or a ``ValueError`` naming what is wrong with it."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(
            f"extract_fn returned a {type(value).__name__}: under pooling='tokens' it must return a tuple "
            "(rows (R, d) or (R, L, d), offsets (N + 1,))"
        )
    rows, offsets = value
    if isinstance(offsets, np.ndarray):
        offsets = torch.from_numpy(np.ascontiguousarray(offsets))
    if not isinstance(offsets, torch.Tensor) or offsets.is_floating_point() or offsets.dim() != 1:
        raise ValueError("extract_fn returned offsets that are not a vector of integers: expected (N + 1,) int64")
    num_rows = rows.shape[0] if hasattr(rows, "shape") and len(rows.shape) else 0
    try:
        offsets = validate_offsets(offsets.cpu(), num_texts, num_rows)
    except ValueError as error:
        raise ValueError(f"extract_fn returned offsets that do not fit: {error}") from error
    tensor, dtype = states_from_return(rows, num_rows, layers, what="token rows")
    return tensor, offsets, dtype


def states_from_return(
    value: Any, num_texts: int, layers: Sequence[int] | None, what: str = "rows"
) -> tuple[torch.Tensor, str]:
    """``(float32 cpu tensor as returned, its dtype's name)`` from what ``extract_fn`` returned,
    or a ``ValueError`` naming what is wrong with it (type, dtype, rank, rows, NaN/inf).
    ``num_texts`` is the row count expected (``what`` names the rows in messages)."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        if not (value.is_floating_point()):
            raise ValueError(f"extract_fn returned a tensor of {dtype}: hidden states must be floating point")
        tensor = value.detach().to(device="cpu", dtype=torch.float32)
    elif isinstance(value, np.ndarray):
        dtype = str(value.dtype)
        if value.dtype.kind != "f":
            raise ValueError(f"extract_fn returned an array of {dtype}: hidden states must be floating point")
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    else:
        raise ValueError(
            f"extract_fn returned a {type(value).__name__}: expected a numpy array or torch tensor of shape "
            "(N, d), or (N, L, d) with layers="
        )
    shape = tuple(tensor.shape)
    expected = "(N, L, d) for layers=" if layers is not None and len(layers) > 1 else "(N, d)"
    if tensor.dim() not in (2, 3):
        raise ValueError(f"extract_fn returned shape {shape}: expected {expected}, one row per text")
    if tensor.dim() == 2 and layers is not None and len(layers) > 1:
        raise ValueError(f"extract_fn returned shape {shape} but {len(layers)} layers were named: expected {expected}")
    if shape[0] != num_texts:
        raise ValueError(
            f"extract_fn returned {shape[0]} rows (shape {shape}) for {num_texts} texts: row i must be text i's state"
            if what == "rows"
            else f"extract_fn returned {shape[0]} {what} (shape {shape}) but its offsets end at {num_texts}"
        )
    bad = ~torch.isfinite(tensor)
    if bad.any():
        rows = sorted({int(i) for i in bad.reshape(num_texts, -1).any(1).nonzero().flatten()})
        shown = ", ".join(str(i + 1) for i in rows[:5]) + (" ..." if len(rows) > 5 else "")
        where = "texts" if what == "rows" else what
        raise ValueError(
            f"extract_fn returned NaN or inf values in {len(rows)} of {num_texts} {what} ({where} {shown})"
        )
    return tensor, dtype
