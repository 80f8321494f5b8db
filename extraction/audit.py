"""Audit stored hidden states: are they what the model computes, and if not, why not?

:func:`audit_states` re-extracts a sample of the texts one at a time (single-sample
extraction, the ground truth) and compares the stored rows with it:

* cosine similarity per checked row and stored layer, its minimum and mean, and the
  fraction of rows whose worst layer is below :data:`~extraction.compare.DRIFT_COSINE`;
* ``lm_head`` top-1 accuracy on the stored states against the model's own next-token
  prediction, beside the same on the fresh states. The stored last layer is taken as
  ``hidden_states[-1]`` is returned by transformers (after the final norm), so it goes
  through ``lm_head`` alone; a stored intermediate layer goes through the final norm
  and then ``lm_head`` (logit lens), and the report says so;
* a verdict, with the thresholds of :mod:`extraction.compare`: ``clean`` (what
  ``compare`` calls exact), ``drift`` or ``corrupted``.

When the verdict is not clean, forensics try to *reproduce* the stored vectors under
each known defect, on the worst few rows (:data:`FORENSIC_ROWS`), and name the best
match. A hypothesis reproduces a row when the cosine between the stored row and its
reproduction, at every stored layer, is at least :data:`REPRODUCE_COSINE`, and the
reproduction is clearly closer than the fresh state (``1 - cos_repro <=``
:data:`CLOSER_FACTOR` ``* (1 - cos_fresh)``). Hypotheses, each searched within fixed
bounds:

* ``right-naive``: right padding read at position -1. With a causal model the state at
  the last pad position depends only on the text and the padded length P, so one
  forward pass of the text followed by pads gives the reproduction for every P at once;
  the inferred P per row is then checked against batch sizes in input order and in
  length order (which batchings would produce exactly those padded lengths);
* ``left-naive``: left padding to a length P without position ids (the text's tokens sit
  at positions P-n..P-1); P searched over the texts' lengths. Skipped on models with
  relative positions, where it changes nothing;
* ``packed-naive``: the text concatenated after the texts before it in input order,
  without a mask; the pack start is searched up to :data:`MAX_PACK_LOOKBACK` texts back
  (a checked clean row is a pack start, which bounds the search), and pack sizes that
  give those starts are reported;
* ``dtype``: single-sample extraction with the model cast to bfloat16 / float16 (and
  whether every stored value is exactly representable in that dtype);
* ``pre-norm``: the stored last layer is the last block's output before the final norm;
* ``wrong-layer``: the stored layer(s) match other (neighbouring) hidden states.

If no hypothesis reproduces every tested row, the likely cause is ``"unknown"``: the
audit does not guess.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch

from . import metrics
from .compare import DRIFT_COSINE, EXACT_COSINE, _logit_tolerance, apply_lm_head, verdict_for
from .extract import extract_states
from .storage import StoredStates, validate_states
from .strategies import MAX_PACK_TOKENS, BatchLayout
from .texts import TokenizedTexts, tokenize_texts

if TYPE_CHECKING:
    from .models import LoadedModel

logger = logging.getLogger(__name__)

AuditVerdict = Literal["clean", "drift", "corrupted"]
#: ``likely_cause`` values besides None (clean): strategy names from ``compare`` and other defects.
CAUSES = ("right-naive", "left-naive", "packed-naive", "dtype", "pre-norm", "wrong-layer", "unknown")
HypothesisStatus = Literal["reproduced", "partial", "rejected", "not applicable"]

REPRODUCE_COSINE = 0.999  # a reproduction must reach this cosine with the stored row, at every stored layer
CLOSER_FACTOR = 0.5  # ... and be at least this much closer than the fresh state: 1-cos_r <= f * (1-cos_f)
FORENSIC_ROWS = 4  # worst rows tested per hypothesis (the first failure rejects it)
MAX_PACK_LOOKBACK = 8  # packed-naive: texts searched back for the start of a pack
REPRESENTABLE_FRACTION = 0.999  # stored values exactly representable in a reduced dtype: computed in it
TIE_COSINE = 1e-6  # candidates this close to the best one are equally good (e.g. every padded length of a 1-token text)
MAX_LENGTH_CANDIDATES = 64  # left-naive: padded lengths tried per row
MAX_BATCH_SEARCH = 1024  # batch sizes checked for consistency with inferred padded lengths
MAX_PACK_SEARCH = 256  # pack sizes checked for consistency with inferred pack starts
NORM_RATIO_TOLERANCE = 0.01  # a clean file whose median |stored|/|fresh| is further than this from 1 gets a note
CHUNK_TEXTS = 32  # texts re-extracted per step (bounds the logits held: CHUNK_TEXTS x vocabulary)
BATCH_ORDERS = ("input order", "ascending length", "descending length")

#: ``progress(stage, done, total)``: stage is ``"re-extracting"`` or ``"forensics"``.
AuditProgress = Callable[[str, int, int], None]

_VERDICT_NAMES = {"exact": "clean", "drift": "drift", "corrupted": "corrupted"}


# --- results ---------------------------------------------------------------------------


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

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "reproduction_cosine": _clean_float(self.reproduction_cosine),
            "fresh_cosine": _clean_float(self.fresh_cosine),
            "rows_tested": self.rows_tested,
            "rows_reproduced": self.rows_reproduced,
            "detail": self.detail,
            "evidence": self.evidence,
        }


@dataclass
class RowCheck:
    """Stored rows measured against fresh single-sample extraction (K rows, L stored layers)."""

    cosine: torch.Tensor  # (K, L) cos(stored, fresh) per row and stored layer
    norm_ratio: torch.Tensor  # (K, L) |stored| / |fresh|
    top1_stored: torch.Tensor  # (K,) bool: lm_head on the stored state gives the model's own top-1 token
    top1_fresh: torch.Tensor  # (K,) bool: the same on the fresh state (True for the last layer)
    top1_same: torch.Tensor  # (K,) bool: stored and fresh states give the same top-1 (near-tie counts)
    top1_stored_renormed: torch.Tensor | None  # (K,) bool: lm_head(final_norm(stored last)) gives the model's top-1

    @property
    def row_min_cosine(self) -> torch.Tensor:
        """(K,) worst stored layer per row (NaN counts as -1)."""
        return self.cosine.nan_to_num(-1.0).min(1).values

    @property
    def verdict(self) -> AuditVerdict:
        min_cosine = float(self.cosine.min()) if self.cosine.numel() else float("nan")
        return _VERDICT_NAMES[verdict_for(min_cosine, bool(self.top1_same.all()))]


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
    verdict: AuditVerdict
    likely_cause: str | None  # None when clean; otherwise one of CAUSES
    cause: str  # the finding in words
    hypotheses: list[Hypothesis] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_checked(self) -> int:
        return len(self.checked)

    @property
    def cosine(self) -> torch.Tensor:
        """(n_checked, L) cosine with fresh single-sample states."""
        return self.check.cosine

    @property
    def min_cosine(self) -> float:
        return float(self.cosine.min())

    @property
    def mean_cosine(self) -> float:
        return float(self.cosine.mean())

    @property
    def per_row_min_cosine(self) -> list[float]:
        return self.check.row_min_cosine.tolist()

    @property
    def per_layer_min_cosine(self) -> list[float]:
        return self.cosine.min(0).values.tolist()

    @property
    def fraction_corrupted(self) -> float:
        """Fraction of checked rows whose worst stored layer has cosine below DRIFT_COSINE."""
        return float((self.check.row_min_cosine < DRIFT_COSINE).float().mean())

    @property
    def lm_head_accuracy_stored(self) -> float:
        return float(self.check.top1_stored.float().mean())

    @property
    def lm_head_accuracy_fresh(self) -> float:
        return float(self.check.top1_fresh.float().mean())

    @property
    def best_hypothesis(self) -> Hypothesis | None:
        return next((h for h in self.hypotheses if h.name == self.likely_cause), None)

    def to_dict(self) -> dict:
        """JSON-ready: the keys the ``audit --json`` output promises, and more."""
        renormed = self.check.top1_stored_renormed
        return {
            "verdict": self.verdict,
            "likely_cause": self.likely_cause,
            "cause": self.cause,
            "min_cosine": _clean_float(self.min_cosine),
            "mean_cosine": _clean_float(self.mean_cosine),
            "fraction_corrupted": self.fraction_corrupted,
            "lm_head_accuracy_stored": self.lm_head_accuracy_stored,
            "lm_head_accuracy_fresh": self.lm_head_accuracy_fresh,
            "lm_head_accuracy_stored_after_final_norm": (
                float(renormed.float().mean()) if renormed is not None else None
            ),
            "n_checked": self.n_checked,
            "n_texts": self.n_texts,
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
                "clean_min_cosine": EXACT_COSINE,
                "drift_min_cosine": DRIFT_COSINE,
                "reproduce_min_cosine": REPRODUCE_COSINE,
            },
            "per_layer_min_cosine": [_clean_float(x) for x in self.per_layer_min_cosine],
            "per_layer_median_norm_ratio": self.check.norm_ratio.median(0).values.tolist(),
            "checked_rows": self.checked,
            "per_row_min_cosine": [_clean_float(x) for x in self.per_row_min_cosine],
            "hypotheses": [h.to_dict() for h in self.hypotheses],
            "notes": self.notes,
            "seconds": self.seconds,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per checked text: its worst cosine and the lm_head checks."""
        return pd.DataFrame(
            {
                "text": self.checked,
                "min_cosine": self.per_row_min_cosine,
                "corrupted": (self.check.row_min_cosine < DRIFT_COSINE).numpy(),
                "lm_head_top1_stored": self.check.top1_stored.numpy(),
                "lm_head_top1_fresh": self.check.top1_fresh.numpy(),
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


def _clean_float(x: float | None) -> float | None:
    return None if x is None or x != x else float(x)


# --- measuring stored rows -------------------------------------------------------------


def subset(tokenized: TokenizedTexts, indices: Sequence[int]) -> TokenizedTexts:
    """The texts at ``indices``, already tokenized."""
    return TokenizedTexts(
        [tokenized.texts[i] for i in indices], [tokenized.token_ids[i] for i in indices], [], tokenized.max_tokens
    )


def lm_head_note(layer: int, num_states: int) -> str:
    if layer == num_states - 1:
        return f"lm_head on the stored layer {layer} (the last, already after the final norm)"
    return f"final norm then lm_head on the stored layer {layer} (an intermediate layer: logit lens)"


def check_rows(loaded: LoadedModel, tokenized: TokenizedTexts, stored: torch.Tensor, layers: Sequence[int]) -> RowCheck:
    """Re-extract ``tokenized`` one text at a time and measure ``stored`` (K, L, d) against it.

    The lm_head checks use the last stored layer if it is the model's last hidden
    state (``lm_head(h)``), otherwise the highest stored layer (``lm_head(final_norm(h))``);
    "the model's own top-1" is the single-sample next-token prediction.
    """
    layers = list(layers)
    num_states = loaded.num_hidden_layers + 1
    fresh = extract_states(loaded, tokenized, "single", layers=layers, keep_logits=True)
    similarity = state_cosine(stored, fresh.hidden).float()  # (K, L)
    norm_ratio = (stored.double().norm(dim=-1) / fresh.hidden.double().norm(dim=-1).clamp(min=1e-12)).float()
    lens_position = int(np.argmax(layers))
    is_last = layers[lens_position] == num_states - 1
    atol, rtol = _logit_tolerance(loaded.dtype)
    stored_logits = apply_lm_head(loaded, stored[:, lens_position], final_norm=not is_last)  # (K, V)
    fresh_logits = apply_lm_head(loaded, fresh.hidden[:, lens_position], final_norm=not is_last)
    reference = fresh.logits  # (K, V): the model's own prediction
    renormed = None
    if is_last and loaded.final_norm is not None:
        renormed_logits = apply_lm_head(loaded, stored[:, lens_position], final_norm=True)
        renormed = metrics.top1_agrees(renormed_logits, reference, atol, rtol)
    return RowCheck(
        cosine=similarity,
        norm_ratio=norm_ratio,
        top1_stored=metrics.top1_agrees(stored_logits, reference, atol, rtol),
        top1_fresh=metrics.top1_agrees(fresh_logits, reference, atol, rtol),
        top1_same=metrics.top1_agrees(stored_logits, fresh_logits, atol, rtol),
        top1_stored_renormed=renormed,
    )


def state_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dimension, where two all-zero vectors count as
    identical (1.0): a pad token's embedding can be all zeros (``padding_idx``)."""
    out = metrics.cosine_similarity(a, b)
    both_zero = (a == 0).all(-1) & (b == 0).all(-1)
    return out.masked_fill(both_zero, 1.0)


def _concat_checks(checks: list[RowCheck]) -> RowCheck:
    renormed = [c.top1_stored_renormed for c in checks]
    return RowCheck(
        cosine=torch.cat([c.cosine for c in checks]),
        norm_ratio=torch.cat([c.norm_ratio for c in checks]),
        top1_stored=torch.cat([c.top1_stored for c in checks]),
        top1_fresh=torch.cat([c.top1_fresh for c in checks]),
        top1_same=torch.cat([c.top1_same for c in checks]),
        top1_stored_renormed=None if any(r is None for r in renormed) else torch.cat(renormed),
    )


def sample_indices(n: int, sample: int | None, seed: int = 0) -> list[int]:
    """All of ``range(n)`` when ``sample`` is None or at least n, else ``sample`` random indices, sorted."""
    if sample is not None and sample < 1:
        raise ValueError(f"sample must be at least 1, got {sample}")
    if sample is None or sample >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), sample))


