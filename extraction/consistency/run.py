""":func:`self_check`: ``extract_fn`` batched against itself one text at a time, the noise floor,
the verdict and, when it is not exact, the cause from behaviour."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from ..audit.check import sample_indices
from ..audit.pattern import difference_pattern
from ..audit.report import AuditProgress, Hypothesis
from ..pooling import parse_pooling
from ..verdicts import Verdict
from .calls import ExtractFn, FunctionCalls
from .floor import FLOOR_COPIES, NoiseFloor, measure_floor, reduced_precision
from .measure import Distance, distance, row_check
from .probes import PROBE_CALLS, neighbour_hypotheses, neighbour_probe, other_texts_rows, pad_read, rows_hypothesis
from .report import NO_MODEL, SELF_CAUSES, SelfCheckReport

logger = logging.getLogger(__name__)


def _lengths(texts: Sequence[str], tokenizer) -> list[int]:
    """Token counts with ``tokenizer``, else character counts (what orders texts by length)."""
    if tokenizer is None:
        return [len(text) for text in texts]
    return [len(ids) for ids in tokenizer(list(texts))["input_ids"]]


def _verdict(distances: list[Distance], floor: NoiseFloor, base: Verdict) -> Verdict:
    """The audit's verdict (``base``, absolute thresholds), kept ``exact`` only where every row is
    within the floor's tolerance; a function that does not repeat itself is corrupted."""
    if not floor.repeatable:
        return "corrupted"
    if base == "exact" and any(d.beyond(floor.tolerance) for d in distances):
        return "drift"
    return base


def _rounding(floor: NoiseFloor, distances: list[Distance], worst: Distance) -> tuple[str, str]:
    within = all(not d.beyond(floor.tolerance) for d in distances)
    size = f"min cosine {worst.min_cosine:.6f}, max relative L2 {worst.max_relative_l2:.2g}"
    if floor.reduced_precision:
        return "rounding", (
            f"Reduced-precision ({floor.reduced_precision}) rounding: batched rows differ from one text at a time by "
            f"{size}, {'within' if within else 'beyond'} the function's own floor, and no probe finds a structure "
            "(no padding, neighbour or order dependence beyond drift); batched kernels round otherwise."
        )
    if within:
        return "kernels", (
            f"Float32 rounding of the batched kernels ({size}), within the function's own floor: the function "
            "differs from itself by as much."
        )
    return "unknown", (
        f"Batched rows differ from one text at a time ({size}), beyond the function's own floor "
        f"({floor.tolerance:.2g}) yet within drift, and in float32: not rounding, and no probe finds padding, "
        "neighbour or order dependence."
    )


