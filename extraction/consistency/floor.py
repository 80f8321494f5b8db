"""The function's own noise floor: how well ``extract_fn`` agrees with itself when nothing but
the call changes, so that rounding is called rounding and a defect is not hidden by a loose
tolerance.

Two measurements on one text (the longest checked, where rounding accumulates most):

* **repeat**: the text alone twice. Deterministic code gives the same bits; GPU kernels with
  atomics or autotuning may not. A repeat beyond drift means the function is not repeatable
  (dropout left on, sampling): nothing else can be judged.
* **copies**: the text :data:`FLOOR_COPIES` times in one call, against the text alone. No
  padding (every text has the same length) and no other text's content, so a sound pipeline
  differs only by the batch-size rounding of its kernels (bfloat16, TF32, another blocking).
  A copy beyond drift is not rounding: the rows depend on what else is in the call (text
  attending to text: packing without a mask); such copies are left out of the floor and
  become evidence.

The floor is the largest relative L2 error of the two (copies beyond drift left out). Its
:attr:`NoiseFloor.tolerance` is ``max(FLOAT32_MATCH_RELATIVE_L2, FLOOR_FACTOR * floor)``: a
batched row within it differs from the text alone no more than the function differs from
itself. The floor never widens the verdict thresholds of :mod:`extraction.verdicts`; it only
keeps ``exact`` for rows within it, and tells rounding from a defect in the cause.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..audit.pattern import FLOAT32_MATCH_RELATIVE_L2
from ..audit.precision import REDUCED_DTYPES, REPRESENTABLE_FRACTION, representable_fraction
from .calls import FunctionCalls
from .measure import Distance, distance

#: Copies of one text in the floor's batch (a batch size the kernels treat as a batch).
FLOOR_COPIES = 4
#: A difference up to this many times the floor counts as the function's own rounding: one order
#: of magnitude, a margin for batched kernels that round somewhat more than the floor's own calls.
#: Not measured on a GPU (none was lent). On the CPU (tests/tiny/consistency/test_self_check.py's tiny
#: GPT-NeoX) the floor was 0 in float32 and in bfloat16 (the text alone twice and 4 copies in
#: one call were bit-exact), so the tolerance there is FLOAT32_MATCH_RELATIVE_L2, while bfloat16
#: batches padded to other lengths differed by up to 4.5e-3 (drift, rounding).
FLOOR_FACTOR = 10.0


@dataclass
class NoiseFloor:
    """``extract_fn``'s repeatability on text ``text`` (0-based)."""

    text: int
    repeat: Distance  # the text alone, a second time, against the first
    copies: list[Distance]  # each row of FLOOR_COPIES copies in one call, against the text alone
    reduced_precision: str | None  # "bfloat16"/"float16" when the returned values are in that dtype

    @property
    def repeatable(self) -> bool:
        return not self.repeat.corrupted

    @property
    def copies_beyond_drift(self) -> list[int]:
        """Positions (0-based) of the copies whose row is beyond drift from the text alone."""
        return [k for k, d in enumerate(self.copies) if d.corrupted]

    @property
    def relative_l2(self) -> float:
        """The floor: the largest relative L2 error of the repeat and of the copies within drift."""
        errors = [self.repeat.max_relative_l2] + [d.max_relative_l2 for d in self.copies if not d.corrupted]
        return max(errors)

    @property
    def tolerance(self) -> float:
        """A relative L2 error up to this is the function's own rounding."""
        return max(FLOAT32_MATCH_RELATIVE_L2, FLOOR_FACTOR * self.relative_l2)

    def describe(self) -> str:
        """The floor and what it is made of, in one sentence (texts numbered from 1)."""
        repeat = "bit for bit" if self.repeat.bit_exact else f"to relative L2 {self.repeat.max_relative_l2:.2g}"
        within = [d for d in self.copies if not d.corrupted]
        copies = (
            "bit for bit"
            if within and all(d.bit_exact for d in within)
            else f"to relative L2 {max((d.max_relative_l2 for d in within), default=float('nan')):.2g}"
        )
        beyond = self.copies_beyond_drift
        beyond_text = (
            f" ({len(beyond)} of the {len(self.copies)} copies are beyond drift and left out: copies "
            f"{', '.join(str(k + 1) for k in beyond)} of the call depend on the copies before them)"
            if beyond
            else ""
        )
        precision = f"; the returned values are {self.reduced_precision}" if self.reduced_precision else ""
        return (
            f"noise floor {self.relative_l2:.2g} (relative L2): text {self.text + 1} alone twice agrees {repeat}, "
            f"{len(self.copies)} copies of it in one call agree with it alone {copies}{beyond_text}{precision}; "
            f"differences up to {self.tolerance:.2g} (max of {FLOAT32_MATCH_RELATIVE_L2:g} and {FLOOR_FACTOR:g} x "
            "the floor) count as the function's own rounding"
        )

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "relative_l2": self.relative_l2,
            "tolerance": self.tolerance,
            "factor": FLOOR_FACTOR,
            "repeat": self.repeat.to_dict(),
            "copies": [d.to_dict() for d in self.copies],
            "copies_beyond_drift": self.copies_beyond_drift,
            "repeatable": self.repeatable,
            "reduced_precision": self.reduced_precision,
        }


def reduced_precision(tensor: torch.Tensor, dtype: str) -> str | None:
    """``"bfloat16"``/``"float16"`` when the states were returned in that dtype, or every value
    (:data:`~extraction.audit.precision.REPRESENTABLE_FRACTION` of them) is exactly representable in it
    (computed in it, returned as float32) and not all whole numbers; else None."""
    if dtype in ("bfloat16", "float16"):
        return dtype
    if bool((tensor == tensor.round()).all()):  # whole numbers fit any dtype: they say nothing
        return None
    for reduced in REDUCED_DTYPES:
        if representable_fraction(tensor, reduced) >= REPRESENTABLE_FRACTION:
            return str(reduced).removeprefix("torch.")
    return None


def measure_floor(calls: FunctionCalls, texts: list[str], index: int, alone: torch.Tensor, precision: str | None):
    """:class:`NoiseFloor` of text ``index``, whose states alone ``alone`` were already taken: two
    more calls (the text alone again, :data:`FLOOR_COPIES` copies of it in one call)."""
    again = calls([texts[index]], f"text {index + 1} alone again (noise floor)").blocks[0]
    copies = calls([texts[index]] * FLOOR_COPIES, f"{FLOOR_COPIES} copies of text {index + 1} (noise floor)").blocks
    return NoiseFloor(index, distance(again, alone), [distance(row, alone) for row in copies], precision)
