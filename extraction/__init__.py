"""Check hidden states extracted in padded batches against single-sample extraction.

The package behind the dashboard: load a causal LM (:mod:`.models`), lay texts out in
batches under a padding strategy (:mod:`.strategies`), keep the last-real-token rows
(:mod:`.extract`), and compare them with single-sample extraction (:mod:`.compare`,
with the pure metrics in :mod:`.metrics`). No UI code lives here.
"""

from .compare import (
    DRIFT_COSINE,
    EXACT_COSINE,
    ComparisonReport,
    StrategyComparison,
    compare_strategies,
    verdict_for,
)
from .extract import ExtractionResult, extract_states
from .models import DEFAULT_MODEL, LoadedModel, ModelLoadError, load_model
from .strategies import REFERENCE, STRATEGIES, get_strategy
from .texts import TextsError, read_texts, tokenize_texts

__all__ = [
    "DEFAULT_MODEL",
    "DRIFT_COSINE",
    "EXACT_COSINE",
    "REFERENCE",
    "STRATEGIES",
    "ComparisonReport",
    "ExtractionResult",
    "LoadedModel",
    "ModelLoadError",
    "StrategyComparison",
    "TextsError",
    "compare_strategies",
    "extract_states",
    "get_strategy",
    "load_model",
    "read_texts",
    "tokenize_texts",
    "verdict_for",
]
