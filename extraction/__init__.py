"""Check hidden states extracted in padded batches against single-sample extraction.

The package behind the dashboard and the ``padding-audit`` command (no UI code lives
here). The public API, importable from ``extraction``:

* :func:`load_model` (``name, dtype="float32", device="auto", attn_implementation="sdpa"``)
  -> :class:`LoadedModel`: ``"smollm2-135m"`` (embedded), ``"tiny-random-llama"``,
  ``"tiny-random-gpt2"``, a Hugging Face id, a folder or a ``.gguf`` file;
  :class:`ModelLoadError` (a ``ValueError``) says why one cannot load.
* :func:`compare_strategies` (``loaded, texts, strategies=None, batch_size=8``) ->
  :class:`ComparisonReport`: every padding strategy against single-sample extraction,
  a :class:`StrategyComparison` per strategy (verdict, cause, cosines, top-1 agreement);
  :func:`comparison_report_html` makes it one self-contained HTML page.
* :func:`audit_states` (``loaded, texts, states, layer=None, layers=None``) ->
  :class:`AuditReport`: are stored states right, and if not, which known defect
  reproduces them (``likely_cause``, evidence, ``to_dict()``).
* :func:`check_extractor` (``extract_fn, model=None, texts, layer=-1, pooling="last",
  layers=None``) -> :class:`AuditReport`: runs your own extraction function and checks its
  rows: without a model against itself one text at a time (:mod:`.consistency`, any engine or
  precision), with one (a name, a :class:`LoadedModel` or your ``(model, tokenizer)``) against
  single-sample extraction; :func:`assert_matches_single` raises ``AssertionError`` unless they are exact.
* :func:`extract_to_file` (``loaded, texts, out, layers=None, strategy="auto", pooling="last"``) ->
  :class:`ExportResult`: correct extraction of every text to a ``.safetensors`` file,
  verified against single-sample extraction (``pooling="tokens"``: every token's row and
  the texts' ``offsets``).

Example (tiny random GPT-2: seconds, no download)::

    import extraction

    loaded = extraction.load_model("tiny-random-gpt2")
    report = extraction.compare_strategies(loaded, ["Hello", "The capital of France is"], ["right-naive", "right"])
    print(report.strategies["right-naive"].verdict)  # corrupted: a pad token's state was read

Modules: at the top the front of the package, :mod:`.strategies` (batch layouts), :mod:`.metrics`
(pure functions), :mod:`.verdicts` (verdict words, cause kinds, thresholds), :mod:`.texts` and
:mod:`.chat` (inputs), :mod:`.pooling`, :mod:`.extract` (read rows), :mod:`.logit_lens`,
:mod:`.check_extractor`, :mod:`.samples` and :mod:`.cli`; beside them one subpackage per concern:
:mod:`.models` (loading), :mod:`.comparison` (strategies against single-sample extraction, causes,
``--strategy auto``), :mod:`.audit` (stored states checked, defects reproduced), :mod:`.consistency`
(a pipeline against itself), :mod:`.storage` (files and shards of states), :mod:`.probing`,
:mod:`.conformance` (the architecture matrix), :mod:`.views` (what the pages show),
:mod:`.plotting` (figures) and :mod:`.commands` (one per command). Map: docs/layout.md.
"""

__version__ = "0.2.0"

from .audit import AuditReport, Hypothesis, audit_states
from .check_extractor import ExtractorMismatchError, assert_matches_single, check_extractor
from .comparison.compare import (
    DRIFT_COSINE,
    EXACT_COSINE,
    ComparisonReport,
    StrategyComparison,
    compare_strategies,
    verdict_for,
)
from .extract import ExtractionResult, extract_states
from .models import DEFAULT_MODEL, LoadedModel, ModelLoadError, load_model
from .storage.export import ExportResult, extract_to_file
from .strategies import REFERENCE, STRATEGIES, get_strategy
from .texts import TextsError, read_texts, tokenize_texts

__all__ = [
    "DEFAULT_MODEL",
    "DRIFT_COSINE",
    "EXACT_COSINE",
    "REFERENCE",
    "STRATEGIES",
    "AuditReport",
    "ComparisonReport",
    "ExportResult",
    "ExtractionResult",
    "ExtractorMismatchError",
    "Hypothesis",
    "LoadedModel",
    "ModelLoadError",
    "StrategyComparison",
    "TextsError",
    "__version__",
    "assert_matches_single",
    "audit_states",
    "check_extractor",
    "compare_strategies",
    "comparison_report_html",
    "extract_states",
    "extract_to_file",
    "get_strategy",
    "load_model",
    "read_texts",
    "tokenize_texts",
    "verdict_for",
]


def __getattr__(name: str):
    """``comparison_report_html`` is imported on first use: it needs plotly, which the library
    itself does not (a GPU machine or a pipeline may run without it)."""
    if name == "comparison_report_html":
        from .views.report_html import comparison_report_html

        return comparison_report_html
    raise AttributeError(f"module 'extraction' has no attribute {name!r}")
