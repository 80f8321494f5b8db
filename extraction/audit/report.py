"""The audit's results: :class:`AuditReport` (built on a :class:`~.row_check.RowCheck` and a
:class:`~.pattern.DifferencePattern`) and the :class:`Hypothesis` each forensic test returns,
with their JSON and DataFrame forms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import pandas as pd
import torch

from ..pooling import DEFAULT_POOLING, Pooling
from ..verdicts import (
    CORRUPTED_RELATIVE_L2,
    DRIFT_COSINE,
    EXACT_COSINE,
    CauseKind,
    Verdict,
)
from .pattern import DifferencePattern
from .reference import SINGLE_FORCED, AuditReference
from .row_check import RowCheck
from .sampling import clopper_pearson

if TYPE_CHECKING:
    from .stored_tokens import StoredIdsCheck

#: ``likely_cause`` values besides None (exact): strategy names from ``compare`` and other defects.
#: ``kernels`` is float32 rounding of another build or device (TF32 matmuls, another BLAS, other
#: library versions): nothing reproduces it here, the pattern of the differences names it.
#: docs/forensics.md describes each, its evidence and its JSON keys.
CAUSES = (
    "right-naive",
    "left-naive",
    "packed-naive",
    "order",
    "duplicate-rows",
    "truncated",
    "special-tokens",
    "chat-template",
    "dtype",
    "pre-norm",
    "wrong-layer",
    "read-position",
    "kernels",
    "unknown",
)
#: ``consistent``: a cause named by the pattern of the differences, with nothing to reproduce (``kernels``).
HypothesisStatus = Literal["reproduced", "consistent", "partial", "rejected", "not applicable"]
REPRODUCE_COSINE = 0.999  # a reproduction must reach this cosine with the stored row, at every stored layer

#: ``progress(stage, done, total)``: stage is ``"reading texts"`` (the streamed scan of a texts file,
#: in bytes), ``"sampling round"`` (round ``done`` of at most ``total`` begins, with ``max_corrupted``),
#: ``"re-extracting"`` (texts) or ``"forensics"`` (hypotheses).
AuditProgress = Callable[[str, int, int], None]
#: The progress stage that says a round of ``max_corrupted`` sampling begins.
SAMPLING_ROUND = "sampling round"


@dataclass
class Hypothesis:
    """One known defect tried as an explanation of the stored vectors.

    Cosines are minima over the tested rows and the stored layers; for each row the
    best candidate reproduction (padded length, pack start, dtype, layer) is used.
    """

    name: str  # one of CAUSES
    title: str  # the defect in words
    status: HypothesisStatus
    reproduction_cosine: float | None  # min cos(stored, best reproduction) over tested rows
    fresh_cosine: float | None  # min cos(stored, fresh single-sample state) over the same rows
    rows_tested: list[int]  # text indices (0-based) tried
    rows_reproduced: list[int]  # of those, the ones it reproduces
    detail: str  # the evidence in one or two sentences
    evidence: dict = field(default_factory=dict)  # JSON-ready specifics (inferred lengths, batch sizes, ...)
    #: What the reproducing layout did to the texts (pads read or pooled, positions shifted, texts
    #: seen), or the rounding named; "unknown" where the hypothesis names no padding defect.
    cause_kind: CauseKind = "unknown"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "cause_kind": self.cause_kind,
            "title": self.title,
            "status": self.status,
            "reproduction_cosine": _clean_float(self.reproduction_cosine),
            "fresh_cosine": _clean_float(self.fresh_cosine),
            "rows_tested": self.rows_tested,
            "rows_reproduced": self.rows_reproduced,
            "detail": self.detail,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class SampleRecord:
    """How the checked rows were drawn (:mod:`.sampling`), and how many rows the store gave up."""

    seed: int = 0
    stratified: bool = False  # by shard (a folder of shards)
    max_corrupted: float | None = None  # the bound asked for (sampled in rounds until shown), or None
    rounds: int = 1
    rows_read: int = 0  # rows read from the store (a store read whole counts all its rows)

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "stratified_by_shard": self.stratified,
            "max_corrupted": self.max_corrupted,
            "rounds": self.rounds,
            "rows_read": self.rows_read,
        }


@dataclass
class AuditReport:
    """The audit of one stored dataset (N texts, L stored layers, ``n_checked`` rows re-extracted)."""

    model: str
    model_description: str
    dtype: str  # dtype of the model used for the fresh states
    states_source: str
    states_shape: tuple[int, ...]  # as stored
    states_dtype: str  # dtype in the file
    layers: list[int]  # hidden_states index of each stored layer
    n_texts: int
    checked: list[int]  # text indices re-extracted (0-based, ascending)
    check: RowCheck  # measurements on the checked rows
    lm_head_layer: int  # the stored layer the lm_head accuracies use
    lm_head_note: str  # how lm_head was applied
    verdict: Verdict
    likely_cause: str | None  # None when exact; otherwise one of CAUSES
    cause: str  # the finding in words
    hypotheses: list[Hypothesis] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    differences: DifferencePattern | None = None  # which checked rows differ beyond float32 rounding
    pooling: Pooling = DEFAULT_POOLING  # how a text's states were pooled in the file (and re-extracted)
    cause_kind: CauseKind = "none"  # which defect the likely cause is (verdicts.CAUSE_KINDS)
    reference: AuditReference = SINGLE_FORCED  # the layout that made the fresh rows (.reference)
    sample: SampleRecord = field(default_factory=SampleRecord)
    stored_ids: StoredIdsCheck | None = None  # the store's own token ids, re-extracted from (.stored_tokens)

    @property
    def n_checked(self) -> int:
        return len(self.checked)

    @property
    def cosine(self) -> torch.Tensor:
        """(n_checked, L) cosine with the fresh states (made by ``reference``)."""
        return self.check.cosine

    @property
    def min_cosine(self) -> float:
        return float(self.cosine.min())

    @property
    def mean_cosine(self) -> float:
        return float(self.cosine.mean())

    @property
    def max_relative_l2(self) -> float:
        """Largest ``|stored - fresh| / |fresh|`` over checked rows and stored layers."""
        return float(self.check.row_max_relative_l2.max())

    @property
    def median_relative_l2(self) -> float:
        """Median over checked rows of each row's worst relative L2 error."""
        return float(self.check.row_max_relative_l2.median())

    @property
    def per_row_max_relative_l2(self) -> list[float]:
        return self.check.row_max_relative_l2.tolist()

    @property
    def per_row_min_cosine(self) -> list[float]:
        return self.check.row_min_cosine.tolist()

    @property
    def per_layer_min_cosine(self) -> list[float]:
        return self.cosine.min(0).values.tolist()

    @property
    def fraction_corrupted(self) -> float:
        """Fraction of checked rows that are corrupted: cosine below DRIFT_COSINE or relative L2
        error above CORRUPTED_RELATIVE_L2 at some stored layer."""
        return float(self.check.corrupted.float().mean())

    @property
    def n_rows(self) -> int:
        """Rows in the store the sample is drawn from: its texts (a tokens file's text owns several rows)."""
        return self.n_texts

    @property
    def n_corrupted(self) -> int:
        return int(self.check.corrupted.sum())

    @property
    def fraction_corrupted_interval(self) -> tuple[float, float]:
        """95% interval for the fraction of the store's rows that are corrupted: Clopper-Pearson from
        the checked rows (:func:`~.sampling.clopper_pearson`), the fraction itself when every row was checked."""
        if self.n_checked >= self.n_rows:
            return self.fraction_corrupted, self.fraction_corrupted
        return clopper_pearson(self.n_corrupted, self.n_checked)

    @property
    def bound_shown(self) -> bool | None:
        """Whether the interval's upper bound is below the ``max_corrupted`` asked for (None: none asked)."""
        if self.sample.max_corrupted is None:
            return None
        return self.fraction_corrupted_interval[1] < self.sample.max_corrupted

    def describe_interval(self) -> str:
        """The interval in words, e.g. ``at most 0.37% of the store's 1,000,000 rows are corrupted (95%)``."""
        low, high = self.fraction_corrupted_interval
        if self.n_checked >= self.n_rows:
            return f"{self.n_corrupted} of all {self.n_rows:,} rows checked are corrupted ({100 * low:.3g}%)"
        where = f"of the store's {self.n_rows:,} rows"
        seen = f"{self.n_corrupted} of {self.n_checked:,} sampled rows corrupted"
        if self.n_corrupted == 0:
            return f"{seen}: at most {100 * high:.3g}% {where} are corrupted (95%, Clopper-Pearson)"
        return f"{seen}: {100 * low:.3g}% to {100 * high:.3g}% {where} are corrupted (95%, Clopper-Pearson)"

    @property
    def lm_head_accuracy_stored(self) -> float | None:
        """None outside ``last`` pooling (lm_head predicts from a last token's state)."""
        top1 = self.check.top1_stored
        return None if top1 is None else float(top1.float().mean())

    @property
    def lm_head_accuracy_fresh(self) -> float | None:
        top1 = self.check.top1_fresh
        return None if top1 is None else float(top1.float().mean())

    @property
    def best_hypothesis(self) -> Hypothesis | None:
        return next((h for h in self.hypotheses if h.name == self.likely_cause), None)

    def to_dict(self) -> dict:
        """JSON-ready: the keys the ``audit --json`` output promises, and more."""
        renormed = self.check.top1_stored_renormed
        return {
            "verdict": self.verdict,
            "pooling": self.pooling,
            "likely_cause": self.likely_cause,
            "cause_kind": self.cause_kind,
            "cause": self.cause,
            "min_cosine": _clean_float(self.min_cosine),
            "mean_cosine": _clean_float(self.mean_cosine),
            "max_relative_l2": _clean_float(self.max_relative_l2),
            "median_relative_l2": _clean_float(self.median_relative_l2),
            "n_bit_exact": int(self.check.bit_exact.sum()),
            "reference": self.reference.to_dict(),
            "fraction_corrupted": self.fraction_corrupted,
            "lm_head_accuracy_stored": self.lm_head_accuracy_stored,
            "lm_head_accuracy_fresh": self.lm_head_accuracy_fresh,
            "lm_head_accuracy_stored_after_final_norm": (
                float(renormed.float().mean()) if renormed is not None else None
            ),
            "n_checked": self.n_checked,
            "n_texts": self.n_texts,
            "n_rows": self.n_rows,
            "n_corrupted": self.n_corrupted,
            "fraction_corrupted_interval": list(self.fraction_corrupted_interval),
            "fraction_corrupted_interval_method": "clopper-pearson 95%",
            "max_corrupted_shown": self.bound_shown,
            "sample": self.sample.to_dict(),
            "stored_token_ids": self.stored_ids.to_dict() if self.stored_ids is not None else None,
            "model": self.model,
            "dtype": self.dtype,
            "states": {
                "source": self.states_source,
                "shape": list(self.states_shape),
                "dtype": self.states_dtype,
                "layers": self.layers,
            },
            "lm_head_layer": self.lm_head_layer,
            "lm_head_note": self.lm_head_note,
            "thresholds": {
                "exact_min_cosine": EXACT_COSINE,
                "drift_min_cosine": DRIFT_COSINE,
                "corrupted_relative_l2": CORRUPTED_RELATIVE_L2,
                "reproduce_min_cosine": REPRODUCE_COSINE,
            },
            "per_layer_min_cosine": [_clean_float(x) for x in self.per_layer_min_cosine],
            "per_layer_median_norm_ratio": self.check.norm_ratio.median(0).values.tolist(),
            "checked_rows": self.checked,
            "per_row_min_cosine": [_clean_float(x) for x in self.per_row_min_cosine],
            "per_row_max_relative_l2": [_clean_float(x) for x in self.per_row_max_relative_l2],
            "rows_differ": (
                [self.checked[k] for k in self.check.rows_differ.nonzero().flatten().tolist()]
                if self.check.rows_differ is not None
                else None
            ),
            "differences": self.differences.to_dict() if self.differences is not None else None,
            "hypotheses": [h.to_dict() for h in self.hypotheses],
            "notes": self.notes,
            "seconds": self.seconds,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per checked text: its worst cosine and relative L2 error, and the lm_head checks."""
        return pd.DataFrame(
            {
                "text": self.checked,
                "min_cosine": self.per_row_min_cosine,
                "max_relative_l2": self.per_row_max_relative_l2,
                "corrupted": self.check.corrupted.numpy(),
                "lm_head_top1_stored": _column(self.check.top1_stored, self.n_checked),
                "lm_head_top1_fresh": _column(self.check.top1_fresh, self.n_checked),
            }
        )

    def hypotheses_frame(self) -> pd.DataFrame:
        """One row per hypothesis tried."""
        return pd.DataFrame(
            [
                {
                    "hypothesis": h.name,
                    "status": h.status,
                    "reproduction_cosine": h.reproduction_cosine,
                    "fresh_cosine": h.fresh_cosine,
                    "rows": f"{len(h.rows_reproduced)}/{len(h.rows_tested)}",
                    "detail": h.detail,
                }
                for h in self.hypotheses
            ],
            columns=["hypothesis", "status", "reproduction_cosine", "fresh_cosine", "rows", "detail"],
        )


def _column(flags: torch.Tensor | None, n: int):
    return flags.numpy() if flags is not None else [None] * n


def _clean_float(x: float | None) -> float | None:
    return None if x is None or x != x else float(x)
