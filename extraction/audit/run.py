"""The audit itself: :func:`audit_states` reads the sampled rows of a store (:mod:`.inputs`,
:mod:`.sampling`), re-extracts their texts (with the layout of :mod:`.reference`), measures the
stored rows against them, gives the verdict and, when it is not exact, runs the forensics."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..storage.lazy_states import LazyStates, shard_bounds
from ..storage.stored_states import StoredStates
from ..storage.text_stream import TextSource
from ..verdicts import CauseKind
from .check import (
    check_rows,
    check_token_rows,
    checked_lm_head_note,
    concat_checks,
    subset,
    take_rows,
    token_rows,
)
from .forensics import FORENSIC_ROWS, likely_cause, run_forensics
from .inputs import (
    AuditInputs,
    AuditTexts,
    ScannedTexts,
    as_lazy,
    count_texts,
    needs_texts_hash,
    read_inputs,
    resolve_pooling,
    scan_texts,
    whole_inputs,
)
from .pattern import DifferencePattern, difference_pattern
from .reference import AuditReference, ReferenceChoice, choose_reference
from .report import REPRODUCE_COSINE, SAMPLING_ROUND, AuditProgress, AuditReport, Hypothesis, SampleRecord
from .row_check import RowCheck
from .sampling import FIRST_ROUND, RowSample, clopper_pearson, round_sizes

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

NORM_RATIO_TOLERANCE = 0.01  # an exact file whose median |stored|/|fresh| is further than this from 1 gets a note
CHUNK_TEXTS = 32  # texts re-extracted per step (bounds the logits held: CHUNK_TEXTS x vocabulary)
#: Forensics compare a row with every other row: they read the whole store, up to this many bytes (float32).
FORENSICS_MAX_BYTES = 2 << 30


def _unexplained_kind(check) -> CauseKind:
    """The cause kind when no hypothesis explains the rows: ``pad-state`` when some text has
    another row count than its tokens (positions kept that are not the text's: the measured
    counts say so), else ``unknown``."""
    return "pad-state" if not check.rows_match else "unknown"


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
    texts: AuditTexts | None,
    states: LazyStates | StoredStates | torch.Tensor,
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
    max_corrupted: float | None = None,
    lm_head: bool | None = None,
) -> AuditReport:
    """Audit stored states (``(N, d)`` for ``layer``, default the last, or ``(N, L, d)`` for
    ``layers``, default all or the layers in the file's metadata) against ``texts`` (a list,
    :class:`~extraction.texts.TokenizedTexts` or a streamed
    :class:`~extraction.storage.text_stream.TextSource`; None for a store that keeps its own token ids
    or texts: :mod:`.inputs`).

    ``states`` may be :class:`~extraction.storage.lazy_states.LazyStates`
    (:func:`~extraction.storage.lazy_states.open_states`): only the sampled rows are read, and only
    the sampled texts tokenized; the forensics, which compare a row with every other, read the whole
    store when it is at most :data:`FORENSICS_MAX_BYTES`, and are skipped with a note beyond.

    ``pooling`` (default: the file's metadata ``"pooling"``, else ``last``) is how the file
    pooled each text's states; the fresh states are pooled the same way. Under ``tokens`` the
    file is ``(R, d)`` or ``(R, L, d)`` with ``offsets`` (N + 1,), given here or read from the file
    (``StoredStates.offsets``); a text whose row count is not its token count is corrupted.

    Re-extracts ``sample`` random texts (default all; uniform and seeded, stratified by shard for a
    folder of shards: :mod:`.sampling`) with the layout ``reference`` picks
    (:mod:`.reference`: ``"auto"``, a batched layout verified exact against single-sample
    extraction on this model, else single; ``"single"``, one text a pass). With ``max_corrupted``
    it samples in rounds (the first of ``sample`` rows, default :data:`~.sampling.FIRST_ROUND`,
    then doubling) until the 95% interval's upper bound for the corrupted fraction of the store is
    below ``max_corrupted`` or a corrupted row is found. See the :mod:`extraction.audit` docstring
    for the measurements, the verdict and the forensics. ``lm_head``: run the lm_head top-1 checks
    (and so the whole pass); default only when the last hidden state is stored
    (:func:`~extraction.extract.wants_lm_head`), else the pass stops after the deepest stored layer.
    """
    started = time.perf_counter()
    states = as_lazy(states)
    plan = RowSample(sample if max_corrupted is None else sample or FIRST_ROUND, seed, _strata(states))
    if max_corrupted is not None and isinstance(texts, TextSource):
        texts = _scan_for_rounds(texts, states, plan, offsets, max_corrupted, progress)
    inputs = read_inputs(loaded, texts, states, plan, layer, layers, pooling, offsets, progress)
    sizes = [] if max_corrupted is None else round_sizes(inputs.n_texts, max_corrupted, first=len(inputs.checked))
    if len(sizes) > 1 and progress is not None:
        progress(SAMPLING_ROUND, 1, len(sizes))
    measured = _measure(loaded, inputs, reference, progress, lm_head=lm_head)
    rounds = 1
    for size in sizes[1:]:
        if bool(measured.check.corrupted.any()) or _upper(measured, inputs) < max_corrupted:
            break
        rounds += 1
        if progress is not None:
            progress(SAMPLING_ROUND, rounds, len(sizes))
        inputs = read_inputs(loaded, texts, states, plan.grown(size), layer, layers, pooling, offsets, progress)
        measured = _measure(loaded, inputs, reference, progress, measured, lm_head)
    scale_note = _scale_note(measured.check, inputs.layers)
    if scale_note is not None:
        inputs.notes.append(scale_note)
    if measured.check.verdict == "exact" or not forensics:
        explanation = _no_forensics(measured.check, forensics)
    elif inputs.states.whole is None and inputs.states.shape[0] * inputs.states.row_bytes > FORENSICS_MAX_BYTES:
        explanation = _too_big_for_forensics(inputs, measured)
    else:
        explanation = _explain(loaded, inputs, measured, forensic_rows, progress)
    record = SampleRecord(seed, plan.bounds is not None, max_corrupted, rounds, states.rows_read)
    report = _report(loaded, inputs, measured, explanation, record, time.perf_counter() - started)
    logger.info("audit: %s, likely cause %s (%.1f s)", report.verdict, report.likely_cause, report.seconds)
    return report


def _scan_for_rounds(
    texts: TextSource,
    states: LazyStates,
    plan: RowSample,
    offsets: torch.Tensor | None,
    max_corrupted: float,
    progress: AuditProgress | None,
) -> ScannedTexts:
    """The streamed texts file scanned once for the rows of the largest round ``max_corrupted`` may
    need (a larger sample of the same seed holds the smaller ones), so no round scans it again."""
    n = count_texts(texts, states, offsets if offsets is not None else states.offsets)
    first = min(plan.size or n, n)
    largest = plan.grown(max(first, round_sizes(n, max_corrupted, first=first)[-1]))
    return scan_texts(texts, largest.draw(n), progress, needs_texts_hash(states))


def _strata(states: LazyStates) -> tuple[int, ...] | None:
    bounds = shard_bounds(states)
    return tuple(bounds) if bounds is not None and len(bounds) > 2 else None


def _upper(measured: _Measured, inputs: AuditInputs) -> float:
    if len(measured.checked) >= inputs.n_texts:
        return float(measured.check.corrupted.float().mean())
    return clopper_pearson(int(measured.check.corrupted.sum()), len(measured.checked))[1]


def _measure(
    loaded: LoadedModel,
    inputs: AuditInputs,
    reference: ReferenceChoice,
    progress: AuditProgress | None,
    before: _Measured | None = None,
    lm_head: bool | None = None,
) -> _Measured:
    """Re-extract the checked texts in chunks and measure their stored rows against them; the
    rows ``before`` measured (an earlier round) are kept, not measured again."""
    checked, tokenized = inputs.checked, inputs.tokenized
    done = {} if before is None else {row: k for k, row in enumerate(before.checked)}
    todo = [k for k, row in enumerate(checked) if row not in done]  # positions in checked
    if progress is not None:
        progress("re-extracting", len(done), len(checked))
    fresh_layout = (
        before.reference
        if before is not None
        else choose_reference(loaded, subset(tokenized, todo), reference, inputs.pooling, inputs.layers, lm_head)
    )
    # Chunks in length order, so that a batched layout's batches there are the ones it plans for all of them.
    order = sorted(todo, key=lambda k: tokenized.lengths[k])
    checks = [] if before is None else [before.check]
    for start in range(0, len(order), CHUNK_TEXTS):
        if progress is not None:
            progress("re-extracting", len(done) + start, len(checked))
        chunk = order[start : start + CHUNK_TEXTS]
        chunk_texts = subset(tokenized, chunk)
        if inputs.offsets is None:
            checks.append(
                check_rows(
                    loaded,
                    chunk_texts,
                    inputs.stored[chunk],
                    inputs.layers,
                    inputs.pooling,
                    fresh_layout.layout,
                    lm_head,
                )
            )
        else:
            rows, chunk_offsets = token_rows(inputs.stored, inputs.offsets, chunk)
            checks.append(
                check_token_rows(loaded, chunk_texts, rows, chunk_offsets, inputs.layers, fresh_layout.layout)
            )
    if progress is not None:
        progress("re-extracting", len(checked), len(checked))
    # (K,) where each checked row's measurements are in the concatenation: earlier rounds first, then order.
    place = {row: k for row, k in done.items()}
    place.update({checked[k]: len(done) + j for j, k in enumerate(order)})
    back = torch.tensor([place[row] for row in checked], dtype=torch.long)
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


def _too_big_for_forensics(inputs: AuditInputs, measured: _Measured) -> _Explanation:
    size = inputs.states.shape[0] * inputs.states.row_bytes
    return _Explanation(
        f"Forensics were not run: they compare each row with every other row and read the whole store, "
        f"{size / 2**30:.1f} GiB as float32, more than the {FORENSICS_MAX_BYTES / 2**30:.0f} GiB they may hold; "
        f"audit one shard or a slice of the store to find the cause. {measured.differences.describe()}.",
        "unknown",
        _unexplained_kind(measured.check),
    )


def _explain(
    loaded: LoadedModel,
    inputs: AuditInputs,
    measured: _Measured,
    forensic_rows: int,
    progress: AuditProgress | None,
) -> _Explanation:
    """Run the forensics on a file that is not exact and name the likely cause (on the whole store)."""
    every_text, every_row = whole_inputs(loaded, inputs)
    hypotheses = run_forensics(
        loaded,
        every_text,
        every_row,
        inputs.layers,
        measured.checked,
        measured.check,
        forensic_rows,
        progress,
        stored_dtype=inputs.states.stored_dtype,
        pattern=measured.differences,
        pooling=inputs.pooling,
        offsets=inputs.store_offsets,
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
    loaded: LoadedModel,
    inputs: AuditInputs,
    measured: _Measured,
    explanation: _Explanation,
    sample: SampleRecord,
    seconds: float,
) -> AuditReport:
    num_states = loaded.num_hidden_layers + 1
    lens_layer = max(inputs.layers)
    return AuditReport(
        model=loaded.name,
        model_description=loaded.description,
        dtype=str(loaded.dtype).removeprefix("torch."),
        states_source=inputs.states.source,
        states_shape=tuple(inputs.states.shape),
        states_dtype=inputs.states.stored_dtype,
        layers=inputs.layers,
        n_texts=inputs.n_texts,
        checked=measured.checked,
        check=measured.check,
        lm_head_layer=lens_layer,
        lm_head_note=checked_lm_head_note(measured.check, inputs.layers, num_states, inputs.pooling),
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
        sample=sample,
        stored_ids=inputs.stored_ids,
    )


__all__ = ["FORENSICS_MAX_BYTES", "audit_states", "resolve_pooling"]