# --- running custom layouts ------------------------------------------------------------


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def states_at(loaded: LoadedModel, layout: BatchLayout, layers: Sequence[int]) -> torch.Tensor:
    """Run one forward pass on ``layout``; the states at its read positions: (K, L, d) float32."""
    kwargs = {"logits_to_keep": 1} if _supports_logits_to_keep(loaded.model) else {}
    with torch.inference_mode():
        output = loaded.model(
            **layout.model_inputs(loaded.dtype, loaded.device), output_hidden_states=True, use_cache=False, **kwargs
        )
        rows, cols = layout.read_rows.to(loaded.device), layout.read_cols.to(loaded.device)
        picked = torch.stack([output.hidden_states[layer][rows, cols] for layer in layers], dim=1)  # (K, L, d)
    return picked.float().cpu()


def pre_norm_states(loaded: LoadedModel, tokenized: TokenizedTexts) -> torch.Tensor:
    """The last block's output before the final norm at each text's last token: (N, d).

    Single-sample, read by a forward pre-hook on the final norm. ``ValueError`` if the
    model has no final norm module.
    """
    norm = loaded.final_norm
    if norm is None:
        raise ValueError(f"{loaded.name} has no final norm module to read the pre-norm state from")
    captured: list[torch.Tensor] = []

    def hook(module, args):
        captured.append(args[0][0, -1].float().cpu())  # (d,): batch of one, last position

    handle = norm.register_forward_pre_hook(hook)
    try:
        kwargs = {"logits_to_keep": 1} if _supports_logits_to_keep(loaded.model) else {}
        with torch.inference_mode():
            for ids in tokenized.token_ids:
                loaded.model(input_ids=torch.tensor([ids], device=loaded.device), use_cache=False, **kwargs)
    finally:
        handle.remove()
    if len(captured) != len(tokenized):
        raise ValueError("the final norm was not called exactly once per forward pass; cannot read pre-norm states")
    return torch.stack(captured)


