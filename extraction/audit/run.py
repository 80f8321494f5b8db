"""The audit itself: :func:`audit_states` re-extracts a sample of texts (with the layout of
:mod:`.reference`), measures the stored rows against them, gives the verdict and, when it is not
exact, runs the forensics."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
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
from .pattern import difference_pattern
from .reference import ReferenceChoice, choose_reference
from .report import REPRODUCE_COSINE, AuditProgress, AuditReport, Hypothesis

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
    if not isinstance(states, StoredStates):
        states = StoredStates(states.float(), "tensor", None, str(states.dtype).removeprefix("torch."))
    pooling, pooling_note = resolve_pooling(states, pooling)
    tokenized = (
        texts
        if isinstance(texts, TokenizedTexts)
        else tokenize_texts(loaded.tokenizer, list(texts), max_tokens=loaded.context_length)
    )
    num_states = loaded.num_hidden_layers + 1
    if layers is None and layer is None and states.tensor.dim() == 3:
        layers = states.stored_layers
    row_offsets = None
    if pooling == "tokens":
        row_offsets = validate_offsets(
            offsets if offsets is not None else states.offsets, len(tokenized), states.tensor.shape[0]
        )
        if states.tensor.shape[0] == 0:
            raise ValueError("stored states have no rows")
    elif offsets is not None or states.offsets is not None:
        raise ValueError(
            f"the states come with row offsets (a tokens file) but are audited under pooling {pooling!r}; "
            "use pooling 'tokens'"
        )
    num_rows = len(tokenized) if row_offsets is None else states.tensor.shape[0]
    stored, resolved = validate_states(
        states.tensor, num_rows, loaded.hidden_size, num_states, layer=layer, layers=layers
    )
    notes = [n for n in (pooling_note, loaded.pad_token_note, tokenized.truncation_note) if n]
    notes += _metadata_notes(states, loaded, tokenized.texts)
    if loaded.is_random:
        notes.insert(0, f"{loaded.name} has random weights: its predictions mean nothing, only agreement does.")
    checked = sample_indices(len(tokenized), sample, seed)
    if progress is not None:
        progress("re-extracting", 0, len(checked))
    fresh_layout = choose_reference(loaded, subset(tokenized, checked), reference, pooling)
    # Chunks in length order, so that a batched layout's batches there are the ones it plans for all of them.
    order = sorted(range(len(checked)), key=lambda k: tokenized.lengths[checked[k]])
    checks = []
    for start in range(0, len(checked), CHUNK_TEXTS):
        if progress is not None:
            progress("re-extracting", start, len(checked))
        chunk = [checked[k] for k in order[start : start + CHUNK_TEXTS]]
        texts = subset(tokenized, chunk)
        if row_offsets is None:
            checks.append(check_rows(loaded, texts, stored[chunk], resolved, pooling, fresh_layout.layout))
        else:
            rows, chunk_offsets = token_rows(stored, row_offsets, chunk)
            checks.append(check_token_rows(loaded, texts, rows, chunk_offsets, resolved, fresh_layout.layout))
    if progress is not None:
        progress("re-extracting", len(checked), len(checked))
    back = torch.tensor(order, dtype=torch.long).argsort()  # (K,) length order -> the order of checked
    check = take_rows(concat_checks(checks), back)
    verdict = check.verdict
    differences = difference_pattern(check, checked, fresh_layout.layout)
    median_ratio = check.norm_ratio.median(0).values  # (L,)
    off_scale = (median_ratio - 1).abs() > NORM_RATIO_TOLERANCE
    if verdict == "exact" and off_scale.any():  # otherwise the lengths are one more symptom, not news
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
    cause_kind: CauseKind = "none"
    if verdict == "exact":
        cause = f"The stored states match single-sample extraction (min cosine {float(check.cosine.min()):.6f})."
    elif not forensics:
        cause_name = "unknown"
        cause_kind = _unexplained_kind(check)
        cause = "Forensics were not run."
    else:
        hypotheses = run_forensics(
            loaded,
            tokenized,
            stored,
            resolved,
            checked,
            check,
            forensic_rows,
            progress,
            stored_dtype=states.stored_dtype,
            pattern=differences,
            pooling=pooling,
            offsets=row_offsets,
        )
        best = likely_cause(hypotheses)
        if best is not None:
            cause_name = best.name
            cause_kind = best.cause_kind
            cause = f"{best.title[0].upper()}{best.title[1:]}: {best.detail}."
        else:
            cause_name = "unknown"
            cause_kind = _unexplained_kind(check)
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
            cause = f"No known defect reproduces the stored vectors{closest_text}; {differences.describe()}."
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
        lm_head_note=(
            lm_head_note(lens_layer, num_states)
            if pooling == "last"
            else f"no lm_head check under {pooling} pooling: lm_head predicts from a last token's state"
        ),
        verdict=verdict,
        likely_cause=cause_name,
        cause=cause,
        hypotheses=hypotheses,
        notes=notes,
        seconds=time.perf_counter() - started,
        differences=differences,
        pooling=pooling,
        cause_kind=cause_kind,
        reference=fresh_layout,
    )
    logger.info("audit: %s, likely cause %s (%.1f s)", verdict, cause_name, report.seconds)
    return report
