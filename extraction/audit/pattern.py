"""Which stored rows differ from the fresh states (single-sample, or a layout verified to give them), and how (pure).

A cause must explain the *pattern* of the differences, not only their size: reduced
precision changes every row a little, a float32 extraction on another build or device
changes a few rows (or every row) by float32 rounding and leaves the others bit-exact,
and padding defects change the rows that were padded. :func:`difference_pattern` sorts the
checked rows into those that match to float32 rounding (bit-exact ones counted apart) and
those that differ, and says whether the differences are spread over most rows and whether
they stay within drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..strategies import REFERENCE
from .row_check import RowCheck

#: A row whose relative L2 error is at most this at every stored layer matches the fresh one to
#: float32 rounding. Measured (SAMPLE_TEXTS + 6 longer, every layer, CPU): float32 batched
#: (``sorted``, batches of 4) against single-sample at most 1.4e-6 (tiny-random-llama), 1.0e-6
#: (tiny-random-gpt2), 5.0e-6 (smollm2-135m); bfloat16 single-sample against float32 at least
#: 8.4e-3 (tiny-random-gpt2) and 1.2e-2 (smollm2-135m).
FLOAT32_MATCH_RELATIVE_L2 = 1e-4
#: Differences are "spread over most rows" when more than this fraction of the checked rows differ.
SPREAD_FRACTION = 0.5


@dataclass
class DifferencePattern:
    """How the checked rows (text indices, 0-based) split by their distance to fresh states."""

    checked: list[int]  # text indices re-extracted
    differing: list[int]  # relative L2 error above FLOAT32_MATCH_RELATIVE_L2 at some stored layer (or rows differ)
    bit_exact: list[int]  # equal to the fresh state bit for bit at every stored layer
    corrupted: list[int]  # corrupted by the verdict rule (cosine or relative L2)
    max_relative_l2: float  # over the checked rows and stored layers
    min_cosine_differing: float | None  # over the differing rows; None when none differ
    reference: str = REFERENCE  # the layout of the fresh rows (bit for bit is against its rows)

    @property
    def fraction_differing(self) -> float:
        return len(self.differing) / len(self.checked) if self.checked else 0.0

    @property
    def spread(self) -> bool:
        """More than :data:`SPREAD_FRACTION` of the checked rows differ (reduced precision touches every row)."""
        return self.fraction_differing > SPREAD_FRACTION

    @property
    def drift_level(self) -> bool:
        """No checked row is corrupted: every difference is within drift."""
        return not self.corrupted

    def describe(self) -> str:
        """The pattern in one sentence (texts numbered from 1)."""
        n, k = len(self.checked), len(self.differing)
        listed = ", ".join(str(r + 1) for r in self.differing[:6]) + (" ..." if k > 6 else "")
        text = f"{k} of {n} checked rows differ beyond float32 rounding"
        if k:
            text += (
                f" (text{'s' if k > 1 else ''} {listed}; min cosine {self.min_cosine_differing:.6f}, "
                f"max relative L2 {self.max_relative_l2:.2g})"
            )
        against = "" if self.reference == REFERENCE else f" with the {self.reference} rows"
        text += f"; {n - k} match to float32 rounding, {len(self.bit_exact)} of them bit for bit{against}"
        return text

    def to_dict(self) -> dict:
        return {
            "n_checked": len(self.checked),
            "differing_rows": self.differing,
            "n_differing": len(self.differing),
            "n_bit_exact": len(self.bit_exact),
            "n_corrupted": len(self.corrupted),
            "fraction_differing": self.fraction_differing,
            "spread": self.spread,
            "max_relative_l2": self.max_relative_l2,
            "min_cosine_differing": self.min_cosine_differing,
            "match_relative_l2": FLOAT32_MATCH_RELATIVE_L2,
        }


def difference_pattern(check: RowCheck, checked: Sequence[int], reference: str = REFERENCE) -> DifferencePattern:
    """Sort the ``checked`` rows (text indices, in the order of ``check``'s rows) by how they differ
    from the fresh rows, made by the layout ``reference``."""
    row_l2 = check.row_max_relative_l2  # (K,)
    row_cos = check.row_min_cosine  # (K,)
    differs = row_l2 > FLOAT32_MATCH_RELATIVE_L2  # (K,)
    if check.rows_differ is not None:  # tokens: a row count that is not the token count differs, whatever the rows
        differs |= check.rows_differ
    differing = [checked[k] for k in range(len(checked)) if bool(differs[k])]
    return DifferencePattern(
        checked=list(checked),
        differing=differing,
        bit_exact=[checked[k] for k in range(len(checked)) if bool(check.bit_exact[k])],
        corrupted=[checked[k] for k in range(len(checked)) if bool(check.corrupted[k])],
        max_relative_l2=float(row_l2.max()) if len(checked) else 0.0,
        min_cosine_differing=float(row_cos[differs].min()) if differing else None,
        reference=reference,
    )
