"""Check a user's own extraction function against single-sample extraction, with the audit.

Researchers already have extraction code. :func:`check_extractor` runs it on some texts
and hands its rows to the audit (:func:`extraction.audit.audit_states`), so the answer is
the audit's report: a verdict (``exact``, ``drift``, ``corrupted``), the likely cause
reproduced by the forensics (``right-naive``, ``packed-naive``, ``dtype``, ...), the
evidence and ``to_dict()``. :func:`assert_matches_single` is the same as an assertion,
for a user's own test suite::

    from extraction import assert_matches_single

    def test_my_pipeline():
        assert_matches_single(my_extract, "tiny-random-gpt2", ["a short text", "a much longer text ..."])

The function is called once, as ``extract_fn(texts)`` with ``texts`` a ``list[str]``, and
must return, by ``pooling`` (:mod:`extraction.pooling`):

* ``"last"`` (the default): one last-token state per text, a numpy array or torch tensor of
  shape ``(N, d)`` for one layer (``layer``, a ``hidden_states`` index, default the last) or
  ``(N, L, d)`` for several (``layers``, their indices; default all hidden states). Row i is
  the state of text i;
* ``"mean"``: the same shapes, row i the mean of text i's token states at each layer;
* ``"tokens"``: a tuple ``(rows, offsets)``: ``rows`` ``(R, d)`` or ``(R, L, d)``, every token's
  state, and ``offsets`` ``(N + 1,)`` integers, text i owning ``rows[offsets[i]:offsets[i + 1]]``
  (``offsets[0] == 0``, ``offsets[-1] == R``). A text with another row count than its tokens is
  corrupted (pad positions kept as tokens).

Anything else (another type, rank, row count or width, NaN/inf, integer values, offsets that
do not fit, an exception inside the function) raises one ``ValueError`` naming what was wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .audit import AuditProgress, AuditReport, audit_states
from .models import load_model
from .pooling import POOLINGS as ALL_POOLINGS
from .stored_states import StoredStates, validate_offsets, validate_states
from .texts import tokenize_texts

if TYPE_CHECKING:
    from .models import LoadedModel

#: The poolings :func:`check_extractor` can check: all of them.
POOLINGS = ALL_POOLINGS

#: ``extract_fn(texts) -> (N, d) or (N, L, d)`` array or tensor, row i for text i (``tokens``:
#: ``(rows, offsets)``).
ExtractFn = Callable[[list[str]], Any]


class ExtractorMismatchError(AssertionError):
    """Raised by :func:`assert_matches_single`; ``report`` is the audit that failed."""

    def __init__(self, message: str, report: AuditReport):
        super().__init__(message)
        self.report = report


def _function_name(extract_fn: ExtractFn) -> str:
    return getattr(extract_fn, "__qualname__", None) or type(extract_fn).__name__


def token_states_from_return(
    value: Any, num_texts: int, layers: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(rows as float32, offsets (N + 1,) int64, dtype name)`` from a ``tokens`` return
    ``(rows, offsets)``, or a ``ValueError`` naming what is wrong with it."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(
            f"extract_fn returned a {type(value).__name__}: under pooling='tokens' it must return a tuple "
            "(rows (R, d) or (R, L, d), offsets (N + 1,))"
        )
    rows, offsets = value
    if isinstance(offsets, np.ndarray):
        offsets = torch.from_numpy(np.ascontiguousarray(offsets))
    if not isinstance(offsets, torch.Tensor) or offsets.is_floating_point() or offsets.dim() != 1:
        raise ValueError("extract_fn returned offsets that are not a vector of integers: expected (N + 1,) int64")
    num_rows = rows.shape[0] if hasattr(rows, "shape") and len(rows.shape) else 0
    try:
        offsets = validate_offsets(offsets.cpu(), num_texts, num_rows)
    except ValueError as error:
        raise ValueError(f"extract_fn returned offsets that do not fit: {error}") from error
    tensor, dtype = states_from_return(rows, num_rows, layers, what="token rows")
    return tensor, offsets, dtype


def states_from_return(
    value: Any, num_texts: int, layers: Sequence[int] | None, what: str = "rows"
) -> tuple[torch.Tensor, str]:
    """``(float32 cpu tensor as returned, its dtype's name)`` from what ``extract_fn`` returned,
    or a ``ValueError`` naming what is wrong with it (type, dtype, rank, rows, NaN/inf).
    ``num_texts`` is the row count expected (``what`` names the rows in messages)."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        if not (value.is_floating_point()):
            raise ValueError(f"extract_fn returned a tensor of {dtype}: hidden states must be floating point")
        tensor = value.detach().to(device="cpu", dtype=torch.float32)
    elif isinstance(value, np.ndarray):
        dtype = str(value.dtype)
        if value.dtype.kind != "f":
            raise ValueError(f"extract_fn returned an array of {dtype}: hidden states must be floating point")
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    else:
        raise ValueError(
            f"extract_fn returned a {type(value).__name__}: expected a numpy array or torch tensor of shape "
            "(N, d), or (N, L, d) with layers="
        )
    shape = tuple(tensor.shape)
    expected = "(N, L, d) for layers=" if layers is not None and len(layers) > 1 else "(N, d)"
    if tensor.dim() not in (2, 3):
        raise ValueError(f"extract_fn returned shape {shape}: expected {expected}, one row per text")
    if tensor.dim() == 2 and layers is not None and len(layers) > 1:
        raise ValueError(f"extract_fn returned shape {shape} but {len(layers)} layers were named: expected {expected}")
    if shape[0] != num_texts:
        raise ValueError(
            f"extract_fn returned {shape[0]} rows (shape {shape}) for {num_texts} texts: row i must be text i's state"
            if what == "rows"
            else f"extract_fn returned {shape[0]} {what} (shape {shape}) but its offsets end at {num_texts}"
        )
    bad = ~torch.isfinite(tensor)
    if bad.any():
        rows = sorted({int(i) for i in bad.reshape(num_texts, -1).any(1).nonzero().flatten()})
        shown = ", ".join(str(i + 1) for i in rows[:5]) + (" ..." if len(rows) > 5 else "")
        where = "texts" if what == "rows" else what
        raise ValueError(
            f"extract_fn returned NaN or inf values in {len(rows)} of {num_texts} {what} ({where} {shown})"
        )
    return tensor, dtype


def check_extractor(
    extract_fn: ExtractFn,
    model: LoadedModel | str,
    texts: Sequence[str],
    layer: int = -1,
    pooling: str = "last",
    layers: Sequence[int] | None = None,
    *,
    sample: int | None = None,
    seed: int = 0,
    forensics: bool = True,
    progress: AuditProgress | None = None,
) -> AuditReport:
    """Run ``extract_fn(texts)`` and audit its rows against single-sample extraction.

    ``model`` is a :class:`~extraction.models.LoadedModel` or a name for
    :func:`~extraction.models.load_model` (float32, default device). ``layer`` is the
    ``hidden_states`` index of an ``(N, d)`` return (negative counts from the end);
    ``layers`` the indices of an ``(N, L, d)`` one (default all hidden states).
    ``pooling`` says what ``extract_fn`` returns (module docstring): ``last``, ``mean`` or ``tokens``.
    ``sample``, ``seed``, ``forensics`` and ``progress`` are the audit's. Returns the
    audit's :class:`~extraction.audit.AuditReport`; raises ``ValueError`` for a bad
    option or return value, or when ``extract_fn`` itself raises.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError(f"texts must be a list of strings, got a {type(texts).__name__}")
    texts = list(texts)
    loaded = load_model(model) if isinstance(model, str) else model
    # Tokenize first: unusable texts are the caller's mistake, not extract_fn's.
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    name = _function_name(extract_fn)
    try:
        returned = extract_fn(list(texts))  # a copy: the function may not change our texts
    except Exception as error:  # noqa: BLE001 - any failure of the user's code is reported as one line
        raise ValueError(f"extract_fn {name} raised {type(error).__name__}: {error}") from error
    layers = None if layers is None else [int(index) for index in layers]
    offsets = None
    if pooling == "tokens":
        tensor, offsets, dtype = token_states_from_return(returned, len(texts), layers)
    else:
        tensor, dtype = states_from_return(returned, len(texts), layers)
    num_states = loaded.num_hidden_layers + 1
    if tensor.dim() == 3 and layers is None and tensor.shape[1] != num_states:
        raise ValueError(
            f"extract_fn returned shape {tuple(tensor.shape)}: {tensor.shape[1]} layers, but the model has "
            f"{num_states} hidden states; name the layers returned with layers=[i, j, ...]"
        )
    chosen_layer = layer if tensor.dim() == 2 and layers is None else None
    try:  # width and layer indices against the model, with the audit's own check
        validate_states(tensor, len(tensor), loaded.hidden_size, num_states, layer=chosen_layer, layers=layers)
    except ValueError as error:
        raise ValueError(f"extract_fn returned states the model cannot have: {error}") from error
    stored = StoredStates(tensor, f"extract_fn {name}", None, dtype)
    return audit_states(
        loaded,
        tokenized,
        stored,
        layer=chosen_layer,
        layers=layers,
        sample=sample,
        seed=seed,
        forensics=forensics,
        progress=progress,
        pooling=pooling,
        offsets=offsets,
    )


def assert_matches_single(
    extract_fn: ExtractFn,
    model: LoadedModel | str,
    texts: Sequence[str],
    layer: int = -1,
    pooling: str = "last",
    layers: Sequence[int] | None = None,
    *,
    allow_drift: bool = False,
    sample: int | None = None,
    seed: int = 0,
) -> AuditReport:
    """:func:`check_extractor`, raising :class:`ExtractorMismatchError` (an ``AssertionError``
    whose message gives the verdict, the likely cause and the cause in words, and whose
    ``report`` is the audit) unless the verdict is ``exact`` (or ``drift`` with
    ``allow_drift``, e.g. for a bfloat16 pipeline). Returns the report when it passes."""
    report = check_extractor(extract_fn, model, texts, layer, pooling, layers, sample=sample, seed=seed)
    accepted = ("exact", "drift") if allow_drift else ("exact",)
    if report.verdict not in accepted:
        raise ExtractorMismatchError(
            f"extract_fn does not match single-sample extraction: verdict {report.verdict}, likely cause "
            f"{report.likely_cause} (min cosine {report.min_cosine:.6f} over {report.n_checked} texts). {report.cause}",
            report,
        )
    return report


__all__ = [
    "POOLINGS",
    "ExtractFn",
    "ExtractorMismatchError",
    "assert_matches_single",
    "check_extractor",
    "states_from_return",
    "token_states_from_return",
]
