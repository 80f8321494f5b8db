"""The audit itself: :func:`audit_states` re-extracts a sample of texts (with the layout of
:mod:`.reference`), measures the stored rows against them, gives the verdict and, when it is not
exact, runs the forensics."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..pooling import DEFAULT_POOLING, POOLINGS, Pooling, parse_pooling
from ..storage.stored_states import StoredStates, validate_offsets, validate_states
from ..texts import TokenizedTexts, texts_sha256, tokenize_texts
from ..verdicts import CauseKind
from .check import (
    check_rows,
    check_token_rows,
    concat_checks,
    lm_head_note,
    sample_indices,
    subset,
    take_rows,
    token_rows,
)
from .forensics import FORENSIC_ROWS, likely_cause, run_forensics
from .pattern import DifferencePattern, difference_pattern
from .reference import AuditReference, ReferenceChoice, choose_reference
from .report import REPRODUCE_COSINE, AuditProgress, AuditReport, Hypothesis
from .row_check import RowCheck

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

NORM_RATIO_TOLERANCE = 0.01  # an exact file whose median |stored|/|fresh| is further than this from 1 gets a note
CHUNK_TEXTS = 32  # texts re-extracted per step (bounds the logits held: CHUNK_TEXTS x vocabulary)


def _metadata_notes(stored: StoredStates, loaded: LoadedModel, texts: Sequence[str]) -> list[str]:
    notes = []
    meta = stored.metadata
    if meta.get("model") and meta["model"] != loaded.name:
        notes.append(f"the file says it was extracted with {meta['model']!r}; auditing with {loaded.name!r}")
    if meta.get("texts_sha256") and meta["texts_sha256"] != texts_sha256(texts):
        notes.append("the texts differ from those the file was extracted from (texts_sha256 in its metadata)")
    return notes


def _unexplained_kind(check) -> CauseKind:
    """The cause kind when no hypothesis explains the rows: ``pad-state`` when some text has
    another row count than its tokens (positions kept that are not the text's: the measured
    counts say so), else ``unknown``."""
    return "pad-state" if not check.rows_match else "unknown"


def resolve_pooling(stored: StoredStates, pooling: str | None) -> tuple[Pooling, str | None]:
    """The pooling to audit under: ``pooling`` if given, else the one the file records (its metadata
    ``"pooling"``, or ``tokens`` for a file with offsets),
    else :data:`~extraction.pooling.DEFAULT_POOLING`; and a one-line note when the two disagree."""
    recorded = stored.stored_pooling
    if recorded is not None and recorded not in POOLINGS:
        recorded = None
    if pooling is None:
        return parse_pooling(recorded or DEFAULT_POOLING), None
    chosen = parse_pooling(pooling)
    if recorded is not None and recorded != chosen:
        return chosen, f"the file's metadata says pooling {recorded!r}; auditing under {chosen!r} as asked"
    return chosen, None


@dataclass
class _Inputs:
    """What the steps of :func:`audit_states` share once the inputs are read and checked."""

    states: StoredStates  # as given (source, dtype and metadata for the report)
    tokenized: TokenizedTexts  # every text, tokenized
    stored: torch.Tensor  # (N, L, d), or (R, L, d) under tokens pooling
    layers: list[int]  # hidden_states index of each stored layer
    pooling: Pooling
    offsets: torch.Tensor | None  # (N + 1,) row offsets under tokens pooling, else None
    notes: list[str]


@dataclass
class _Measured:
    """The checked rows and what re-extracting them measured."""

    checked: list[int]  # text indices re-extracted (ascending)
    check: RowCheck
    reference: AuditReference
    differences: DifferencePattern


@dataclass
class _Explanation:
    """The verdict's cause: the hypotheses tried and the one picked."""

    cause: str
    name: str | None = None
    kind: CauseKind = "none"
    hypotheses: list[Hypothesis] = field(default_factory=list)


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
    pooling: str | None = None,
    offsets: torch.Tensor | None = None,
    reference: ReferenceChoice = "auto",
) -> AuditReport:
    """Audit stored states (``(N, d)`` for ``layer``, default the last, or ``(N, L, d)`` for
    ``layers``, default all or the layers in the file's metadata) against ``texts``.

    ``pooling`` (default: the file's metadata ``"pooling"``, else ``last``) is how the file
    pooled each text's states; the fresh states are pooled the same way. Under ``tokens`` the
    file is ``(R, d)`` or ``(R, L, d)`` with ``offsets`` (N + 1,), given here or read from the file
    (``StoredStates.offsets``); a text whose row count is not its token count is corrupted.

    Re-extracts ``sample`` random texts (default all) with the layout ``reference`` picks
    (:mod:`.reference`: ``"auto"``, a batched layout verified exact against single-sample
    extraction on this model, else single; ``"single"``, one text a pass); see the
    :mod:`extraction.audit` docstring for the measurements, the verdict and the forensics.
    """
    started = time.perf_counter()
    inputs = _read_inputs(loaded, texts, states, layer, layers, pooling, offsets)
    measured = _measure(loaded, inputs, sample_indices(len(inputs.tokenized), sample, seed), reference, progress)
    scale_note = _scale_note(measured.check, inputs.layers)
    if scale_note is not None:
        inputs.notes.append(scale_note)
    if measured.check.verdict == "exact" or not forensics:
        explanation = _no_forensics(measured.check, forensics)
    else:
        explanation = _explain(loaded, inputs, measured, forensic_rows, progress)
    report = _report(loaded, inputs, measured, explanation, time.perf_counter() - started)
    logger.info("audit: %s, likely cause %s (%.1f s)", report.verdict, report.likely_cause, report.seconds)
    return report


