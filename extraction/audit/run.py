"""The audit itself: :func:`audit_states` re-extracts a sample of texts, measures the stored
rows against them, gives the verdict and, when it is not exact, runs the forensics."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..stored_states import StoredStates, validate_states
from ..texts import TokenizedTexts, texts_sha256, tokenize_texts
from .check import check_rows, concat_checks, lm_head_note, sample_indices, subset
from .forensics import FORENSIC_ROWS, likely_cause, run_forensics
from .pattern import difference_pattern
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

    Re-extracts ``sample`` random texts (default all) one at a time; see the
    :mod:`extraction.audit` docstring for the measurements, the verdict and the forensics.
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
    check = concat_checks(checks)
    verdict = check.verdict
    differences = difference_pattern(check, checked)
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
    if verdict == "exact":
        cause = f"The stored states match single-sample extraction (min cosine {float(check.cosine.min()):.6f})."
    elif not forensics:
        cause_name = "unknown"
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
        lm_head_note=lm_head_note(lens_layer, num_states),
        verdict=verdict,
        likely_cause=cause_name,
        cause=cause,
        hypotheses=hypotheses,
        notes=notes,
        seconds=time.perf_counter() - started,
        differences=differences,
    )
    logger.info("audit: %s, likely cause %s (%.1f s)", verdict, cause_name, report.seconds)
    return report