def _right_padded_layout(token_ids: Sequence[int], width: int, pad_id: int) -> BatchLayout:
    """One row: the text then pads up to ``width``; reads every position from the last real token on.

    Read k is position ``n - 1 + k``, i.e. position -1 of the text right-padded to length
    ``n + k`` (k = 0 is the last real token itself)."""
    n = len(token_ids)
    input_ids = torch.full((1, width), pad_id, dtype=torch.long)  # (1, W)
    input_ids[0, :n] = torch.tensor(token_ids)
    segment_ids = torch.full((1, width), -1, dtype=torch.long)
    segment_ids[0, :n] = 0
    cols = torch.arange(n - 1, width)
    return BatchLayout(input_ids, segment_ids, None, "padding", torch.zeros_like(cols), cols)


def _shifted_positions_layout(token_ids: Sequence[int], offsets: Sequence[int]) -> BatchLayout:
    """One row per offset k: the text at positions k..k+n-1, as after k left pads without position ids."""
    n, count = len(token_ids), len(offsets)
    input_ids = torch.tensor([list(token_ids)] * count, dtype=torch.long)  # (C, n)
    position_ids = torch.tensor(offsets)[:, None] + torch.arange(n)[None, :]  # (C, n)
    segment_ids = torch.zeros(count, n, dtype=torch.long)
    return BatchLayout(input_ids, segment_ids, position_ids, "none", torch.arange(count), torch.full((count,), n - 1))