def _read_inputs(
    loaded: LoadedModel,
    texts: Sequence[str] | TokenizedTexts,
    states: StoredStates | torch.Tensor,
    layer: int | None,
    layers: Sequence[int] | None,
    pooling: str | None,
    offsets: torch.Tensor | None,
) -> _Inputs:
    """The texts tokenized, the stored states checked against them and the model, and the notes so far."""
    if not isinstance(states, StoredStates):
        states = StoredStates(states.float(), "tensor", None, str(states.dtype).removeprefix("torch."))
    chosen, pooling_note = resolve_pooling(states, pooling)
    tokenized = (
        texts
        if isinstance(texts, TokenizedTexts)
        else tokenize_texts(loaded.tokenizer, list(texts), max_tokens=loaded.context_length)
    )
    num_states = loaded.num_hidden_layers + 1
    if layers is None and layer is None and states.tensor.dim() == 3:
        layers = states.stored_layers
    row_offsets = _row_offsets(states, chosen, offsets, len(tokenized))
    num_rows = len(tokenized) if row_offsets is None else states.tensor.shape[0]
    stored, resolved = validate_states(
        states.tensor, num_rows, loaded.hidden_size, num_states, layer=layer, layers=layers
    )
    notes = [n for n in (pooling_note, loaded.pad_token_note, tokenized.truncation_note) if n]
    notes += _metadata_notes(states, loaded, tokenized.texts)
    if loaded.is_random:
        notes.insert(0, f"{loaded.name} has random weights: its predictions mean nothing, only agreement does.")
    return _Inputs(states, tokenized, stored, resolved, chosen, row_offsets, notes)


def _row_offsets(
    states: StoredStates, pooling: Pooling, offsets: torch.Tensor | None, num_texts: int
) -> torch.Tensor | None:
    """The checked row offsets of a ``tokens`` file (given, else the file's), None under another pooling;
    ``ValueError`` for offsets given with another pooling or a tokens file without rows."""
    if pooling == "tokens":
        given = offsets if offsets is not None else states.offsets
        row_offsets = validate_offsets(given, num_texts, states.tensor.shape[0])
        if states.tensor.shape[0] == 0:
            raise ValueError("stored states have no rows")
        return row_offsets
    if offsets is not None or states.offsets is not None:
        raise ValueError(
            f"the states come with row offsets (a tokens file) but are audited under pooling {pooling!r}; "
            "use pooling 'tokens'"
        )
    return None


def _measure(
    loaded: LoadedModel,
    inputs: _Inputs,
    checked: list[int],
    reference: ReferenceChoice,
    progress: AuditProgress | None,
) -> _Measured:
    """Re-extract the ``checked`` texts in chunks and measure their stored rows against them."""
    tokenized = inputs.tokenized
    if progress is not None:
        progress("re-extracting", 0, len(checked))
    fresh_layout = choose_reference(loaded, subset(tokenized, checked), reference, inputs.pooling)
    # Chunks in length order, so that a batched layout's batches there are the ones it plans for all of them.
    order = sorted(range(len(checked)), key=lambda k: tokenized.lengths[checked[k]])
    checks = []
    for start in range(0, len(checked), CHUNK_TEXTS):
        if progress is not None:
            progress("re-extracting", start, len(checked))
        chunk = [checked[k] for k in order[start : start + CHUNK_TEXTS]]
        chunk_texts = subset(tokenized, chunk)
        if inputs.offsets is None:
            checks.append(
                check_rows(
                    loaded, chunk_texts, inputs.stored[chunk], inputs.layers, inputs.pooling, fresh_layout.layout
                )
            )
        else:
            rows, chunk_offsets = token_rows(inputs.stored, inputs.offsets, chunk)
            checks.append(
                check_token_rows(loaded, chunk_texts, rows, chunk_offsets, inputs.layers, fresh_layout.layout)
            )
    if progress is not None:
        progress("re-extracting", len(checked), len(checked))
    back = torch.tensor(order, dtype=torch.long).argsort()  # (K,) length order -> the order of checked
    check = take_rows(concat_checks(checks), back)
    return _Measured(checked, check, fresh_layout, difference_pattern(check, checked, fresh_layout.layout))


