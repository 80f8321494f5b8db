"""Forensics: try each known defect as an explanation of stored vectors that are not exact.

Each hypothesis reproduces the stored rows under one defect (see :mod:`extraction.audit`
for the list), within fixed bounds, on the worst few rows; :func:`run_forensics` runs
them all and :func:`likely_cause` picks the reproduced one, if any.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from ..extract import extract_states
from ..strategies import MAX_PACK_TOKENS
from ..texts import TokenizedTexts
from ..verdicts import DRIFT_COSINE, EXACT_COSINE
from .batching import consistent_batchings, consistent_pack_sizes, describe_batchings
from .check import state_cosine, subset
from .evidence import Evidence, RowSearch, reproduces, row_scores
from .report import REPRODUCE_COSINE, AuditProgress, Hypothesis, HypothesisStatus, RowCheck
from .reproduce import concatenated_layout, pre_norm_states, right_padded_layout, shifted_positions_layout, states_at

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

FORENSIC_ROWS = 4  # worst rows tested per hypothesis (the first failure rejects it)
MAX_PACK_LOOKBACK = 8  # packed-naive: texts searched back for the start of a pack
REPRESENTABLE_FRACTION = 0.999  # stored values exactly representable in a reduced dtype: computed in it
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


def _rows_text(values: dict[int, list[int]], unit: str) -> str:
    items = [f"text {row + 1} -> {_choices_text(value)}{unit}" for row, value in list(values.items())[:4]]
    return ", ".join(items) + (" ..." if len(values) > 4 else "")


def _hypothesis_right_naive(ev: Evidence) -> Hypothesis:
    title = "right padding read at position -1 (a pad token's state)"
    lengths = ev.tokenized.lengths
    width = max(lengths)
    search = RowSearch(ev)
    inferred: dict[int, list[int]] = {}
    for row in ev.rows:
        ids = ev.tokenized.token_ids[row]
        if len(ids) >= width:  # the longest text is never padded
            search.skip(row)
            break
        layout = right_padded_layout(ids, width, ev.loaded.pad_token_id)
        candidates = states_at(ev.loaded, layout, ev.layers)[1:]  # (C, L, d): padded lengths n+1..width
        if not search.score(row, candidates):
            break
        inferred[row] = [len(ids) + 1 + k for k in search.tied[row]]
    known = {**{r: lengths[r] for r in ev.exact_checked}, **inferred}
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


def _hypothesis_left_naive(ev: Evidence) -> Hypothesis:
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
    search = RowSearch(ev)
    inferred: dict[int, list[int]] = {}
    for row in ev.rows:
        ids = ev.tokenized.token_ids[row]
        padded = [p for p in distinct if p > len(ids)][:MAX_LENGTH_CANDIDATES]
        if not padded:
            search.skip(row)
            break
        layout = shifted_positions_layout(ids, [p - len(ids) for p in padded])
        if not search.score(row, states_at(ev.loaded, layout, ev.layers)):
            break
        inferred[row] = [padded[k] for k in search.tied[row]]
    known = {**{r: lengths[r] for r in ev.exact_checked}, **inferred}
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


def _hypothesis_packed_naive(ev: Evidence) -> Hypothesis:
    title = "texts packed in one sequence without a mask (each attends to the texts before it)"
    token_ids, lengths = ev.tokenized.token_ids, ev.tokenized.lengths
    search = RowSearch(ev)
    inferred: dict[int, list[int]] = {}
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
        layout = concatenated_layout([token_ids[s : row + 1] for s in starts], ev.loaded.pad_token_id)
        if not search.score(row, states_at(ev.loaded, layout, ev.layers)):
            break
        inferred[row] = sorted(starts[k] for k in search.tied[row])
    known = {**{r: r for r in ev.exact_checked}, **inferred}
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


def _hypothesis_dtype(ev: Evidence) -> Hypothesis:
    title = "extracted in reduced precision (bfloat16 / float16)"
    candidates = [d for d in (torch.bfloat16, torch.float16) if d != ev.loaded.dtype]
    rows = ev.rows
    fresh_cosine = min(float(row_scores(ev.stored[r], ev.fresh_at_layers(r)[None])[0]) for r in rows)
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
            float(r) >= REPRODUCE_COSINE and (waived or reproduces(float(r), float(f)))
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


def _hypothesis_pre_norm(ev: Evidence) -> Hypothesis:
    title = "the last layer was stored before the final norm"
    num_states = ev.loaded.num_hidden_layers + 1
    if num_states - 1 not in ev.layers or ev.loaded.final_norm is None:
        reason = "the model's last layer is not stored" if ev.loaded.final_norm else "the model has no final norm"
        return Hypothesis("pre-norm", title, "not applicable", None, None, [], [], reason)
    last = ev.layers.index(num_states - 1)
    pre = pre_norm_states(ev.loaded, subset(ev.tokenized, ev.rows))  # (R, d)
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
    return search.result("pre-norm", title, detail, {"layer": num_states - 1})


def _hypothesis_wrong_layer(ev: Evidence) -> Hypothesis:
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
    search = RowSearch(ev)
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


HYPOTHESES: dict[str, Callable[[Evidence], Hypothesis]] = {
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
    exact = [checked[k] for k in range(len(checked)) if not affected_mask[k]]
    fresh_all = extract_states(loaded, subset(tokenized, worst), "single", keep_logits=False).hidden  # (R, S, d)
    evidence = Evidence(
        loaded=loaded,
        tokenized=tokenized,
        stored=stored,
        layers=list(layers),
        rows=worst,
        fresh={row: fresh_all[k] for k, row in enumerate(worst)},
        exact_checked=exact,
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
