"""What the forensic hypotheses share: the :class:`Evidence` (stored and fresh states of the
rows tested) and :class:`RowSearch`, the bookkeeping of a hypothesis tested row by row, with
the rule that says whether a candidate reproduces a stored row.

A "row" is a text: its stored state (L, d) under ``last``/``mean``, its stored rows (m, L, d)
under ``tokens``; candidates have one more leading dimension. A candidate of another shape
(another row count) reproduces nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..extract import extract_states
from ..pooling import DEFAULT_POOLING, Pooling
from ..texts import TokenizedTexts
from ..verdicts import CORRUPTED_RELATIVE_L2, CauseKind
from .check import state_cosine, state_relative_l2
from .pattern import DifferencePattern
from .report import REPRODUCE_COSINE, Hypothesis, HypothesisStatus

if TYPE_CHECKING:
    from ..models import LoadedModel

#: Besides REPRODUCE_COSINE, a reproduction must be this much closer than the fresh state: 1-cos_r <= f * (1-cos_f).
CLOSER_FACTOR = 0.5
TIE_COSINE = 1e-6  # candidates this close to the best one are equally good (e.g. every padded length of a 1-token text)
TIE_RELATIVE_L2 = 1e-4  # ... and this close by relative L2 (float32 rounding stays below 7e-5: verdicts)


@dataclass
class Evidence:
    """What the hypotheses share."""

    loaded: LoadedModel
    tokenized: TokenizedTexts
    stored: torch.Tensor  # (N, L, d); tokens: (R, L, d), text i owning offsets[i]:offsets[i + 1]
    layers: list[int]
    rows: list[int]  # forensic rows, worst first
    fresh: dict[int, torch.Tensor]  # row -> (S, d) fresh single-sample states at every hidden state (tokens: (n, S, d))
    exact_checked: list[int]  # checked rows that match (row min cosine >= EXACT and same top-1)
    affected_checked: list[int]  # checked rows that do not
    pattern: DifferencePattern  # which checked rows differ, and how
    stored_dtype: str = "float32"  # the dtype in the file
    pooling: Pooling = DEFAULT_POOLING  # how the file pooled each text's states
    offsets: torch.Tensor | None = None  # (N + 1,) under tokens
    checked: list[int] = field(default_factory=list)  # every re-extracted text, in the order of fresh_checked
    fresh_checked: torch.Tensor | None = None  # (K, L, d) their fresh states at the stored layers (None: tokens)

    def stored_row(self, row: int) -> torch.Tensor:
        """Text ``row``'s stored state (L, d), or its stored rows (m, L, d) under tokens."""
        if self.offsets is None:
            return self.stored[row]
        return self.stored[int(self.offsets[row]) : int(self.offsets[row + 1])]

    def fresh_at_layers(self, row: int) -> torch.Tensor:
        return self.fresh[row][..., self.layers, :]  # (L, d); tokens (n, L, d)

    def fresh_cosine(self, row: int) -> float:
        """min cos(stored, fresh) over the row's layers (and rows); -1 when the row counts differ
        (rows the text does not have match nothing)."""
        stored_row, fresh_row = self.stored_row(row), self.fresh_at_layers(row)
        if stored_row.shape != fresh_row.shape:
            return -1.0
        return float(row_scores(stored_row, fresh_row[None])[0])

    def fresh_relative_l2(self, row: int) -> float:
        """max |stored - fresh| / |fresh| over the row's layers (and rows); inf when the row counts differ."""
        return float(row_relative_l2(self.stored_row(row), self.fresh_at_layers(row)[None])[0])


def fresh_states(ev: Evidence, tokenized: TokenizedTexts) -> torch.Tensor:
    """``tokenized``'s correct states (each text alone; one right-padded batch, read at each text's
    last token) at the stored layers, pooled as the file was: (C, L, d) float32."""
    return extract_states(
        ev.loaded,
        tokenized,
        "right",
        batch_size=len(tokenized),
        layers=ev.layers,
        keep_logits=False,
        pooling=ev.pooling,
    ).hidden


