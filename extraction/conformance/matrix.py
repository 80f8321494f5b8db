"""The conformance matrix: every padding strategy on every causal-LM architecture transformers ships.

For each model type of :func:`~extraction.models.architectures.causal_lm_types` the tiny
random model ``tiny-random:<model_type>`` is built (float32, ``sdpa`` where the architecture
supports it, else ``eager``), and every strategy is compared with single-sample extraction
under ``last`` and ``mean`` pooling on :data:`MATRIX_TEXTS` (clearly different lengths, one
twice so that ``bucketed`` batches two rows), all texts in one batch. Each cell's verdict,
cause kind and cause come from :func:`~extraction.comparison.compare.compare_extractions`, the measure
``compare`` uses, so from the measurements and the layout, never from the architecture's
name. A strategy whose forward pass fails on an architecture (a 4-D mask on a recurrent
model) is a ``skipped`` cell whose cause is the error.

The JSON (:meth:`ConformanceMatrix.to_dict`, a public contract pinned by a test)::

    {"versions": {"transformers", "torch", "python", "extraction_matrix"},
     "texts": [...],
     "settings": {"dtype", "poolings", "strategies", "batch_size", "token_lengths"},
     "seconds": total wall time,
     "architectures": {"<model_type>": {
         "error": null or why it could not be built or run,
         "attn_implementation": "sdpa", "eager" or null,
         "class": the causal-LM class name or null,
         "seconds": wall time for this architecture,
         "reads_position_ids", "reads_attention_mask": true/false, measured (null if not),
         "pooling": {"last": {"<strategy>": {"verdict", "cause_kind", "cause", "max_relative_l2"}},
                     "mean": {...}}}}}

``verdict`` is ``exact``, ``drift``, ``corrupted`` (:data:`~extraction.verdicts.VERDICTS`)
or ``skipped``; ``cause_kind`` is one of :data:`~extraction.verdicts.CAUSE_KINDS`, or null
for a skipped cell; ``max_relative_l2`` is null when skipped or not finite. ``pooling`` is
empty for an architecture with an ``error``.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import transformers

from ..comparison.compare import compare_extractions
from ..comparison.inputs_read import reads_inputs
from ..extract import extract_states
from ..models import LoadedModel, ModelLoadError, load_model
from ..models.architectures import TINY_RANDOM_PREFIX, causal_lm_types, causality_gap, exclusion_reason, root_cause
from ..models.embedded import embedded_tokenizer
from ..pooling import Pooling
from ..strategies import REFERENCE, STRATEGIES
from ..texts import TokenizedTexts, tokenize_texts
from ..verdicts import CauseKind

logger = logging.getLogger(__name__)

#: Bump when what a cell means changes (the JSON's ``versions.extraction_matrix``).
MATRIX_FORMAT = 1
MATRIX_POOLINGS: tuple[Pooling, ...] = ("last", "mean")
#: Strategies in the grid: every registered one but the reference it is measured against.
MATRIX_STRATEGIES: tuple[str, ...] = tuple(name for name in STRATEGIES if name != REFERENCE)
#: Clearly different lengths (SmolLM2 tokens: 3, 9, 19, 41), the shortest twice so that
#: ``bucketed`` batches two rows; the longest are longer than the tiny sliding window.
MATRIX_TEXTS: tuple[str, ...] = (
    "Hello there.",
    "The cat sat quietly on the warm mat.",
    "Padding is harmless only when every position the model reads was computed as if alone.",
    "A researcher extracted hidden states in batches and found that a probe trained on them "
    "scored lower than one trained on states taken one text at a time, because the batches "
    "were padded and the wrong position was read.",
    "Hello there.",
)
#: A later token may change an earlier state by at most this (float32): above it the model is not causal.
CAUSAL_GAP = 1e-3
CellVerdict = Literal["exact", "drift", "corrupted", "skipped"]
#: ``progress(model_type, done, total)``, after each architecture.
MatrixProgress = Callable[[str, int, int], None]


@dataclass
class MatrixCell:
    """One architecture x strategy x pooling."""

    verdict: CellVerdict
    cause_kind: CauseKind | None  # None when skipped
    cause: str
    max_relative_l2: float | None  # over texts and layers; None when skipped or not finite

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "cause_kind": self.cause_kind,
            "cause": self.cause,
            "max_relative_l2": self.max_relative_l2,
        }


@dataclass
class ArchitectureRow:
    """Every cell of one architecture, or the reason it has none."""

    model_type: str
    error: str | None = None
    attn_implementation: str | None = None
    model_class: str | None = None
    seconds: float = 0.0
    #: Measured on the longest text (:func:`~extraction.comparison.inputs_read.reads_inputs`):
    #: does the forward pass change when
    #: only the position ids / only the 2-D attention mask change? None when not measured.
    reads_position_ids: bool | None = None
    reads_attention_mask: bool | None = None
    cells: dict[Pooling, dict[str, MatrixCell]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "error": self.error,
            "attn_implementation": self.attn_implementation,
            "class": self.model_class,
            "seconds": round(self.seconds, 3),
            "reads_position_ids": self.reads_position_ids,
            "reads_attention_mask": self.reads_attention_mask,
            "pooling": {
                pooling: {name: cell.to_dict() for name, cell in cells.items()} for pooling, cells in self.cells.items()
            },
        }


@dataclass
class ConformanceMatrix:
    """The whole matrix (see the module docstring for its JSON)."""

    texts: list[str]
    rows: dict[str, ArchitectureRow]
    strategies: list[str]
    poolings: list[Pooling]
    dtype: str = "float32"
    seconds: float = 0.0
    token_lengths: list[int] = field(default_factory=list)  # of each text, with the shared tokenizer

    def to_dict(self) -> dict:
        return {
            "versions": versions(),
            "texts": list(self.texts),
            "settings": {
                "dtype": self.dtype,
                "poolings": list(self.poolings),
                "strategies": list(self.strategies),
                "batch_size": len(self.texts),
                "token_lengths": list(self.token_lengths),
            },
            "seconds": round(self.seconds, 1),
            "architectures": {name: row.to_dict() for name, row in self.rows.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> ConformanceMatrix:
        """The matrix back from its JSON (:meth:`to_dict`)."""
        rows = {}
        for name, entry in data["architectures"].items():
            rows[name] = ArchitectureRow(
                name,
                error=entry["error"],
                attn_implementation=entry["attn_implementation"],
                model_class=entry["class"],
                seconds=entry["seconds"],
                reads_position_ids=entry["reads_position_ids"],
                reads_attention_mask=entry["reads_attention_mask"],
                cells={
                    pooling: {strategy: MatrixCell(**cell) for strategy, cell in cells.items()}
                    for pooling, cells in entry["pooling"].items()
                },
            )
        settings = data["settings"]
        return cls(
            texts=list(data["texts"]),
            rows=rows,
            strategies=list(settings["strategies"]),
            poolings=list(settings["poolings"]),
            dtype=settings["dtype"],
            seconds=data["seconds"],
            token_lengths=list(settings["token_lengths"]),
        )

    @property
    def measured(self) -> list[ArchitectureRow]:
        """The rows that were built and run."""
        return [row for row in self.rows.values() if row.error is None]


def versions() -> dict[str, str]:
    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "extraction_matrix": str(MATRIX_FORMAT),
    }


def parse_architectures(spec: str | Sequence[str] | None) -> list[str]:
    """``None``/``"all"``, a comma-separated string or a list -> model types; ``ValueError``
    naming a few registered ones for an unknown name."""
    known = causal_lm_types()
    if spec is None or spec == "all" or (not isinstance(spec, str) and list(spec) == ["all"]):
        return known
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    names = [n.removeprefix(TINY_RANDOM_PREFIX) for n in names]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"unknown architecture {', '.join(unknown) or '(none given)'}: give causal-LM model types transformers "
            f"registers, comma-separated ({len(known)}, e.g. llama, gpt2, mamba, jamba), or all"
        )
    return list(dict.fromkeys(names))


def load_architecture(model_type: str) -> LoadedModel:
    """``tiny-random:<model_type>`` in float32 on the CPU, ``sdpa`` where supported, else ``eager``."""
    name = f"{TINY_RANDOM_PREFIX}{model_type}"
    try:
        return load_model(name, device="cpu", attn_implementation="sdpa")
    except ModelLoadError as error:
        if "does not support attn_implementation" not in str(error):
            raise
    return load_model(name, device="cpu", attn_implementation="eager")


def skipped(reason: str) -> MatrixCell:
    return MatrixCell("skipped", None, reason, None)


def measure_architecture(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    strategies: Sequence[str] = MATRIX_STRATEGIES,
    poolings: Sequence[Pooling] = MATRIX_POOLINGS,
) -> dict[Pooling, dict[str, MatrixCell]]:
    """Every strategy against ``single`` under each pooling, all texts in one batch; a strategy
    whose pass fails is a skipped cell naming the error."""
    batch_size = len(tokenized)
    cells: dict[Pooling, dict[str, MatrixCell]] = {}
    for pooling in poolings:
        reference = extract_states(loaded, tokenized, REFERENCE, batch_size, None, pooling=pooling)
        row: dict[str, MatrixCell] = {}
        for name in strategies:
            try:
                extraction = extract_states(loaded, tokenized, name, batch_size, None, pooling=pooling)
            except Exception as exc:  # noqa: BLE001 - a layout this architecture cannot run: the reason is the cell
                row[name] = skipped(f"the forward pass failed with this layout: {root_cause(exc)}")
                continue
            comparison = compare_extractions(loaded, reference, extraction)
            worst = comparison.max_relative_l2
            row[name] = MatrixCell(
                comparison.verdict, comparison.cause_kind, comparison.cause, worst if worst == worst else None
            )
        cells[pooling] = row
    return cells


def run_architecture(
    model_type: str,
    texts: Sequence[str] = MATRIX_TEXTS,
    strategies: Sequence[str] = MATRIX_STRATEGIES,
    poolings: Sequence[Pooling] = MATRIX_POOLINGS,
) -> ArchitectureRow:
    """One row of the matrix: build, check causality, measure; any failure is the row's error."""
    started = time.perf_counter()
    row = ArchitectureRow(model_type)
    reason = exclusion_reason(model_type)
    if reason:
        row.error = f"left out: {reason}"
        return row
    try:
        loaded = load_architecture(model_type)
        row.attn_implementation = loaded.attn_implementation
        row.model_class = type(loaded.model).__name__
        tokenized = tokenize_texts(loaded.tokenizer, list(texts), max_tokens=loaded.context_length)
        longest = max(tokenized.token_ids, key=len)
        gap = causality_gap(loaded.model, longest, loaded.pad_token_id)
        if gap > CAUSAL_GAP:
            row.error = (
                f"not causal as built: changing the last token changed earlier states by up to {gap:.3g} "
                "(an encoder whose causal-LM head is meant for encoder-decoder use)"
            )
        else:
            read = reads_inputs(loaded.model, longest, loaded.pad_token_id, loaded.device)
            row.reads_position_ids, row.reads_attention_mask = read.position_ids, read.attention_mask
            row.cells = measure_architecture(loaded, tokenized, strategies, poolings)
    except ModelLoadError as error:
        row.error = str(error)
    except Exception as exc:  # noqa: BLE001 - the matrix records why an architecture could not run
        row.error = f"could not run: {root_cause(exc)}"
    row.seconds = time.perf_counter() - started
    return row


def run_matrix(
    architectures: Sequence[str] | None = None,
    texts: Sequence[str] = MATRIX_TEXTS,
    strategies: Sequence[str] = MATRIX_STRATEGIES,
    poolings: Sequence[Pooling] = MATRIX_POOLINGS,
    progress: MatrixProgress | None = None,
) -> ConformanceMatrix:
    """The matrix over ``architectures`` (default: every causal-LM type transformers registers)."""
    started = time.perf_counter()
    names = parse_architectures(architectures)
    rows: dict[str, ArchitectureRow] = {}
    for done, model_type in enumerate(names, start=1):
        rows[model_type] = run_architecture(model_type, texts, strategies, poolings)
        logger.info("%s: %s", model_type, rows[model_type].error or "measured")
        if progress is not None:
            progress(model_type, done, len(names))
    return ConformanceMatrix(
        texts=list(texts),
        rows=rows,
        strategies=list(strategies),
        poolings=list(poolings),
        seconds=time.perf_counter() - started,
        token_lengths=[len(ids) for ids in embedded_tokenizer()(list(texts))["input_ids"]],
    )
