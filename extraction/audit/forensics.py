"""Forensics: try each known defect as an explanation of stored vectors that are not exact.

Each hypothesis reproduces the stored rows under one defect (see :mod:`extraction.audit`
for the list), within fixed bounds, on the worst few rows; :func:`run_forensics` runs
them all and :func:`likely_cause` picks the reproduced one, if any. ``dtype`` and
``kernels`` live in :mod:`.precision`, ``wrong-layer`` in :mod:`.layers`.

Every reproduction is pooled the way the file was (``last``, ``mean`` or ``tokens``): the
layouts of :mod:`.reproduce` say which positions each candidate pools (``pool_ids``) and
:mod:`extraction.pooling` pools them, as extraction does. Under ``mean``, ``right-naive`` is
the mean over every column of a row right-padded to P (pads counted, ``hidden.mean(1)``),
``left-naive`` the mean of the text's tokens after left pads (positions shifted, pads masked), ``packed-naive`` the mean
of the text's segment read after the texts before it; under ``tokens``, ``right-naive`` keeps
every column of the padded row as rows (P is the stored row count), the other padding
hypotheses keep the text's tokens. ``dtype``, ``pre-norm`` and ``wrong-layer`` are tried
under ``last`` and ``mean``. A hypothesis's ``cause_kind`` comes from the layout it found
(pads read or pooled, positions shifted, other texts seen), never from its name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from ..comparison.inputs_read import inputs_read
from ..extract import extract_states
from ..pooling import DEFAULT_POOLING, Pooling
from ..strategies import MAX_PACK_TOKENS
from ..texts import TokenizedTexts
from ..verdicts import EXACT_COSINE, FLOAT32_ROUNDING_RELATIVE_L2
from .batching import consistent_batchings, consistent_pack_sizes, describe_batchings
from .cause import likely_cause, name_the_others  # noqa: F401 (likely_cause: run and the package import it from here)
from .chat_template import chat_template_hypothesis
from .check import subset
from .compound import two_defects
from .confirm import confirmation, confirmation_words
from .duplicates import duplicate_rows_hypothesis
from .evidence import Evidence, RowSearch, row_scores
from .layers import TITLE as WRONG_LAYER_TITLE
from .layers import wrong_layer_hypothesis
from .order import order_hypothesis
from .pattern import DifferencePattern, difference_pattern
from .positions import read_position_hypothesis
from .precision import DTYPE_TITLE, dtype_hypothesis, kernels_hypothesis
from .report import AuditProgress, Hypothesis, RowCheck
from .reproduce import (
    concatenated_layout,
    left_padded_layout,
    padded_means,
    pre_norm_states,
    right_padded_layout,
    states_at,
)
from .special_tokens import special_tokens_hypothesis
from .truncation import truncated_hypothesis

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

FORENSIC_ROWS = 4  # worst rows tested per hypothesis (the first failure rejects it)
MAX_PACK_LOOKBACK = 8  # packed-naive: texts searched back for the start of a pack
MAX_LENGTH_CANDIDATES = 64  # left-naive: padded lengths tried per row


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


def _variant(by_row: dict[int, bool]) -> bool | None:
    """The one variant every reproduced row had (True/False), or None (none, or mixed)."""
    values = set(by_row.values())
    return values.pop() if len(values) == 1 else None


def _rows_text(values: dict[int, list[int]], unit: str) -> str:
    items = [f"text {row + 1} -> {_choices_text(value)}{unit}" for row, value in list(values.items())[:4]]
    return ", ".join(items) + (" ..." if len(values) > 4 else "")


RIGHT_NAIVE_TITLES = {
    "last": "right padding read at position -1 (a pad token's state)",
    "mean": "right padding, the mean over every column (pads counted in the mean)",
    "tokens": "right padding, every column kept as a token (pad positions stored as rows)",
}


def _right_naive_candidates(ev: Evidence, row: int, width: int) -> tuple[torch.Tensor, list[int], list[bool]] | None:
    """The row's reproductions right-padded to each length it can have been padded to, with the
    attention mask and without one (``model(input_ids)``: the pads attend), those lengths and
    whether each had the mask; None when a tokens file has no more rows than tokens."""
    ids = ev.tokenized.token_ids[row]
    n = len(ids)
    pad = ev.loaded.pad_token_id
    if ev.pooling == "tokens":
        padded = len(ev.stored_row(row))  # every column kept: the row count is the padded length
        if padded <= n:
            return None
        both = [states_at(ev.loaded, right_padded_layout(ids, padded, pad, m), ev.layers, "tokens") for m in BOTH]
        return torch.cat(both), [padded] * 2, list(BOTH)  # (2, P, L, d)
    # From P = n (not padded: the longest text of its batch, which matters once a token was added to
    # every text, see .compound) to the longest text.
    widths = list(range(n, width + 1))
    candidates = []
    for masked in BOTH:
        layout = right_padded_layout(ids, width, pad, masked)
        if ev.pooling == "mean":
            candidates.append(padded_means(ev.loaded, layout, ev.layers, widths))  # (C, L, d)
        else:
            candidates.append(states_at(ev.loaded, layout, ev.layers))  # (C, L, d): read at -1 of each length
    return torch.cat(candidates), widths * 2, [m for m in BOTH for _ in widths]


#: A variant on, then off: right-naive with the attention mask, then without; packed-naive ids reset, then not.
BOTH = (True, False)


def _hypothesis_right_naive(ev: Evidence) -> Hypothesis:
    title = RIGHT_NAIVE_TITLES[ev.pooling]
    lengths = ev.tokenized.lengths
    width = max(lengths)
    search = RowSearch(ev)
    inferred: dict[int, list[int]] = {}
    masked: dict[int, bool] = {}
    for row in ev.rows:
        found = _right_naive_candidates(ev, row, width)
        if found is None:
            search.skip(row)
            break
        candidates, widths, with_mask = found
        if not search.score(row, candidates):
            break
        best = search.best[row]
        if widths[best] > lengths[row]:  # padded: whether the pads were masked shows
            masked[row] = with_mask[best]
        inferred[row] = sorted({widths[k] for k in search.tied[row] if with_mask[k] == with_mask[best]})
    known = {**{r: lengths[r] for r in ev.exact_checked}, **inferred}
    longer = [r for r in ev.affected_checked if r not in inferred]
    batchings = consistent_batchings(lengths, known, longer) if inferred else {}
    lengths_set = set(lengths)
    evidence = {
        "padded_length_by_row": {str(r): _choices_json(p) for r, p in inferred.items()},
        "padded_length_is_a_text_length": {str(r): bool(set(p) & lengths_set) for r, p in inferred.items()},
        "consistent_batch_sizes": batchings,
        "attention_mask": _variant(masked),
    }
    what = {
        "last": "pad-token states",
        "mean": "means over the padded rows, pads counted,",
        "tokens": "the padded rows' every column, pads kept as rows,",
    }[ev.pooling]
    mask = {True: "", False: " without an attention mask (the pads attended)", None: ""}[_variant(masked)]
    detail = (
        f"the stored rows are {what}{mask} at padded lengths {_rows_text(inferred, ' tokens')} "
        f"(reproduction cosine {min(search.repro_cosines, default=float('nan')):.6f}); "
        + (describe_batchings(batchings) if inferred else "")
    )
    # Every reproduced row was padded past its last token (P > n): a pad position read, counted or kept.
    padded = any(max(p) > lengths[r] for r, p in inferred.items())
    return search.result("right-naive", title, detail, evidence, "pad-state" if padded else "unknown")


LEFT_NAIVE_TITLES = {
    False: "left padding without position ids (positions shifted by the pads)",
    True: "left padding, the mean over every column (pads counted in the mean)",
}


def _hypothesis_left_naive(ev: Evidence) -> Hypothesis:
    probe = _left_padding_changes(ev)
    # Under mean, hidden.mean(1) of a left-padded batch counts the pads whatever the model does with them.
    counted = (True, False) if ev.pooling == "mean" else (False,)
    if probe is not None:
        counted = tuple(c for c in counted if c)
    if not counted:
        return Hypothesis("left-naive", LEFT_NAIVE_TITLES[False], "not applicable", None, None, [], [], probe)
    lengths = ev.tokenized.lengths
    distinct = sorted(set(lengths))
    search = RowSearch(ev)
    inferred: dict[int, list[int]] = {}
    pads_counted: dict[int, bool] = {}
    for row in ev.rows:
        ids = ev.tokenized.token_ids[row]
        padded = [p for p in distinct if p > len(ids)][:MAX_LENGTH_CANDIDATES]
        if not padded:
            search.skip(row)
            break
        candidates = torch.cat(
            [
                states_at(ev.loaded, left_padded_layout(ids, padded, ev.loaded.pad_token_id, c), ev.layers, ev.pooling)
                for c in counted
            ]
        )  # (len(counted) * C, L, d)
        if not search.score(row, candidates):
            break
        pads_counted[row] = counted[search.best[row] // len(padded)]
        inferred[row] = sorted({padded[k % len(padded)] for k in search.tied[row]})
    known = {**{r: lengths[r] for r in ev.exact_checked}, **inferred}
    longer = [r for r in ev.affected_checked if r not in inferred]
    batchings = consistent_batchings(lengths, known, longer) if inferred else {}
    mean_counted = _variant(pads_counted)
    evidence = {
        "padded_length_by_row": {str(r): _choices_json(p) for r, p in inferred.items()},
        "consistent_batch_sizes": batchings,
        "pads_counted": mean_counted,
    }
    what = "means over the left-padded rows, pads counted," if mean_counted else "the texts shifted by left padding"
    detail = (
        f"the stored rows are {what} to {_rows_text(inferred, ' tokens')} "
        f"(reproduction cosine {min(search.repro_cosines, default=float('nan')):.6f}); "
        + (describe_batchings(batchings) if inferred else "")
    )
    # The reproducing layout put pads before the text (P > n): pads counted in a mean are pad states;
    # a model that reads the 2-D mask (measured) hid them, so the shifted positions changed the states;
    # one that does not ran them through.
    padded = any(max(p) > lengths[r] for r, p in inferred.items())
    kind = (
        "unknown"
        if not padded
        else "pad-state"
        if mean_counted or not inputs_read(ev.loaded).attention_mask
        else "position-shift"
    )
    return search.result("left-naive", LEFT_NAIVE_TITLES[bool(mean_counted)], detail, evidence, kind)


def _left_padding_changes(ev: Evidence) -> str | None:
    """Why the left-naive hypothesis cannot explain anything on this model, or None when it can:
    measured on the first forensic row, left-padded to the longest text (one forward pass), whose
    state is the one it has alone when neither the shifted positions nor the pads change it."""
    row = ev.rows[0]
    ids = ev.tokenized.token_ids[row]
    width = max(ev.tokenized.lengths)
    if width <= len(ids) or ev.pooling == "tokens":
        return None  # nothing to pad to (the search skips the row), or rows per text to compare
    padded = states_at(ev.loaded, left_padded_layout(ids, [width], ev.loaded.pad_token_id), ev.layers, ev.pooling)
    fresh = ev.fresh_at_layers(row)  # (L, d)
    cosine = float(row_scores(padded[0], fresh[None])[0])
    if cosine >= EXACT_COSINE:
        return (
            f"measured: text {row + 1} left-padded to {width} tokens without position ids keeps its state (cosine "
            f"{cosine:.6f} to the text alone): on this model left padding changes nothing"
        )
    return None


def _hypothesis_packed_naive(ev: Evidence) -> Hypothesis:
    title = "texts packed in one sequence without a mask (each attends to the texts before it)"
    token_ids, lengths = ev.tokenized.token_ids, ev.tokenized.lengths
    search = RowSearch(ev)
    inferred: dict[int, list[int]] = {}
    reset_by_row: dict[int, bool] = {}
    exact = sorted(ev.exact_checked)
    for row in ev.rows:
        # An exact checked row c < row starts a pack, so row's pack starts at c or later.
        lowest = max([0, row - MAX_PACK_LOOKBACK] + [c for c in exact if c < row])
        starts = []
        for start in range(row - 1, lowest - 1, -1):
            if sum(lengths[start : row + 1]) > MAX_PACK_TOKENS:
                break
            starts.append(start)
        if not starts:
            search.skip(row)
            break
        packs = [token_ids[s : row + 1] for s in starts]
        candidates = torch.cat(
            [
                states_at(ev.loaded, concatenated_layout(packs, ev.loaded.pad_token_id, reset), ev.layers, ev.pooling)
                for reset in BOTH
            ]
        )  # (2C, L, d): position ids reset per text, then running on
        if not search.score(row, candidates):
            break
        reset_by_row[row] = search.best[row] < len(starts)
        inferred[row] = sorted(
            {starts[k % len(starts)] for k in search.tied[row] if (k < len(starts)) == reset_by_row[row]}
        )
    known = {**{r: r for r in ev.exact_checked}, **inferred}
    not_start = [r for r in ev.affected_checked if r not in inferred]
    sizes = consistent_pack_sizes(len(lengths), known, not_start) if inferred else []
    evidence = {
        "pack_start_by_row": {str(r): _choices_json(s) for r, s in inferred.items()},
        "consistent_pack_sizes": sizes,
        "position_ids_reset": _variant(reset_by_row),
    }
    listed = ", ".join(str(s) for s in sizes[:6]) + (" ..." if len(sizes) > 6 else "")
    positions = {True: "position ids reset per text", False: "position ids running on", None: "position ids mixed"}
    detail = (
        f"the stored rows are the texts read after the texts before them, {positions[_variant(reset_by_row)]} "
        f"(pack start: "
        f"{_rows_text({r: [s + 1 for s in starts] for r, starts in inferred.items()}, '')}; "
        f"reproduction cosine {min(search.repro_cosines, default=float('nan')):.6f}); "
        + (f"consistent with packs of {listed} texts in input order" if sizes else "no fixed pack size fits")
    )
    # The reproducing layout has texts before the row's own in its pack, visible to it (no mask).
    saw_others = any(min(s) < r for r, s in inferred.items())
    return search.result("packed-naive", title, detail, evidence, "cross-text" if saw_others else "unknown")


def _hypothesis_pre_norm(ev: Evidence) -> Hypothesis:
    title = "the last layer was stored before the final norm"
    num_states = ev.loaded.num_hidden_layers + 1
    if ev.pooling == "tokens":
        return Hypothesis("pre-norm", title, "not applicable", None, None, [], [], UNTESTED_UNDER_TOKENS)
    if num_states - 1 not in ev.layers or ev.loaded.final_norm is None:
        reason = "the model's last layer is not stored" if ev.loaded.final_norm else "the model has no final norm"
        return Hypothesis("pre-norm", title, "not applicable", None, None, [], [], reason)
    last = ev.layers.index(num_states - 1)
    try:
        pre = pre_norm_states(ev.loaded, subset(ev.tokenized, ev.rows), ev.pooling)  # (R, d)
    except ValueError as error:  # a model whose final norm runs more or less than once a pass (nanochat)
        return Hypothesis("pre-norm", title, "not applicable", None, None, [], [], str(error))
    search = RowSearch(ev)
    for k, row in enumerate(ev.rows):
        reproduction = ev.fresh_at_layers(row).clone()  # (L, d)
        reproduction[last] = pre[k]
        search.score(row, reproduction[None])
    detail = (
        f"the stored layer {num_states - 1} equals the last block's output before the final norm (cosine "
        f"{min(search.repro_cosines, default=float('nan')):.6f}); hidden_states[-1] is already normed in "
        "transformers, so lm_head on these states needs the final norm first"
    )
    return search.result("pre-norm", title, detail, {"layer": num_states - 1}, "other-layer")


UNTESTED_UNDER_TOKENS = "not tested under tokens pooling (per-token files are tested for padding defects)"


def _per_text_only(hypothesis: Callable[[Evidence], Hypothesis], name: str, title: str):
    """``hypothesis`` under last/mean; not applicable under tokens."""

    def run(ev: Evidence) -> Hypothesis:
        if ev.pooling == "tokens":
            return Hypothesis(name, title, "not applicable", None, None, [], [], UNTESTED_UNDER_TOKENS)
        return hypothesis(ev)

    return run


#: The layout defects: padding and packing (tried again on texts with a token added, :mod:`.compound`).
LAYOUT_HYPOTHESES: dict[str, Callable[[Evidence], Hypothesis]] = {
    "right-naive": _hypothesis_right_naive,
    "left-naive": _hypothesis_left_naive,
    "packed-naive": _hypothesis_packed_naive,
}
HYPOTHESES: dict[str, Callable[[Evidence], Hypothesis]] = {
    **LAYOUT_HYPOTHESES,
    "order": order_hypothesis,
    "duplicate-rows": duplicate_rows_hypothesis,
    "truncated": truncated_hypothesis,
    "special-tokens": special_tokens_hypothesis,
    "chat-template": chat_template_hypothesis,
    "dtype": _per_text_only(dtype_hypothesis, "dtype", DTYPE_TITLE),
    "pre-norm": _hypothesis_pre_norm,
    "wrong-layer": _per_text_only(wrong_layer_hypothesis, "wrong-layer", WRONG_LAYER_TITLE),
    "read-position": read_position_hypothesis,
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
    pattern: DifferencePattern | None = None,
    pooling: Pooling = DEFAULT_POOLING,
    offsets: torch.Tensor | None = None,
) -> list[Hypothesis]:
    """Try every hypothesis in :data:`HYPOTHESES` on the worst affected checked rows, then
    ``kernels``, which is named by the pattern of the differences when none reproduces them; the
    likely cause is then confirmed on the other affected rows (:mod:`.confirm`).
    ``stored`` is (N, L, d), or (R, L, d) with ``offsets`` (N + 1,) under ``tokens``."""
    affected_mask = (check.row_min_cosine < EXACT_COSINE) | check.top1_differs | check.corrupted  # (K,)
    if stored_dtype == "float32":  # beyond float32 rounding a row differs, whatever its cosine (a mean's length)
        affected_mask = affected_mask | (check.row_max_relative_l2 > FLOAT32_ROUNDING_RELATIVE_L2)
    # Worst first: corrupted rows (by cosine or by relative L2), then by cosine.
    order = sorted(range(len(checked)), key=lambda k: (not bool(check.corrupted[k]), float(check.row_min_cosine[k])))
    worst = [checked[int(k)] for k in order if affected_mask[int(k)]][:forensic_rows]
    if not worst:
        return []
    affected = [checked[k] for k in range(len(checked)) if affected_mask[k]]
    exact = [checked[k] for k in range(len(checked)) if not affected_mask[k]]
    fresh_all = extract_states(loaded, subset(tokenized, worst), "single", keep_logits=False, pooling=pooling)
    evidence = Evidence(
        loaded=loaded,
        tokenized=tokenized,
        stored=stored,
        layers=list(layers),
        rows=worst,
        fresh={row: fresh_all.rows_of(k) for k, row in enumerate(worst)},  # (S, d); tokens (n, S, d)
        exact_checked=exact,
        affected_checked=affected,
        pattern=pattern if pattern is not None else difference_pattern(check, checked),
        stored_dtype=stored_dtype,
        pooling=pooling,
        offsets=offsets,
        checked=list(checked),
        fresh_checked=check.fresh,
    )
    results = []
    for number, (name, hypothesis) in enumerate(HYPOTHESES.items()):
        if progress is not None:
            progress("forensics", number, len(HYPOTHESES))
        started = time.perf_counter()
        results.append(hypothesis(evidence))
        logger.info("hypothesis %s: %s (%.1f s)", name, results[-1].status, time.perf_counter() - started)
    both = two_defects(evidence, LAYOUT_HYPOTHESES, results)
    if both is not None:
        results = [both if h.name == both.name else h for h in results]
    results.append(kernels_hypothesis(evidence, results))
    name_the_others(results)
    cause = likely_cause(results)
    if cause is not None and cause.status == "reproduced" and cause is not both:  # confirmed on the other rows
        confirmed = confirmation(evidence, cause, HYPOTHESES.get(cause.name))
        if confirmed is not None:
            cause.evidence["confirmation"] = confirmed
            cause.detail += "; " + confirmation_words(confirmed)
    if progress is not None:
        progress("forensics", len(HYPOTHESES), len(HYPOTHESES))
    return results