def self_check(
    extract_fn: ExtractFn,
    texts: Sequence[str],
    layer: int = -1,
    pooling: str = "last",
    layers: Sequence[int] | None = None,
    *,
    tokenizer=None,
    sample: int | None = None,
    seed: int = 0,
    forensics: bool = True,
    progress: AuditProgress | None = None,
) -> SelfCheckReport:
    """Check ``extract_fn`` against itself: ``extract_fn(texts)`` (the pipeline as it runs) against
    ``extract_fn([text])`` for each checked text (the ground truth), with no model.

    Returns and options as :func:`~extraction.check_extractor.check_extractor`; ``layer``/``layers``
    only label the returned layers. ``tokenizer`` (optional) orders texts by tokens and names pad
    reads exactly. Calls: 1 + K (the K checked texts, ``sample`` of them, default all) + 2 (the noise
    floor: the longest checked text alone again, and :data:`~.floor.FLOOR_COPIES` copies of it), and
    when the verdict is not exact at most :data:`~.probes.PROBE_CALLS` more (two or three of two
    texts, one of all the texts in reverse order, one of one text): at most K + 8. The report lists them.
    """
    started = time.perf_counter()
    pooling = parse_pooling(pooling)
    texts = _checked_texts(texts)
    layers = None if layers is None else [int(index) for index in layers]
    calls = FunctionCalls(extract_fn, pooling, layers)
    tested = calls(texts, f"all {len(texts)} texts in one call (the pipeline as it runs)")
    checked = sample_indices(len(texts), sample, seed)
    truths = _texts_alone(calls, texts, checked, progress)
    distances = [distance(tested.blocks[i], truths[i]) for i in checked]
    check = row_check(distances, tokens=pooling == "tokens")
    lengths = _lengths(texts, tokenizer)
    longest = max(checked, key=lambda i: lengths[i])
    floor = measure_floor(calls, texts, longest, truths[longest], reduced_precision(tested.tensor, tested.dtype))
    verdict = _verdict(distances, floor, check.verdict)
    worst = max(distances, key=lambda d: (d.rows_differ, d.max_relative_l2))
    likely, cause, hypotheses = _explanation(
        calls, texts, tokenizer, pooling, checked, tested, truths, distances, floor, verdict, worst, forensics, progress
    )
    report = SelfCheckReport(
        model="none",
        model_description=NO_MODEL,
        dtype=tested.dtype,
        states_source=f"extract_fn {calls.name}",
        states_shape=tested.shape,
        states_dtype=tested.dtype,
        layers=layers or ([layer] if tested.tensor.shape[1] == 1 else list(range(tested.tensor.shape[1]))),
        n_texts=len(texts),
        checked=checked,
        check=check,
        lm_head_layer=-1,
        lm_head_note="no lm_head check: there is no model",
        verdict=verdict,
        likely_cause=likely,
        cause=cause,
        hypotheses=hypotheses,
        notes=_notes(calls, texts, checked, floor),
        seconds=time.perf_counter() - started,
        differences=difference_pattern(check, checked),
        pooling=pooling,
        cause_kind="none" if likely is None else SELF_CAUSES[likely],  # type: ignore[arg-type]
        noise_floor=floor,
        calls=list(calls.made),
    )
    logger.info("self-check: %s, likely cause %s, %d calls (%.1f s)", verdict, likely, len(calls.made), report.seconds)
    return report


def _checked_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    if len(texts) < 2 or not all(isinstance(text, str) and text for text in texts):
        raise ValueError("the self-consistency check needs at least 2 texts, each a non-empty string")
    return texts


def _texts_alone(calls: FunctionCalls, texts: list[str], checked: list[int], progress) -> dict[int, torch.Tensor]:
    """The ground truth: each checked text's block from a call of that text alone."""
    truths = {}
    for done, index in enumerate(checked):
        if progress is not None:
            progress("re-extracting", done, len(checked))
        truths[index] = calls([texts[index]], f"text {index + 1} alone").blocks[0]
    if progress is not None:
        progress("re-extracting", len(checked), len(checked))
    return truths


def _explanation(
    calls, texts, tokenizer, pooling, checked, tested, truths, distances, floor, verdict, worst, forensics, progress
) -> tuple[str | None, str, list[Hypothesis]]:
    """``(likely cause, the sentence, hypotheses)`` for the verdict: the probes run only when it
    is not exact, the function repeats itself and ``forensics`` is on."""
    if verdict == "exact":
        sentence = f"Batched rows match one text at a time (min cosine {worst.min_cosine:.6f})"
        return None, f"{sentence}, within the {floor.describe()}.", []
    if not floor.repeatable:
        sentence = f"The function does not repeat itself: text {floor.text + 1} alone twice differs beyond drift"
        return (
            "not-repeatable",
            (
                f"{sentence} (min cosine {floor.repeat.min_cosine:.4f}); dropout left on or sampling? "
                "Nothing else can be judged."
            ),
            [],
        )
    if not forensics:
        return "unknown", "The probes were not run.", []
    if progress is not None:
        progress("forensics", 0, PROBE_CALLS)
    likely, cause, hypotheses = _cause(calls, texts, tokenizer, pooling, checked, tested, truths, distances, floor)
    if likely is None:
        likely, cause = _rounding(floor, distances, worst) if verdict == "drift" else ("unknown", cause)
    if progress is not None:
        progress("forensics", PROBE_CALLS, PROBE_CALLS)
    return likely, cause, hypotheses