def row_scores(stored_row: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(C,) min over layers (and token rows) of cos(stored_row (..., L, d), candidates (C, ..., L, d));
    NaN -> -1; -1 for every candidate when the shapes differ."""
    if candidates.shape[1:] != stored_row.shape:
        return torch.full((candidates.shape[0],), -1.0)
    cosines = state_cosine(candidates, stored_row.expand_as(candidates)).nan_to_num(-1.0)  # (C, ..., L)
    return cosines.flatten(1).min(-1).values


def row_relative_l2(stored_row: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(C,) max over layers (and token rows) of |stored_row - candidate| / |candidate| (shapes as
    :func:`row_scores`); NaN -> inf; inf when the shapes differ."""
    if candidates.shape[1:] != stored_row.shape:
        return torch.full((candidates.shape[0],), float("inf"))
    errors = state_relative_l2(stored_row.expand_as(candidates), candidates).nan_to_num(float("inf"))
    return errors.flatten(1).max(-1).values


def reproduces(
    repro_cosine: float, fresh_cosine: float, repro_relative_l2: float = 0.0, fresh_relative_l2: float | None = None
) -> bool:
    """A reproduction explains a stored row when it reaches REPRODUCE_COSINE, is clearly closer than
    the fresh state (CLOSER_FACTOR, by cosine, or, given ``fresh_relative_l2``, by relative L2:
    ``l2_r <= f * l2_f``; a row that differs by its length alone, a mean with masked pads' zero states
    counted, has the fresh state's direction) and is itself within CORRUPTED_RELATIVE_L2 of the row
    (cosine ignores length: a reproduction of the right direction but the wrong length explains nothing)."""
    closer = (1 - repro_cosine) <= CLOSER_FACTOR * (1 - fresh_cosine)
    if fresh_relative_l2 is not None and fresh_relative_l2 > CORRUPTED_RELATIVE_L2:
        closer = closer or repro_relative_l2 <= CLOSER_FACTOR * fresh_relative_l2
    return repro_cosine >= REPRODUCE_COSINE and closer and repro_relative_l2 <= CORRUPTED_RELATIVE_L2


class RowSearch:
    """Bookkeeping for a hypothesis tested row by row (the first unreproduced row stops it)."""

    def __init__(self, evidence: Evidence):
        self.evidence = evidence
        self.tested: list[int] = []
        self.reproduced: list[int] = []
        self.repro_cosines: list[float] = []
        self.fresh_cosines: list[float] = []
        self.best: dict[int, int] = {}  # row -> index of its best candidate
        self.tied: dict[int, list[int]] = {}  # row -> candidates as good as the best (within TIE_COSINE)

    def score(self, row: int, candidates: torch.Tensor) -> bool:
        """Record the best of ``candidates`` (C, L, d) for ``row``; True when it reproduces the row."""
        stored_row = self.evidence.stored_row(row)
        scores = row_scores(stored_row, candidates)  # (C,)
        errors = row_relative_l2(stored_row, candidates)  # (C,)
        # Of the candidates as good by cosine, the nearest by length (pads' zero states counted in a
        # mean change a row's length, not its direction).
        near = scores >= scores.max() - TIE_COSINE  # (C,)
        best = int(torch.where(near, errors.nan_to_num(float("inf")), float("inf")).argmin())
        fresh_cosine = self.evidence.fresh_cosine(row)
        repro_cosine = float(scores[best])
        self.tested.append(row)
        self.repro_cosines.append(repro_cosine)
        self.fresh_cosines.append(fresh_cosine)
        self.best[row] = best
        tied = near & (errors <= errors[best] + TIE_RELATIVE_L2)
        self.tied[row] = tied.nonzero().flatten().tolist()
        repro_l2 = float(errors[best])
        ok = reproduces(repro_cosine, fresh_cosine, repro_l2, self.evidence.fresh_relative_l2(row))
        if ok:
            self.reproduced.append(row)
        return ok

    def skip(self, row: int) -> None:
        """A row the hypothesis cannot produce (e.g. the first text for packing)."""
        self.tested.append(row)
        self.fresh_cosines.append(self.evidence.fresh_cosine(row))

    def result(
        self, name: str, title: str, detail_ok: str, evidence: dict, cause_kind: CauseKind = "unknown"
    ) -> Hypothesis:
        if not self.tested:
            status: HypothesisStatus = "not applicable"
        elif len(self.reproduced) == len(self.tested):
            status = "reproduced"
        elif self.reproduced:
            status = "partial"
        else:
            status = "rejected"
        repro = min(self.repro_cosines) if self.repro_cosines else None
        fresh = min(self.fresh_cosines) if self.fresh_cosines else None
        if status == "reproduced":
            detail = detail_ok
        else:
            best = f"best reproduction cosine {repro:.6f}" if repro is not None else "no candidate to try"
            detail = (
                f"reproduces {len(self.reproduced)} of {len(self.tested)} tested rows ({best}; "
                f"needs >= {REPRODUCE_COSINE} and closer than the fresh state)"
            )
            if status == "partial":
                detail += "; " + detail_ok
        return Hypothesis(
            name, title, status, repro, fresh, list(self.tested), list(self.reproduced), detail, evidence, cause_kind
        )
