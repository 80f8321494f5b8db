"""Which batchings fit inferred structure (pure): batch sizes that give the padded lengths
inferred per text, and pack sizes that give the inferred pack starts."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

MAX_BATCH_SEARCH = 1024  # batch sizes checked for consistency with inferred padded lengths
MAX_PACK_SEARCH = 256  # pack sizes checked for consistency with inferred pack starts
BATCH_ORDERS = ("input order", "ascending length", "descending length")


def _batch_order(lengths: np.ndarray, order: str) -> np.ndarray:
    if order == "input order":
        return np.arange(len(lengths))
    if order == "ascending length":
        return np.argsort(lengths, kind="stable")
    return np.argsort(-lengths, kind="stable")


def _choices(value: int | Collection[int]) -> set[int]:
    return {int(value)} if isinstance(value, int | np.integer) else {int(v) for v in value}


def consistent_batchings(
    lengths: Sequence[int],
    padded: dict[int, int | Collection[int]],
    padded_longer: Sequence[int] = (),
    max_batch: int = MAX_BATCH_SEARCH,
) -> dict[str, list[int]]:
    """Batch sizes (per order) whose padded lengths agree with what was inferred.

    Batching the texts in ``order`` into consecutive groups of B pads each text to its
    group's longest length. A batching is consistent when that padded length is
    ``padded[i]`` (or one of them, when several lengths give the same state) for every
    inferred row i, and exceeds the text's own length for every row in
    ``padded_longer`` (rows known to have been padded, length not inferred).
    Returns ``{order: [B, ...]}`` for the orders in :data:`BATCH_ORDERS`.
    """
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    n = len(lengths_arr)
    exact = {row: _choices(v) for row, v in padded.items()}
    known_rows = np.array(sorted(r for r, c in exact.items() if len(c) == 1), dtype=np.int64)
    known_values = np.array([next(iter(exact[r])) for r in known_rows], dtype=np.int64)
    ambiguous = {r: c for r, c in exact.items() if len(c) > 1}
    longer_rows = np.asarray(list(padded_longer), dtype=np.int64)
    found: dict[str, list[int]] = {}
    for order in BATCH_ORDERS:
        perm = _batch_order(lengths_arr, order)
        rank = np.empty(n, dtype=np.int64)
        rank[perm] = np.arange(n)  # position of each text in the batching order
        ordered = lengths_arr[perm]
        sizes = []
        for batch in range(1, min(n, max_batch) + 1):
            groups = -(-n // batch)
            padded_order = np.full(groups * batch, -1, dtype=np.int64)
            padded_order[:n] = ordered
            group_max = padded_order.reshape(groups, batch).max(1)  # (groups,)
            target = group_max[rank // batch]  # (n,) padded length of each text
            if len(known_rows) and not np.array_equal(target[known_rows], known_values):
                continue
            if len(longer_rows) and not (target[longer_rows] > lengths_arr[longer_rows]).all():
                continue
            if any(int(target[r]) not in c for r, c in ambiguous.items()):
                continue
            sizes.append(batch)
        found[order] = sizes
    return found


def consistent_pack_sizes(
    n: int, starts: dict[int, int | Collection[int]], not_start: Sequence[int] = (), max_pack: int = MAX_PACK_SEARCH
) -> list[int]:
    """Pack sizes S (texts per pack, input order: text i in the pack starting at i - i % S)
    that give ``starts[i]`` (or one of them) for every inferred row and a start before i
    for every row in ``not_start`` (rows known to have seen earlier texts)."""
    choices = {i: _choices(s) for i, s in starts.items()}
    sizes = []
    for size in range(1, min(n, max_pack) + 1):
        if all(i - i % size in c for i, c in choices.items()) and all(i % size != 0 for i in not_start):
            sizes.append(size)
    return sizes


def describe_batchings(found: dict[str, list[int]]) -> str:
    """``{order: sizes}`` in words."""
    parts = []
    for order, sizes in found.items():
        if not sizes:
            continue
        listed = ", ".join(str(s) for s in sizes[:6]) + (f" and {len(sizes) - 6} more" if len(sizes) > 6 else "")
        parts.append(f"batch size {listed} in {order}")
    if not parts:
        return "no fixed batch size in input or length order gives these padded lengths (batches composed otherwise)"
    return "consistent with " + "; or ".join(parts)