def _notes(calls: FunctionCalls, texts: list[str], checked: list[int], floor: NoiseFloor) -> list[str]:
    probes = len(calls.made) - 3 - len(checked)
    return [
        f"{floor.describe()}.",
        f"{len(calls.made)} calls of extract_fn: 1 of all {len(texts)} texts, {len(checked)} of one text alone, "
        f"2 for the noise floor, {probes} probe{'' if probes == 1 else 's'} (the report's calls list them).",
    ]


def _cause(calls, texts, tokenizer, pooling, checked, tested, truths, distances, floor):
    """``(likely cause or None, sentence, hypotheses)`` from the probes (:mod:`.probes`)."""
    reduced = floor.reduced_precision is not None

    def differs(d: Distance) -> bool:  # rounding reaches drift in reduced precision, not in float32
        return d.corrupted or (not reduced and d.beyond(floor.tolerance))

    flagged = [i for i, d in zip(checked, distances, strict=True) if differs(d)]
    flagged.sort(key=lambda i: -distances[checked.index(i)].max_relative_l2)
    sound = [i for i, d in zip(checked, distances, strict=True) if not d.corrupted]
    hypotheses: list[Hypothesis] = []
    found = other_texts_rows(tested.blocks, truths, texts, flagged)
    if flagged and len(found) * 2 > min(len(flagged), 8):
        rows = rows_hypothesis(found, flagged[:8], sound, calls, texts, tested.blocks)
        return rows.name, f"{rows.title[0].upper()}{rows.title[1:]}: {rows.detail}.", [rows]
    copies = floor.copies_beyond_drift
    lengths = _lengths(texts, tokenizer)
    candidates = [i for i in flagged if any(lengths[j] > lengths[i] for j in checked)]
    # Worst first, but a text with a shorter one beside it first of all: the third probe needs one.
    candidates.sort(key=lambda i: not any(lengths[j] < lengths[i] for j in checked))
    if candidates:
        s = candidates[0]
        longer = max(checked, key=lambda i: lengths[i])
        shorter_ones = [i for i in checked if lengths[i] < lengths[s]]
        shorter = min(shorter_ones, key=lambda i: lengths[i]) if shorter_ones else None
        probe = neighbour_probe(calls, texts, s, longer, shorter, truths[s])
        hypotheses = neighbour_hypotheses(probe, differs)
        padding, packing = hypotheses
        if packing.status == "reproduced" or (copies and padding.status != "reproduced"):
            extra = (
                f"; {len(copies)} of {FLOOR_COPIES} copies of one text in one call differ from it alone"
                if copies
                else ""
            )
            return "packing", f"Texts attend to each other: {packing.detail}{extra}.", hypotheses
        if padding.status == "reproduced":
            exact = pad_read(calls, texts, probe, tokenizer, pooling) if tokenizer is not None else None
            how = (
                f"; {exact}"
                if exact
                else (
                    "; a pad position read or pads pooled ("
                    + (
                        "give tokenizer= to name a pad read"
                        if tokenizer is None
                        else "the pads were masked: the text followed by unmasked pads does not reproduce it"
                    )
                    + "), or with learned absolute positions, left padding without position ids"
                )
            )
            if exact:
                padding.evidence["pad_read"] = exact
            return "padding", f"The state depends on the batch's longest text: {padding.detail}{how}.", hypotheses
    if copies:
        return (
            "packing",
            (
                f"Texts attend to each other: {len(copies)} of {FLOOR_COPIES} copies of text {floor.text + 1} in one "
                "call differ from it alone beyond drift (no padding there: every copy has the same length)."
            ),
            hypotheses,
        )
    sentence = (
        f"{len(flagged)} of {len(checked)} batched rows differ from one text at a time and no probe explains it "
        "(no row holds another text's state; the two-text probes find no padding or neighbour dependence)."
    )
    if pooling == "tokens" and any(d.rows_differ for d in distances):
        return (
            "padding",
            sentence.replace("no probe explains it", "their row counts are not their counts alone"),
            hypotheses,
        )
    return None, sentence, hypotheses