def _concatenated_layout(packs: Sequence[Sequence[Sequence[int]]], pad_id: int) -> BatchLayout:
    """One row per pack: its texts concatenated, position ids restarting per text, no
    separation between texts (each sees the ones before it), right-padded to the longest
    pack; reads the last token of each pack."""
    rows = [[t for ids in pack for t in ids] for pack in packs]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (C, W)
    segment_ids = torch.full((len(rows), width), -1, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, pack in enumerate(packs):
        input_ids[r, : len(rows[r])] = torch.tensor(rows[r])
        segment_ids[r, : len(rows[r])] = 0  # one segment: the texts are not separated
        position_ids[r, : len(rows[r])] = torch.tensor([p for ids in pack for p in range(len(ids))])
    ends = torch.tensor([len(r) - 1 for r in rows])
    return BatchLayout(input_ids, segment_ids, position_ids, "padding", torch.arange(len(rows)), ends)


# --- consistency of inferred batch structure -------------------------------------------


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


# --- forensics -------------------------------------------------------------------------


@dataclass
class _Evidence:
    """What the hypotheses share."""

    loaded: LoadedModel
    tokenized: TokenizedTexts
    stored: torch.Tensor  # (N, L, d)
    layers: list[int]
    rows: list[int]  # forensic rows, worst first
    fresh: dict[int, torch.Tensor]  # row -> (S, d) fresh single-sample states at every hidden state
    clean_checked: list[int]  # checked rows that match (row min cosine >= EXACT and same top-1)
    affected_checked: list[int]  # checked rows that do not
    stored_dtype: str = "float32"  # the dtype in the file

    def fresh_at_layers(self, row: int) -> torch.Tensor:
        return self.fresh[row][self.layers]  # (L, d)


def _row_scores(stored_row: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(C,) min over layers of cos(stored_row (L, d), candidates (C, L, d)); NaN -> -1."""
    return state_cosine(candidates, stored_row.expand_as(candidates)).nan_to_num(-1.0).min(-1).values


def _reproduces(repro_cosine: float, fresh_cosine: float) -> bool:
    return repro_cosine >= REPRODUCE_COSINE and (1 - repro_cosine) <= CLOSER_FACTOR * (1 - fresh_cosine)


class _RowSearch:
    """Bookkeeping for a hypothesis tested row by row (the first unreproduced row stops it)."""

    def __init__(self, evidence: _Evidence):
        self.evidence = evidence
        self.tested: list[int] = []
        self.reproduced: list[int] = []
        self.repro_cosines: list[float] = []
        self.fresh_cosines: list[float] = []
        self.best: dict[int, int] = {}  # row -> index of its best candidate
        self.tied: dict[int, list[int]] = {}  # row -> candidates as good as the best (within TIE_COSINE)

    def score(self, row: int, candidates: torch.Tensor) -> bool:
        """Record the best of ``candidates`` (C, L, d) for ``row``; True when it reproduces the row."""
        stored_row = self.evidence.stored[row]
        scores = _row_scores(stored_row, candidates)  # (C,)
        best = int(scores.argmax())
        fresh_cosine = float(_row_scores(stored_row, self.evidence.fresh_at_layers(row)[None])[0])
        repro_cosine = float(scores[best])
        self.tested.append(row)
        self.repro_cosines.append(repro_cosine)
        self.fresh_cosines.append(fresh_cosine)
        self.best[row] = best
        self.tied[row] = (scores >= scores[best] - TIE_COSINE).nonzero().flatten().tolist()
        ok = _reproduces(repro_cosine, fresh_cosine)
        if ok:
            self.reproduced.append(row)
        return ok

    def skip(self, row: int) -> None:
        """A row the hypothesis cannot produce (e.g. the first text for packing)."""
        self.tested.append(row)
        fresh = float(_row_scores(self.evidence.stored[row], self.evidence.fresh_at_layers(row)[None])[0])
        self.fresh_cosines.append(fresh)

    def result(self, name: str, title: str, detail_ok: str, evidence: dict) -> Hypothesis:
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
        return Hypothesis(name, title, status, repro, fresh, list(self.tested), list(self.reproduced), detail, evidence)


def _choices_text(values: Sequence[int]) -> str:
    """``[19]`` -> ``"19"``; ``[2, 3, ..., 62]`` -> ``"any of 2..62"`` (they give the same state)."""
    values = sorted(values)
    if len(values) == 1:
        return str(values[0])
    if values == list(range(values[0], values[-1] + 1)):
        return f"any of {values[0]}..{values[-1]}"
    return "any of " + ", ".join(map(str, values[:5])) + (" ..." if len(values) > 5 else "")


def _choices_json(values: Sequence[int]) -> int | list[int]:
    return int(values[0]) if len(values) == 1 else [int(v) for v in sorted(values)]


def _rows_text(values: dict[int, list[int]], unit: str) -> str:
    items = [f"text {row + 1} -> {_choices_text(value)}{unit}" for row, value in list(values.items())[:4]]
    return ", ".join(items) + (" ..." if len(values) > 4 else "")


def _hypothesis_right_naive(ev: _Evidence) -> Hypothesis:
    title = "right padding read at position -1 (a pad token's state)"
    lengths = ev.tokenized.lengths
    width = max(lengths)
    search = _RowSearch(ev)
    inferred: dict[int, list[int]] = {}
    for row in ev.rows:
        ids = ev.tokenized.token_ids[row]
        if len(ids) >= width:  # the longest text is never padded
            search.skip(row)
            break
        layout = _right_padded_layout(ids, width, ev.loaded.pad_token_id)
        candidates = states_at(ev.loaded, layout, ev.layers)[1:]  # (C, L, d): padded lengths n+1..width
        if not search.score(row, candidates):
            break
        inferred[row] = [len(ids) + 1 + k for k in search.tied[row]]
    known = {**{r: lengths[r] for r in ev.clean_checked}, **inferred}
    longer = [r for r in ev.affected_checked if r not in inferred]
    batchings = consistent_batchings(lengths, known, longer) if inferred else {}
    lengths_set = set(lengths)
    evidence = {
        "padded_length_by_row": {str(r): _choices_json(p) for r, p in inferred.items()},
        "padded_length_is_a_text_length": {str(r): bool(set(p) & lengths_set) for r, p in inferred.items()},
        "consistent_batch_sizes": batchings,
    }
    detail = (
        f"the stored rows are pad-token states at padded lengths {_rows_text(inferred, ' tokens')} "
        f"(reproduction cosine {min(search.repro_cosines, default=float('nan')):.6f}); "
        + (describe_batchings(batchings) if inferred else "")
    )
    return search.result("right-naive", title, detail, evidence)


def _hypothesis_left_naive(ev: _Evidence) -> Hypothesis:
    title = "left padding without position ids (positions shifted by the pads)"
    if not ev.loaded.uses_absolute_positions:
        return Hypothesis(
            "left-naive",
            title,
            "not applicable",
            None,
            None,
            [],
            [],
            "this model's positions are relative (no absolute position embeddings): left padding changes nothing",
        )
    lengths = ev.tokenized.lengths
    distinct = sorted(set(lengths))
    search = _RowSearch(ev)
    inferred: dict[int, list[int]] = {}
    for row in ev.rows:
        ids = ev.tokenized.token_ids[row]
        padded = [p for p in distinct if p > len(ids)][:MAX_LENGTH_CANDIDATES]
        if not padded:
            search.skip(row)
            break
        layout = _shifted_positions_layout(ids, [p - len(ids) for p in padded])
        if not search.score(row, states_at(ev.loaded, layout, ev.layers)):
            break
        inferred[row] = [padded[k] for k in search.tied[row]]
    known = {**{r: lengths[r] for r in ev.clean_checked}, **inferred}
    longer = [r for r in ev.affected_checked if r not in inferred]
    batchings = consistent_batchings(lengths, known, longer) if inferred else {}
    evidence = {
        "padded_length_by_row": {str(r): _choices_json(p) for r, p in inferred.items()},
        "consistent_batch_sizes": batchings,
    }
    detail = (
        f"the stored rows are the texts shifted by left padding to {_rows_text(inferred, ' tokens')} "
        f"(reproduction cosine {min(search.repro_cosines, default=float('nan')):.6f}); "
        + (describe_batchings(batchings) if inferred else "")
    )
    return search.result("left-naive", title, detail, evidence)


def _hypothesis_packed_naive(ev: _Evidence) -> Hypothesis:
    title = "texts packed in one sequence without a mask (each attends to the texts before it)"
    token_ids, lengths = ev.tokenized.token_ids, ev.tokenized.lengths
    search = _RowSearch(ev)
    inferred: dict[int, list[int]] = {}
    clean = sorted(ev.clean_checked)
    for row in ev.rows:
        # A clean checked row c < row starts a pack, so row's pack starts at c or later.
        lowest = max([0, row - MAX_PACK_LOOKBACK] + [c for c in clean if c < row])
        starts = []
        for start in range(row - 1, lowest - 1, -1):
            if sum(lengths[start : row + 1]) > MAX_PACK_TOKENS:
                break
            starts.append(start)
        if not starts:
            search.skip(row)
            break
        layout = _concatenated_layout([token_ids[s : row + 1] for s in starts], ev.loaded.pad_token_id)
        if not search.score(row, states_at(ev.loaded, layout, ev.layers)):
            break
        inferred[row] = sorted(starts[k] for k in search.tied[row])
    known = {**{r: r for r in ev.clean_checked}, **inferred}
    not_start = [r for r in ev.affected_checked if r not in inferred]
    sizes = consistent_pack_sizes(len(lengths), known, not_start) if inferred else []
    evidence = {
        "pack_start_by_row": {str(r): _choices_json(s) for r, s in inferred.items()},
        "consistent_pack_sizes": sizes,
    }
    listed = ", ".join(str(s) for s in sizes[:6]) + (" ..." if len(sizes) > 6 else "")
    detail = (
        f"the stored rows are the texts read after the texts before them (pack start: "
        f"{_rows_text({r: [s + 1 for s in starts] for r, starts in inferred.items()}, '')}; "
        f"reproduction cosine {min(search.repro_cosines, default=float('nan')):.6f}); "
        + (f"consistent with packs of {listed} texts in input order" if sizes else "no fixed pack size fits")
    )
    return search.result("packed-naive", title, detail, evidence)


def _representable_fraction(values: torch.Tensor, dtype: torch.dtype) -> float:
    """Fraction of values unchanged by a round trip through ``dtype``."""
    return float((values.to(dtype).float() == values).float().mean())


def _hypothesis_dtype(ev: _Evidence) -> Hypothesis:
    title = "extracted in reduced precision (bfloat16 / float16)"
    candidates = [d for d in (torch.bfloat16, torch.float16) if d != ev.loaded.dtype]
    rows = ev.rows
    fresh_cosine = min(float(_row_scores(ev.stored[r], ev.fresh_at_layers(r)[None])[0]) for r in rows)
    if fresh_cosine < DRIFT_COSINE or not candidates:
        reason = (
            f"the stored rows differ too much from the fresh ones (cosine {fresh_cosine:.4f} < {DRIFT_COSINE}) "
            "for rounding alone"
            if candidates
            else "the model already runs in float16"
        )
        return Hypothesis("dtype", title, "not applicable", None, fresh_cosine, [], [], reason)
    sub = subset(ev.tokenized, rows)
    reproductions = []
    for dtype in candidates:
        reduced_model = copy.deepcopy(ev.loaded.model).to(dtype)
        reduced = dataclasses.replace(ev.loaded, model=reduced_model, dtype=dtype)
        reproductions.append(extract_states(reduced, sub, "single", layers=ev.layers, keep_logits=False).hidden)
        del reduced_model, reduced
    stored_rows = ev.stored[rows]  # (R, L, d)
    fresh_rows = torch.stack([ev.fresh_at_layers(r) for r in rows])  # (R, L, d)
    fresh_cosines = state_cosine(stored_rows, fresh_rows).nan_to_num(-1.0).min(-1).values  # (R,)
    names = [str(d).removeprefix("torch.") for d in candidates]
    representable = {name: _representable_fraction(stored_rows, d) for name, d in zip(names, candidates, strict=True)}
    outcomes = []
    for name, reproduction in zip(names, reproductions, strict=True):
        repro_cosines = state_cosine(stored_rows, reproduction).nan_to_num(-1.0).min(-1).values  # (R,)
        # Bits are evidence too: values computed in float32 are exactly representable in bfloat16 with
        # probability 2^-16 each, so when they all are, the closeness test is waived (batched and
        # single-sample reduced-precision kernels round differently, by as much as fp32 does).
        waived = representable[name] >= REPRESENTABLE_FRACTION
        ok = [
            float(r) >= REPRODUCE_COSINE and (waived or _reproduces(float(r), float(f)))
            for r, f in zip(repro_cosines, fresh_cosines, strict=True)
        ]
        logger.info(
            "dtype %s: reproduction cosines %s, representable %.4f", name, repro_cosines.tolist(), representable[name]
        )
        # With equal counts, a dtype whose bits the values carry wins, the coarser first (values computed in
        # bfloat16 are mostly representable in float16 too, not the other way round).
        coarseness = torch.finfo(getattr(torch, name)).eps
        outcomes.append((sum(ok), waived, coarseness, float(repro_cosines.min()), name, ok))
    count, waived, _, repro_cosine, name, ok = max(outcomes)
    reproduced = [row for row, good in zip(rows, ok, strict=True) if good]
    status: HypothesisStatus = "reproduced" if count == len(rows) else "partial" if count else "rejected"
    model_dtype = str(ev.loaded.dtype).removeprefix("torch.")
    fresh_cosine = float(fresh_cosines.min())
    detail = (
        f"single-sample extraction in {name} agrees with the stored rows to cosine {repro_cosine:.6f} (against "
        f"{fresh_cosine:.6f} for {model_dtype} states), and {100 * representable[name]:.1f}% of the stored values "
        f"are exactly representable in {name}"
        + (" (a float32 computation gives almost none)" if waived else "")
        + f"; the file stores {ev.stored_dtype}"
    )
    if status != "reproduced":
        detail = f"reproduces {count} of {len(rows)} tested rows; " + detail
    evidence = {"dtype": name if count else None, "representable_fraction": representable}
    return Hypothesis("dtype", title, status, repro_cosine, fresh_cosine, list(rows), reproduced, detail, evidence)


def _hypothesis_pre_norm(ev: _Evidence) -> Hypothesis:
    title = "the last layer was stored before the final norm"
    num_states = ev.loaded.num_hidden_layers + 1
    if num_states - 1 not in ev.layers or ev.loaded.final_norm is None:
        reason = "the model's last layer is not stored" if ev.loaded.final_norm else "the model has no final norm"
        return Hypothesis("pre-norm", title, "not applicable", None, None, [], [], reason)
    last = ev.layers.index(num_states - 1)
    pre = pre_norm_states(ev.loaded, subset(ev.tokenized, ev.rows))  # (R, d)
    search = _RowSearch(ev)
    for k, row in enumerate(ev.rows):
        reproduction = ev.fresh_at_layers(row).clone()  # (L, d)
        reproduction[last] = pre[k]
        search.score(row, reproduction[None])
    detail = (
        f"the stored layer {num_states - 1} equals the last block's output before the final norm (cosine "
        f"{min(search.repro_cosines, default=float('nan')):.6f}); hidden_states[-1] is already normed in "
        "transformers, so lm_head on these states needs the final norm first"
    )
    return search.result("pre-norm", title, detail, {"layer": num_states - 1})


def _hypothesis_wrong_layer(ev: _Evidence) -> Hypothesis:
    title = "the stored states belong to other layers than the ones named"
    num_states = ev.loaded.num_hidden_layers + 1
    if len(ev.layers) == 1:
        mappings = [[j] for j in range(num_states) if j != ev.layers[0]]
    else:
        mappings = []
        for shift in (-2, -1, 1, 2):
            shifted = [k + shift for k in ev.layers]
            if all(0 <= j < num_states for j in shifted):
                mappings.append(shifted)
    if not mappings:
        return Hypothesis("wrong-layer", title, "not applicable", None, None, [], [], "no other layer mapping fits")
    search = _RowSearch(ev)
    for row in ev.rows:
        candidates = torch.stack([ev.fresh[row][mapping] for mapping in mappings])  # (C, L, d)
        if not search.score(row, candidates):
            break
    votes = [search.best[r] for r in search.reproduced]
    mapping = mappings[max(set(votes), key=votes.count)] if votes else None
    named = ", ".join(str(k) for k in ev.layers[:6])
    actual = ", ".join(str(k) for k in mapping[:6]) if mapping else "?"
    evidence = {"named_layers": ev.layers, "matching_layers": mapping}
    detail = (
        f"the states named as layer(s) {named} match hidden_states {actual} "
        f"(cosine {min(search.repro_cosines, default=float('nan')):.6f}): an off-by-one in the layer index "
        "(hidden_states[0] is the embeddings, block k's output is hidden_states[k])"
    )
    return search.result("wrong-layer", title, detail, evidence)


HYPOTHESES: dict[str, Callable[[_Evidence], Hypothesis]] = {
    "right-naive": _hypothesis_right_naive,
    "left-naive": _hypothesis_left_naive,
    "packed-naive": _hypothesis_packed_naive,
    "dtype": _hypothesis_dtype,
    "pre-norm": _hypothesis_pre_norm,
    "wrong-layer": _hypothesis_wrong_layer,
}


def run_forensics(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    stored: torch.Tensor,
    layers: Sequence[int],
    checked: Sequence[int],
    check: RowCheck,
    forensic_rows: int = FORENSIC_ROWS,
    progress: AuditProgress | None = None,
    stored_dtype: str = "float32",
) -> list[Hypothesis]:
    """Try every hypothesis in :data:`HYPOTHESES` on the worst affected checked rows."""
    affected_mask = (check.row_min_cosine < EXACT_COSINE) | ~check.top1_same  # (K,)
    order = torch.argsort(check.row_min_cosine)
    worst = [checked[int(k)] for k in order if affected_mask[int(k)]][:forensic_rows]
    if not worst:
        return []
    affected = [checked[k] for k in range(len(checked)) if affected_mask[k]]
    clean = [checked[k] for k in range(len(checked)) if not affected_mask[k]]
    fresh_all = extract_states(loaded, subset(tokenized, worst), "single", keep_logits=False).hidden  # (R, S, d)
    evidence = _Evidence(
        loaded=loaded,
        tokenized=tokenized,
        stored=stored,
        layers=list(layers),
        rows=worst,
        fresh={row: fresh_all[k] for k, row in enumerate(worst)},
        clean_checked=clean,
        affected_checked=affected,
        stored_dtype=stored_dtype,
    )
    results = []
    for number, (name, hypothesis) in enumerate(HYPOTHESES.items()):
        if progress is not None:
            progress("forensics", number, len(HYPOTHESES))
        started = time.perf_counter()
        results.append(hypothesis(evidence))
        logger.info("hypothesis %s: %s (%.1f s)", name, results[-1].status, time.perf_counter() - started)
    if progress is not None:
        progress("forensics", len(HYPOTHESES), len(HYPOTHESES))
    return results


def likely_cause(hypotheses: Sequence[Hypothesis]) -> Hypothesis | None:
    """The reproduced hypothesis with the highest reproduction cosine, or None."""
    reproduced = [h for h in hypotheses if h.status == "reproduced"]
    return max(reproduced, key=lambda h: h.reproduction_cosine, default=None)


# --- the audit -------------------------------------------------------------------------


def _metadata_notes(stored: StoredStates, loaded: LoadedModel, texts: Sequence[str]) -> list[str]:
    notes = []
    meta = stored.metadata
    if meta.get("model") and meta["model"] != loaded.name:
        notes.append(f"the file says it was extracted with {meta['model']!r}; auditing with {loaded.name!r}")
    if meta.get("texts_sha256"):
        from .export import texts_sha256

        if meta["texts_sha256"] != texts_sha256(texts):
            notes.append("the texts differ from those the file was extracted from (texts_sha256 in its metadata)")
    return notes


def audit_states(
    loaded: LoadedModel,
    texts: Sequence[str] | TokenizedTexts,
    states: StoredStates | torch.Tensor,
    layer: int | None = None,
    layers: Sequence[int] | None = None,
    sample: int | None = None,
    seed: int = 0,
    forensics: bool = True,
    forensic_rows: int = FORENSIC_ROWS,
    progress: AuditProgress | None = None,
) -> AuditReport:
    """Audit stored states (``(N, d)`` for ``layer``, default the last, or ``(N, L, d)`` for
    ``layers``, default all or the layers in the file's metadata) against ``texts``.

    Re-extracts ``sample`` random texts (default all) one at a time; see the module
    docstring for the measurements, the verdict and the forensics.
    """
    started = time.perf_counter()
    if not isinstance(states, StoredStates):
        states = StoredStates(states.float(), "tensor", None, str(states.dtype).removeprefix("torch."))
    tokenized = (
        texts
        if isinstance(texts, TokenizedTexts)
        else tokenize_texts(loaded.tokenizer, list(texts), max_tokens=loaded.context_length)
    )
    num_states = loaded.num_hidden_layers + 1
    if layers is None and layer is None and states.tensor.dim() == 3:
        layers = states.stored_layers
    stored, resolved = validate_states(
        states.tensor, len(tokenized), loaded.hidden_size, num_states, layer=layer, layers=layers
    )
    notes = [n for n in (loaded.pad_token_note, tokenized.truncation_note) if n]
    notes += _metadata_notes(states, loaded, tokenized.texts)
    if loaded.is_random:
        notes.insert(0, f"{loaded.name} has random weights: its predictions mean nothing, only agreement does.")
    checked = sample_indices(len(tokenized), sample, seed)
    checks = []
    for start in range(0, len(checked), CHUNK_TEXTS):
        if progress is not None:
            progress("re-extracting", start, len(checked))
        chunk = checked[start : start + CHUNK_TEXTS]
        checks.append(check_rows(loaded, subset(tokenized, chunk), stored[chunk], resolved))
    if progress is not None:
        progress("re-extracting", len(checked), len(checked))
    check = _concat_checks(checks)
    verdict = check.verdict
    median_ratio = check.norm_ratio.median(0).values  # (L,)
    off_scale = (median_ratio - 1).abs() > NORM_RATIO_TOLERANCE
    if verdict == "clean" and off_scale.any():  # otherwise the lengths are one more symptom, not news
        worst_layer = int((median_ratio.log().abs()).argmax())
        notes.append(
            f"the stored vectors' lengths differ from the fresh ones (median |stored|/|fresh| = "
            f"{float(median_ratio[worst_layer]):.3f} at layer {resolved[worst_layer]}); cosine ignores length, so "
            "this does not change the verdict, but a probe sees it (e.g. states taken before an RMS final norm, or "
            "rescaled)"
        )
    lens_layer = max(resolved)
    hypotheses: list[Hypothesis] = []
    cause_name: str | None = None
    if verdict == "clean":
        cause = f"The stored states match single-sample extraction (min cosine {float(check.cosine.min()):.6f})."
    elif not forensics:
        cause_name = "unknown"
        cause = "Forensics were not run."
    else:
        hypotheses = run_forensics(
            loaded, tokenized, stored, resolved, checked, check, forensic_rows, progress, states.stored_dtype
        )
        best = likely_cause(hypotheses)
        if best is not None:
            cause_name = best.name
            cause = f"{best.title[0].upper()}{best.title[1:]}: {best.detail}."
        else:
            cause_name = "unknown"
            tried = [h for h in hypotheses if h.reproduction_cosine is not None]
            closest = max(tried, key=lambda h: h.reproduction_cosine, default=None)
            closest_text = ""
            if closest is not None:
                why = (
                    f"< {REPRODUCE_COSINE}"
                    if closest.reproduction_cosine < REPRODUCE_COSINE
                    else f"but no closer than the fresh states' {closest.fresh_cosine:.6f}"
                )
                closest_text = (
                    f" (closest: {closest.name}, reproduction cosine {closest.reproduction_cosine:.6f} {why})"
                )
            cause = f"No known defect reproduces the stored vectors{closest_text}."
    report = AuditReport(
        model=loaded.name,
        model_description=loaded.description,
        dtype=str(loaded.dtype).removeprefix("torch."),
        states_source=states.source,
        states_shape=tuple(states.tensor.shape),
        states_dtype=states.stored_dtype,
        layers=resolved,
        n_texts=len(tokenized),
        checked=checked,
        check=check,
        lm_head_layer=lens_layer,
        lm_head_note=lm_head_note(lens_layer, num_states),
        verdict=verdict,
        likely_cause=cause_name,
        cause=cause,
        hypotheses=hypotheses,
        notes=notes,
        seconds=time.perf_counter() - started,
    )
    logger.info("audit: %s, likely cause %s (%.1f s)", verdict, cause_name, report.seconds)
    return report


__all__ = [
    "CAUSES",
    "REPRODUCE_COSINE",
    "AuditReport",
    "Hypothesis",
    "RowCheck",
    "audit_states",
    "check_rows",
    "consistent_batchings",
    "consistent_pack_sizes",
    "pre_norm_states",
    "run_forensics",
]
