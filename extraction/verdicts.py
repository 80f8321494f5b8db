"""The verdict vocabulary and its thresholds: one word for one idea, one constant for one bound.

Every report (compare, audit, extract's verification, probe) says ``exact``, ``drift`` or
``corrupted`` about extracted states measured against single-sample extraction:

* ``exact``: min cosine >= :data:`EXACT_COSINE`, the same ``lm_head`` top-1, and the
  largest relative L2 error within :data:`CORRUPTED_RELATIVE_L2`;
* ``drift``: min cosine >= :data:`DRIFT_COSINE` and the largest relative L2 error
  within :data:`CORRUPTED_RELATIVE_L2` (rounding-level differences), or within
  :data:`FLOAT32_ROUNDING_RELATIVE_L2` for a float32 extraction (:func:`rounding_bound`);
* ``corrupted``: anything else, or any NaN/inf; per row, :func:`corrupted_rows`.

Why relative L2 too: cosine ignores length and is dominated by a model's massive
activations (one dimension near 2,000 in SmolLM2's middle layers while the others stay
below 100). Every state then points nearly the same way, and a wrong state (a mean with
the pads counted in, a state scaled by 2) can keep cosine above 0.99 while
``|h - h_single| / |h_single|`` is 0.5 or more.

Which defect made the states differ is a :data:`CauseKind`, the closed set
:data:`CAUSE_KINDS`, given beside every cause sentence.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch

Verdict = Literal["exact", "drift", "corrupted"]
VERDICTS: tuple[Verdict, ...] = ("exact", "drift", "corrupted")
#: Lowest cosine to single-sample extraction still called exact.
EXACT_COSINE = 0.9999
#: Lowest cosine still called drift; below it states are corrupted.
DRIFT_COSINE = 0.99
#: Largest relative L2 error ``|h - h_single| / |h_single|`` still called drift (or exact);
#: above it states are corrupted whatever their cosine.
#: Measured (extraction.samples.SAMPLE_TEXTS, batch size 4, every layer, CPU; ``python -m
#: extraction compare --model M --dtype D --strategies right,left,sorted,packed,bucketed,left-naive
#: --batch-size 4 --json out.json``, the ``max_relative_l2`` per strategy), largest over the
#: correct strategies (right, left, sorted, packed, bucketed), then left-naive on RoPE models:
#:   smollm2-135m       bfloat16 0.029 (sorted; min cosine 0.99958), left-naive 0.054
#:   smollm2-135m       float16  0.0042,                                 left-naive 0.0067
#:   tiny-random-llama  bfloat16 0.016,                                  left-naive 0.024
#:   tiny-random-llama  float16  0.0027,                                 left-naive 0.0025
#:   tiny-random-gpt2   bfloat16 0.012,  float16 0.0018
#:   every model        float32  below 1e-5
#: Corruption measured on the same runs: 0.5-1.4 (right-naive, packed-naive, left-naive on
#: GPT-2); a mean with the pads counted in at SmolLM2's layer 12: 0.52 (median) to 0.89.
#: 0.1 keeps reduced-precision rounding 3.4x below it (1.8x for bf16 left-naive on RoPE).
CORRUPTED_RELATIVE_L2 = 0.1

#: Largest relative L2 error float32 rounding alone is allowed when both sides ran on the same
#: build. Measured over the conformance matrix (133 tiny random architectures, docs/conformance.md,
#: float32 CPU): the correct layouts stay at or below 6.6e-5 (HRM's recurrent cycles amplify rounding
#: most; most models stay below 2e-6), left padding without position ids on rotary models up to 3e-4
#: (the rotation at other angles rounds differently); the smallest real leak is 1.2e-2 (a recurrent
#: state carried through left padding), then 1.9e-2 (packed texts seeing each other). 1e-3 sits
#: between them. In float32 a larger difference is a defect of the layout, never rounding: such
#: states are corrupted, however high their cosine. Reduced precision has no such bound.
FLOAT32_ROUNDING_RELATIVE_L2 = 1e-3

CauseKind = Literal[
    "none",
    "pad-state",
    "position-shift",
    "cross-text",
    "window",
    "rounding",
    "kernels",
    "other-layer",
    "other-position",
    "other-tokens",
    "other-row",
    "unknown",
]
#: Why states differ from single-sample extraction, one word each:
#: ``none``: they do not (exact); ``pad-state``: a pad position's state was read, or real
#: tokens attended to pads (pads counted in a state); ``position-shift``: the real tokens
#: sat at other position ids than alone; ``cross-text``: texts attended to each other;
#: ``window``: the layout's 4-D mask replaced the model's sliding window, so texts longer than
#: the window saw tokens the model never shows them;
#: ``rounding``: reduced-precision (bfloat16/float16) rounding of a sound layout;
#: ``kernels``: float32 rounding of another build or device (TF32 matmuls, other BLAS,
#: other library versions); ``other-layer``: another point of the model was stored (another
#: layer, or the last block's output before the final norm); ``other-position``: another position
#: of the text was read (the token before the last, the first token); ``other-tokens``: the model read
#: other tokens than the text's (cut short, a special token added or dropped, a chat template
#: applied or not); ``other-row``: a row holds another text's state (rows reordered and never
#: restored, one row written for several texts); ``unknown``: no known defect explains the pattern.
CAUSE_KINDS: tuple[CauseKind, ...] = get_args(CauseKind)  # the same closed set, in that order


def verdict_for(
    min_cosine: float,
    all_top1_same: bool,
    any_nonfinite: bool = False,
    max_relative_l2: float = 0.0,
    rows_match: bool = True,
    dtype: str | None = None,
) -> Verdict:
    """The verdict rule above, as a pure function.

    ``max_relative_l2`` is the largest ``|h - h_single| / |h_single|`` over the rows and
    layers judged (:func:`~extraction.metrics.relative_l2_error`); every caller that has
    the states passes it (0.0, the default, only where no states were compared).
    ``rows_match`` is False when some text has another number of rows than single-sample
    extraction gives it (``tokens`` pooling with pad positions kept as tokens): corrupted,
    whatever the rows they share measure. ``all_top1_same`` is True where no ``lm_head``
    agreement is defined (``mean``/``tokens`` pooling). ``dtype`` is the extraction's dtype
    (``"float32"``, ...) where both sides ran on the same build: in float32 a relative L2 error
    above :data:`FLOAT32_ROUNDING_RELATIVE_L2` is corrupted (None: no such bound, as for stored
    states that may come from another build).
    """
    if any_nonfinite or math.isnan(min_cosine) or math.isnan(max_relative_l2):  # NaN never passes
        return "corrupted"
    if not rows_match:
        return "corrupted"
    if max_relative_l2 > rounding_bound(dtype):
        return "corrupted"
    if min_cosine >= EXACT_COSINE and all_top1_same:
        return "exact"
    if min_cosine >= DRIFT_COSINE:
        return "drift"
    return "corrupted"


def rounding_bound(dtype: str | None = None) -> float:
    """The largest relative L2 error still called drift or exact: :data:`FLOAT32_ROUNDING_RELATIVE_L2`
    for a float32 extraction compared on the same build, :data:`CORRUPTED_RELATIVE_L2` otherwise."""
    return FLOAT32_ROUNDING_RELATIVE_L2 if dtype == "float32" else CORRUPTED_RELATIVE_L2


def corrupted_rows(
    min_cosine_per_row: torch.Tensor, max_relative_l2_per_row: torch.Tensor | None = None, dtype: str | None = None
) -> torch.Tensor:
    """(K,) bool: which rows are corrupted, given each row's worst cosine to single-sample
    extraction (K,) and, where measured, its largest relative L2 error (K,): ``min_cosine <
    DRIFT_COSINE``, ``max_relative_l2 > rounding_bound(dtype)``, or NaN in either."""
    corrupted = min_cosine_per_row.isnan() | (min_cosine_per_row < DRIFT_COSINE)
    if max_relative_l2_per_row is not None:
        corrupted |= max_relative_l2_per_row.isnan() | (max_relative_l2_per_row > rounding_bound(dtype))
    return corrupted
