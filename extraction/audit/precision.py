"""Rounding as a cause: reduced precision (``dtype``) and float32 rounding of another build or
device (``kernels``).

Both give drift-level differences; what tells them apart is the pattern of the rows that
differ (:mod:`.pattern`) and what reproduces them:

* ``dtype`` is named only when the differences are spread over most checked rows (reduced
  precision touches every row) **and** a reduced-precision reproduction is clearly closer
  than the float32 states on most tested rows. Reproductions per dtype, with the model in
  it the two usual ways (parameters cast, as ``from_pretrained(dtype=...)`` does, or
  everything, as ``model.to(dtype)`` does: RoPE's ``inv_freq`` differs): single-sample
  extraction; the tested rows in one right-padded batch in it, and
  in one padded to the file's longest text (reduced-precision kernels round differently for
  small and large inputs, by as much as float32 does, so a batched file needs a batched
  reproduction of about its size; the best of them counts per row); and the fresh float32
  states rounded to it (computed in float32, *stored* in reduced precision). Whether every
  stored value is exactly representable in the dtype is reported as evidence and breaks
  ties between dtypes, but never replaces the closeness test.
* ``kernels`` is named when no defect reproduces the rows, every difference is within
  drift, and the stored values are float32 results (not exactly representable in bfloat16
  or float16): the float32 rounding of another torch build, BLAS, library version or
  device (GPUs with TF32 matmuls). It has nothing to reproduce; its status is
  ``consistent`` and its evidence the pattern.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..extract import extract_states
from .check import state_cosine, state_relative_l2, subset
from .evidence import Evidence, reproduces
from .report import Hypothesis, HypothesisStatus

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

REPRESENTABLE_FRACTION = 0.999  # stored values exactly representable in a reduced dtype: they passed through it
REDUCED_DTYPES = (torch.bfloat16, torch.float16)
DTYPE_TITLE = "extracted in reduced precision (bfloat16 / float16)"
KERNELS_TITLE = "float32 rounding of another build or device (TF32 matmuls, another BLAS, other library versions)"


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def representable_fraction(values: torch.Tensor, dtype: torch.dtype) -> float:
    """Fraction of values unchanged by a round trip through ``dtype``."""
    return float((values.to(dtype).float() == values).float().mean())


def reduced_bits(stored_rows: torch.Tensor) -> dict[str, float]:
    """``{dtype name: fraction of the stored values exactly representable in it}`` for bfloat16 and float16."""
    return {_name(d): representable_fraction(stored_rows, d) for d in REDUCED_DTYPES}


def reduced_precision_copies(loaded: LoadedModel, dtype: torch.dtype) -> dict[str, LoadedModel]:
    """Copies of ``loaded`` in ``dtype``, the two ways people get one: ``{"loaded in": parameters
    cast, buffers kept (what ``from_pretrained(dtype=...)`` gives: RoPE's ``inv_freq`` stays
    float32), "cast with .to()": everything cast (``model.to(dtype)``)}``; one entry when the
    model has no floating-point buffers. On SmolLM2 their bfloat16 states differ by up to 8.0."""
    copies = {}
    model = copy.deepcopy(loaded.model)
    for parameter in model.parameters():
        parameter.data = parameter.data.to(dtype)
    copies["loaded in"] = dataclasses.replace(loaded, model=model, dtype=dtype)
    if any(b.is_floating_point() and b.dtype != dtype for b in model.buffers()):
        cast = copy.deepcopy(loaded.model).to(dtype)
        copies["cast with .to()"] = dataclasses.replace(loaded, model=cast, dtype=dtype)
    return copies


def _reproductions(ev: Evidence, dtype: torch.dtype, rows: Sequence[int]) -> dict[str, torch.Tensor]:
    """``{how: (R, L, d)}``: the rows computed in ``dtype`` (by each copy of
    :func:`reduced_precision_copies`) one at a time, in one batch and in one padded to the
    longest text, and the fresh float32 rows rounded to ``dtype``."""
    sub = subset(ev.tokenized, rows)
    lengths = ev.tokenized.lengths
    longest = max(range(len(lengths)), key=lambda i: lengths[i])
    out = {}
    for made, reduced in reduced_precision_copies(ev.loaded, dtype).items():
        hidden = extract_states(reduced, sub, "single", layers=ev.layers, keep_logits=False, pooling=ev.pooling).hidden
        out[f"{made}, one text at a time"] = hidden
        if len(rows) > 1:
            batched = extract_states(
                reduced, sub, "right", batch_size=len(rows), layers=ev.layers, keep_logits=False, pooling=ev.pooling
            )
            out[f"{made}, in a batch"] = batched.hidden
        if lengths[longest] > max(lengths[r] for r in rows):
            # CPU reduced-precision matmuls take another path for larger inputs: measured on SmolLM2 bf16, rows
            # of a batch of 8 padded to 62 tokens were reproduced only by a batch about as wide, small batches
            # only by small ones.
            wide = subset(ev.tokenized, [*rows, longest])
            batched = extract_states(
                reduced,
                wide,
                "right",
                batch_size=len(rows) + 1,
                layers=ev.layers,
                keep_logits=False,
                pooling=ev.pooling,
            )
            out[f"{made}, in a batch padded to the longest text"] = batched.hidden[: len(rows)]
        del reduced
    fresh_rows = torch.stack([ev.fresh_at_layers(r) for r in rows])  # (R, L, d)
    out["computed in float32, stored in reduced precision"] = fresh_rows.to(dtype).float()
    return out


def dtype_hypothesis(ev: Evidence) -> Hypothesis:
    """``dtype``: the rule in the module docstring."""
    pattern = ev.pattern
    candidates = [d for d in REDUCED_DTYPES if d != ev.loaded.dtype]
    if not candidates:
        reason = "the model already runs in float16"
        return Hypothesis("dtype", DTYPE_TITLE, "not applicable", None, None, [], [], reason)
    if not pattern.drift_level:
        reason = f"{len(pattern.corrupted)} checked rows are corrupted: beyond rounding ({pattern.describe()})"
        return Hypothesis("dtype", DTYPE_TITLE, "not applicable", None, None, [], [], reason)
    evidence = {"dtype": None, "pattern": pattern.to_dict()}
    if not pattern.spread:
        reason = f"reduced precision changes every row, but {pattern.describe()}"
        return Hypothesis("dtype", DTYPE_TITLE, "rejected", None, None, [], [], reason, evidence)
    rows = list(ev.rows)
    stored_rows = ev.stored[rows]  # (R, L, d)
    fresh_rows = torch.stack([ev.fresh_at_layers(r) for r in rows])  # (R, L, d)
    fresh_cosines = state_cosine(stored_rows, fresh_rows).nan_to_num(-1.0).min(-1).values  # (R,)
    representable = reduced_bits(stored_rows)
    outcomes = []
    for dtype in candidates:
        name = _name(dtype)
        reproductions = _reproductions(ev, dtype, rows)
        ways = list(reproductions)
        cosines = torch.stack(
            [state_cosine(stored_rows, reproductions[w]).nan_to_num(-1.0).min(-1).values for w in ways]
        )  # (W, R)
        errors = torch.stack(
            [state_relative_l2(stored_rows, reproductions[w]).nan_to_num(float("inf")).max(-1).values for w in ways]
        )  # (W, R)
        best_cosines, best_way = cosines.max(0)  # (R,)
        best_errors = errors.gather(0, best_way[None])[0]  # (R,)
        ok = [
            reproduces(float(r), float(f), float(e))
            for r, f, e in zip(best_cosines, fresh_cosines, best_errors, strict=True)
        ]
        logger.info("dtype %s: reproduction cosines %s, representable %.4f", name, cosines, representable[name])
        how = max(set(int(k) for k in best_way), key=lambda k: int((best_way == k).sum()))
        # With equal counts, a dtype whose bits the values carry wins, the coarser first (values computed in
        # bfloat16 are mostly representable in float16 too, not the other way round).
        carries_bits = representable[name] >= REPRESENTABLE_FRACTION
        outcomes.append((sum(ok), carries_bits, torch.finfo(dtype).eps, float(best_cosines.min()), name, ok, ways[how]))
    count, _, _, repro_cosine, name, ok, how = max(outcomes)
    reproduced = [row for row, good in zip(rows, ok, strict=True) if good]
    most = count > len(rows) / 2
    status: HypothesisStatus = "reproduced" if most else "partial" if count else "rejected"
    fresh_cosine = float(fresh_cosines.min())
    model_dtype = _name(ev.loaded.dtype)
    detail = (
        f"{name} ({how}) is clearly closer than the {model_dtype} states on {count} of {len(rows)} tested rows "
        f"(reproduction cosine {repro_cosine:.6f} against {fresh_cosine:.6f}); {pattern.describe()}; "
        f"{100 * representable[name]:.1f}% of the stored values are exactly representable in {name} "
        f"(a float32 computation gives almost none); the file stores {ev.stored_dtype}"
    )
    if not most:
        detail = f"not closer than the {model_dtype} states on most tested rows: " + detail
    evidence.update(
        {
            "dtype": name if most else None,
            "how": how if most else None,
            "rows_closer": count,
            "representable_fraction": representable,
        }
    )
    return Hypothesis(
        "dtype", DTYPE_TITLE, status, repro_cosine, fresh_cosine, rows, reproduced, detail, evidence, "rounding"
    )


def kernels_hypothesis(ev: Evidence, others: Sequence[Hypothesis]) -> Hypothesis:
    """``kernels``: named by the pattern when nothing reproduces the rows (module docstring)."""
    pattern = ev.pattern
    representable = reduced_bits(torch.cat([ev.stored_row(r).flatten() for r in ev.rows]))
    evidence = {"pattern": pattern.to_dict(), "representable_fraction": representable}
    reproduced = [h.name for h in others if h.status == "reproduced"]
    reduced = [name for name, fraction in representable.items() if fraction >= REPRESENTABLE_FRACTION]
    if reproduced:
        status: HypothesisStatus = "rejected"
        detail = f"{', '.join(reproduced)} reproduces the stored rows"
    elif not pattern.drift_level:
        status = "rejected"
        detail = f"{len(pattern.corrupted)} checked rows are corrupted, beyond rounding: {pattern.describe()}"
    elif reduced:
        status = "rejected"
        detail = (
            f"the stored values are {reduced[0]} numbers ({100 * representable[reduced[0]]:.1f}% exactly "
            f"representable), not float32 results, yet no {reduced[0]} reproduction here is clearly closer than the "
            "float32 states: computed in reduced precision on other kernels, or altered after; " + pattern.describe()
        )
    else:
        status = "consistent"
        detail = (
            f"no defect reproduces the stored rows and every difference is within drift: {pattern.describe()}; the "
            f"stored values are float32 results ({100 * representable['bfloat16']:.2f}% representable in bfloat16)"
        )
    fresh = pattern.min_cosine_differing
    return Hypothesis("kernels", KERNELS_TITLE, status, None, fresh, [], [], detail, evidence, "kernels")