def _scale_note(check: RowCheck, layers: list[int]) -> str | None:
    """A note when an exact file's vectors have another length than the fresh ones (a probe sees it)."""
    median_ratio = check.norm_ratio.median(0).values  # (L,)
    off_scale = (median_ratio - 1).abs() > NORM_RATIO_TOLERANCE
    if check.verdict != "exact" or not off_scale.any():  # otherwise the lengths are one more symptom, not news
        return None
    worst_layer = int((median_ratio.log().abs()).argmax())
    return (
        f"the stored vectors' lengths differ from the fresh ones (median |stored|/|fresh| = "
        f"{float(median_ratio[worst_layer]):.3f} at layer {layers[worst_layer]}); cosine ignores length, so "
        "this does not change the verdict, but a probe sees it (e.g. states taken before an RMS final norm, or "
        "rescaled)"
    )


def _no_forensics(check: RowCheck, forensics: bool) -> _Explanation:
    """The cause of an exact file, or of one whose forensics were not asked for."""
    if check.verdict == "exact":
        return _Explanation(
            f"The stored states match single-sample extraction (min cosine {float(check.cosine.min()):.6f})."
        )
    return _Explanation("Forensics were not run.", "unknown", _unexplained_kind(check))


def _explain(
    loaded: LoadedModel,
    inputs: _Inputs,
    measured: _Measured,
    forensic_rows: int,
    progress: AuditProgress | None,
) -> _Explanation:
    """Run the forensics on a file that is not exact and name the likely cause."""
    hypotheses = run_forensics(
        loaded,
        inputs.tokenized,
        inputs.stored,
        inputs.layers,
        measured.checked,
        measured.check,
        forensic_rows,
        progress,
        stored_dtype=inputs.states.stored_dtype,
        pattern=measured.differences,
        pooling=inputs.pooling,
        offsets=inputs.offsets,
    )
    best = likely_cause(hypotheses)
    if best is not None:
        return _Explanation(
            f"{best.title[0].upper()}{best.title[1:]}: {best.detail}.", best.name, best.cause_kind, hypotheses
        )
    tried = [h for h in hypotheses if h.reproduction_cosine is not None]
    closest = max(tried, key=lambda h: h.reproduction_cosine, default=None)
    closest_text = ""
    if closest is not None:
        why = (
            f"< {REPRODUCE_COSINE}"
            if closest.reproduction_cosine < REPRODUCE_COSINE
            else f"but no closer than the fresh states' {closest.fresh_cosine:.6f}"
        )
        closest_text = f" (closest: {closest.name}, reproduction cosine {closest.reproduction_cosine:.6f} {why})"
    cause = f"No known defect reproduces the stored vectors{closest_text}; {measured.differences.describe()}."
    return _Explanation(cause, "unknown", _unexplained_kind(measured.check), hypotheses)


def _report(
    loaded: LoadedModel, inputs: _Inputs, measured: _Measured, explanation: _Explanation, seconds: float
) -> AuditReport:
    num_states = loaded.num_hidden_layers + 1
    lens_layer = max(inputs.layers)
    return AuditReport(
        model=loaded.name,
        model_description=loaded.description,
        dtype=str(loaded.dtype).removeprefix("torch."),
        states_source=inputs.states.source,
        states_shape=tuple(inputs.states.tensor.shape),
        states_dtype=inputs.states.stored_dtype,
        layers=inputs.layers,
        n_texts=len(inputs.tokenized),
        checked=measured.checked,
        check=measured.check,
        lm_head_layer=lens_layer,
        lm_head_note=(
            lm_head_note(lens_layer, num_states)
            if inputs.pooling == "last"
            else f"no lm_head check under {inputs.pooling} pooling: lm_head predicts from a last token's state"
        ),
        verdict=measured.check.verdict,
        likely_cause=explanation.name,
        cause=explanation.cause,
        hypotheses=explanation.hypotheses,
        notes=inputs.notes,
        seconds=seconds,
        differences=measured.differences,
        pooling=inputs.pooling,
        cause_kind=explanation.kind,
        reference=measured.reference,
    )
