"""Check a user's own extraction function: against itself one text at a time (no model), or
against this package's single-sample extraction of a model.

Researchers already have extraction code. :func:`check_extractor` runs it on some texts:

* **without a model** (``check_extractor(extract_fn, texts=texts)``): the ground truth of text i
  is ``extract_fn([text_i])``, the tested rows ``extract_fn(texts)``, the pipeline as it runs
  (:func:`extraction.consistency.self_check`: the function's own noise floor, and the cause from
  its behaviour on chosen lists: ``padding``, ``packing``, ``order``, ``duplicate-rows``,
  ``rounding``). Any engine, any precision, processed weights: nothing is rebuilt;
* **with a model** (a :class:`~extraction.models.LoadedModel`, a name for
  :func:`~extraction.models.load_model`, or your own ``(model, tokenizer)``): its rows go to the
  audit (:func:`extraction.audit.audit_states`) against single-sample extraction of that model,
  and the forensics reproduce the defect (``right-naive``, ``packed-naive``, ``dtype``, ...).

Either way the answer is an :class:`~extraction.audit.AuditReport` (verdict ``exact``, ``drift``
or ``corrupted``, ``likely_cause``, ``cause_kind``, evidence, ``to_dict()``).
:func:`assert_matches_single` is the same as an assertion, for a user's own test suite::

    from extraction import assert_matches_single

    def test_my_pipeline():
        assert_matches_single(my_extract, texts=["a short text", "a much longer text ..."])

The function is called as ``extract_fn(texts)`` with ``texts`` a ``list[str]`` (once with a
model; more often without, see :func:`~extraction.consistency.self_check`), and must return, by
``pooling`` (:mod:`extraction.pooling`):

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

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .audit import AuditProgress, AuditReport, audit_states
from .consistency import ExtractFn, function_name, self_check, states_from_return, token_states_from_return
from .consistency.remote import ChildFunction, ChildProcessFailed
from .models import load_model
from .pooling import POOLINGS as ALL_POOLINGS
from .storage.stored_states import StoredStates, validate_states
from .texts import tokenize_texts

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .models import LoadedModel

    Model = LoadedModel | str | tuple[PreTrainedModel, PreTrainedTokenizerBase]

#: The poolings :func:`check_extractor` can check: all of them.
POOLINGS = ALL_POOLINGS


class ExtractorMismatchError(AssertionError):
    """Raised by :func:`assert_matches_single`; ``report`` is the audit that failed."""

    def __init__(self, message: str, report: AuditReport):
        super().__init__(message)
        self.report = report


def _is_texts(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(text, str) for text in value)


def check_extractor(
    extract_fn: ExtractFn,
    model: Model | None = None,
    texts: Sequence[str] | None = None,
    layer: int = -1,
    pooling: str = "last",
    layers: Sequence[int] | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    sample: int | None = None,
    seed: int = 0,
    forensics: bool = True,
    progress: AuditProgress | None = None,
    reference: str = "auto",
    python: str | None = None,
    timeout: float | None = None,
) -> AuditReport:
    """Run ``extract_fn(texts)`` and check its rows: against ``extract_fn`` one text at a time when
    ``model`` is None (:func:`~extraction.consistency.self_check`, a
    :class:`~extraction.consistency.SelfCheckReport`; ``tokenizer`` optional, names pad reads), else
    against single-sample extraction of ``model`` (the audit).

    ``model`` is a :class:`~extraction.models.LoadedModel`, a name for
    :func:`~extraction.models.load_model` (float32, default device), or a ``(model, tokenizer)``
    pair already in memory (:meth:`~extraction.models.LoadedModel.wrap`: used as it is). ``layer`` is the
    ``hidden_states`` index of an ``(N, d)`` return (negative counts from the end);
    ``layers`` the indices of an ``(N, L, d)`` one (default all hidden states).
    ``pooling`` says what ``extract_fn`` returns (module docstring): ``last``, ``mean`` or ``tokens``.
    ``sample``, ``seed``, ``forensics``, ``progress`` and ``reference`` (the layout of the fresh rows,
    :mod:`extraction.audit.reference`; with a model only) are the audit's. Returns an
    :class:`~extraction.audit.AuditReport`; raises ``ValueError`` for a bad
    option or return value, or when ``extract_fn`` itself raises.

    With ``python`` (an interpreter's path), ``extract_fn`` is ``"FILE.py:FUNCTION"`` and runs in that
    interpreter, in one child process for the whole check (:mod:`extraction.consistency.remote`:
    the pipeline's environment needs only its own packages, torch and numpy); ``timeout`` (seconds)
    bounds the import and each call there. Its failure is one ``ValueError`` with its last lines of stderr.
    """
    if python is not None:
        with ChildFunction(python, extract_fn, timeout=timeout) as child:
            return check_extractor(
                child, model, texts, layer, pooling, layers, tokenizer=tokenizer, sample=sample, seed=seed,
                forensics=forensics, progress=progress, reference=reference,
            )  # fmt: skip
    if timeout is not None:
        raise ValueError("timeout= bounds a child process: give python= too")
    model, texts = _model_and_texts(model, texts, pooling)
    if model is None:
        return self_check(
            extract_fn, texts, layer, pooling, layers, tokenizer=tokenizer, sample=sample, seed=seed,
            forensics=forensics, progress=progress,
        )  # fmt: skip
    if tokenizer is not None:
        raise ValueError("tokenizer= is for the check without a model; a model brings its own tokenizer")
    loaded = load_model(model) if isinstance(model, str | tuple) else model
    # Tokenize first: unusable texts are the caller's mistake, not extract_fn's.
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    layers = None if layers is None else [int(index) for index in layers]
    tensor, offsets, dtype = _returned_states(extract_fn, texts, pooling, layers)
    chosen_layer = _model_layer(tensor, loaded, layer, layers)
    stored = StoredStates(tensor, f"extract_fn {function_name(extract_fn)}", None, dtype)
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
        reference=reference,
    )


def _model_and_texts(model, texts, pooling: str) -> tuple[object, list[str]]:
    """The options checked: ``check_extractor(fn, texts)`` read as no model, the texts a list."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    if texts is None and _is_texts(model):  # check_extractor(fn, texts): no model
        model, texts = None, model
    if texts is None:
        raise ValueError("texts are needed: check_extractor(extract_fn, texts=[...]) or (extract_fn, model, texts)")
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError(f"texts must be a list of strings, got a {type(texts).__name__}")
    return model, list(texts)


def _returned_states(extract_fn: ExtractFn, texts: list[str], pooling: str, layers: list[int] | None):
    """``extract_fn(texts)`` once: ``(tensor, offsets or None, dtype as returned)``."""
    try:
        returned = extract_fn(list(texts))  # a copy: the function may not change our texts
    except ChildProcessFailed as error:  # already worded, with the child's stderr
        raise error.on(f"all {len(texts)} texts in one call") from None
    except Exception as error:  # noqa: BLE001 - any failure of the user's code is reported as one line
        raise ValueError(f"extract_fn {function_name(extract_fn)} raised {type(error).__name__}: {error}") from error
    if pooling == "tokens":
        return token_states_from_return(returned, len(texts), layers)
    tensor, dtype = states_from_return(returned, len(texts), layers)
    return tensor, None, dtype


def _model_layer(tensor, loaded: LoadedModel, layer: int, layers: list[int] | None) -> int | None:
    """The returned states checked against the model (layer count, width, indices): the audit's
    ``layer`` for an ``(N, d)`` return, else None."""
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
    return chosen_layer


def assert_matches_single(
    extract_fn: ExtractFn,
    model: Model | None = None,
    texts: Sequence[str] | None = None,
    layer: int = -1,
    pooling: str = "last",
    layers: Sequence[int] | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    allow_drift: bool = False,
    sample: int | None = None,
    seed: int = 0,
) -> AuditReport:
    """:func:`check_extractor` (with or without a model), raising :class:`ExtractorMismatchError`
    (an ``AssertionError`` whose message gives the verdict, the likely cause and the cause in
    words, and whose ``report`` is the report) unless the verdict is ``exact`` (or ``drift`` with
    ``allow_drift``, e.g. for a bfloat16 pipeline). Returns the report when it passes."""
    report = check_extractor(
        extract_fn, model, texts, layer, pooling, layers, tokenizer=tokenizer, sample=sample, seed=seed
    )
    accepted = ("exact", "drift") if allow_drift else ("exact",)
    if report.verdict not in accepted:
        truth = "itself one text at a time" if report.model == "none" else "single-sample extraction"
        raise ExtractorMismatchError(
            f"extract_fn does not match {truth}: verdict {report.verdict}, likely cause "
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
