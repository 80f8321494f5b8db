"""Compare every strategy with single-sample extraction and give each a verdict.

Thresholds (:mod:`extraction.verdicts`, shared with the audit):

* ``exact``: min cosine >= :data:`EXACT_COSINE` over all texts and layers, the
  same top-1 next token as the single-sample model for every text (a near-tie within
  float tolerance counts as the same), and relative L2 within :data:`CORRUPTED_RELATIVE_L2`;
* ``drift``: min cosine >= :data:`DRIFT_COSINE` and relative L2 within
  :data:`CORRUPTED_RELATIVE_L2`, but not exact;
* ``corrupted``: anything else, or any NaN/inf.

Pooling (:mod:`extraction.pooling`): every strategy and the reference are extracted with
the same pooling. Under ``mean`` the text's mean states are compared; under ``tokens``
each text's rows position by position (:func:`~extraction.metrics.per_text_token_metrics`),
the worst row giving the text's figures, and a text with another row count than
``single`` gives it is ``corrupted`` (pad positions kept as tokens). ``lm_head`` agreement
(top-1, KL, the logit lens) is defined for ``last`` only and is None otherwise.

The cause (a :data:`~extraction.verdicts.CauseKind` and a sentence, :func:`~extraction.comparison.causes.diagnose`)
is derived from what was measured and from what the batch layout did to the texts, not
from a fixed table keyed by strategy name.

The forward pass: a comparison measures every layer and the ``lm_head`` agreement (the Layers
page's per-layer chart, the Predictions page's top-1 and KL, the JSON's per-layer minima), so
each extraction here runs the whole pass by design. The pass that stops after the deepest layer
asked (:func:`~extraction.capture.blocks_needed`) serves the callers that ask for some layers:
``extract``, ``audit``, ``--verify`` and ``probe``.

The per-strategy record, :class:`~extraction.comparison.record.StrategyComparison`, lives
below this module and :mod:`.causes` (both read it); the ``lm_head`` side and the logit lens
live in :mod:`.logit_lens`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch

from .. import metrics
from ..extract import ExtractionResult, extract_states
from ..logit_lens import LENS_ROWS, apply_lm_head, logit_lens_agreement, logit_tolerance
from ..pooling import DEFAULT_POOLING, Pooling, parse_pooling
from ..strategies import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, REFERENCE, STRATEGIES, parse_strategy_names
from ..texts import TokenizedTexts, tokenize_texts
from ..verdicts import (
    CORRUPTED_RELATIVE_L2,
    DRIFT_COSINE,
    EXACT_COSINE,
    VERDICTS,
    verdict_for,
)
from .causes import diagnose
from .model_facts import ModelFacts
from .record import StrategyComparison

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

#: Under ``tokens`` pooling every strategy's rows of every token are kept: at most this many
#: float32 values a strategy (64 MiB; about 940 tokens of SmolLM2's 31 x 576); texts past it
#: (in input order) are left out of the comparison and a note says so.
MAX_COMPARED_TOKEN_VALUES = 2**24

#: ``progress(strategy_name, strategy_number, strategy_count, done_texts, total_texts)``
CompareProgress = Callable[[str, int, int, int, int], None]


def compare_extractions(
    loaded: LoadedModel,
    reference: ExtractionResult,
    extraction: ExtractionResult,
    lens_agreement: torch.Tensor | None = None,
    final_logits: torch.Tensor | None = None,
    reference_final_logits: torch.Tensor | None = None,
) -> StrategyComparison:
    """Measure ``extraction`` against ``reference`` (both with every layer, the same pooling,
    and logits under ``last``).

    ``lens_agreement`` (L,), ``final_logits`` (N, V) (``lm_head`` of the extracted final states)
    and ``reference_final_logits`` (N, V) (of the reference's) are computed here unless given
    (:func:`compare_strategies` computes them for every strategy at once); none exists for
    ``mean``/``tokens`` pooling."""
    if extraction.pooling != reference.pooling:
        raise ValueError(f"pooling {extraction.pooling!r} compared with a {reference.pooling!r} reference")
    rows_differ = None
    if extraction.pooling == "tokens":
        measured = metrics.per_text_token_metrics(
            extraction.hidden, extraction.offsets, reference.hidden, reference.offsets
        )
        cosine, relative_l2, max_abs = (measured[key].float() for key in ("cosine", "relative_l2", "max_abs"))
        rows_differ = measured["rows_differ"]
    else:
        cosine = metrics.cosine_similarity(extraction.hidden, reference.hidden).float()  # (N, L)
        relative_l2 = metrics.relative_l2_error(extraction.hidden, reference.hidden).float()
        max_abs = metrics.max_abs_diff(extraction.hidden, reference.hidden).float()
    top1_same = kl = reproduces = None
    if extraction.pooling == "last":
        atol, rtol = logit_tolerance(loaded.dtype)
        if final_logits is None:
            final_logits = apply_lm_head(loaded, extraction.hidden[:, -1], final_norm=False)  # (N, V)
        if reference_final_logits is None:
            reference_final_logits = apply_lm_head(loaded, reference.hidden[:, -1], final_norm=False)  # (N, V)
        # Like with like: lm_head of both final states (a model with a head transform before
        # lm_head, ModernBERT's, gives logits that lm_head of the state alone does not).
        top1_same = metrics.top1_agrees(final_logits, reference_final_logits, atol, rtol)
        kl = metrics.kl_divergence(reference.logits, extraction.logits).float()
        reproduces_gap = metrics.max_abs_diff(final_logits, extraction.logits)
        reproduces = reproduces_gap <= atol * 10 + rtol * 100 * extraction.logits.abs().amax(-1).double()
        if lens_agreement is None:
            lens_agreement = logit_lens_agreement(loaded, reference.hidden, {extraction.strategy: extraction.hidden})[
                extraction.strategy
            ]
    else:
        lens_agreement = None
    nonfinite = metrics.nonfinite_count(extraction.hidden)
    if extraction.logits is not None:
        nonfinite += metrics.nonfinite_count(extraction.logits)
    divergent = (cosine.nan_to_num(-1.0) < EXACT_COSINE).any(0).nonzero().flatten()
    comparison = StrategyComparison(
        name=extraction.strategy,
        extraction=extraction,
        cosine=cosine,
        relative_l2=relative_l2,
        max_abs=max_abs,
        top1_same=top1_same,
        kl=kl,
        lm_head_reproduces=reproduces,
        logit_lens_agreement=lens_agreement,
        nonfinite=nonfinite,
        rows_differ=rows_differ,
        first_divergent_layer=int(divergent[0]) if len(divergent) else None,
    )
    comparison.verdict = verdict_for(
        comparison.min_cosine,
        top1_same is None or bool(top1_same.all()),
        nonfinite > 0,
        max_relative_l2=comparison.max_relative_l2,
        rows_match=rows_differ is None or not bool(rows_differ.any()),
        dtype=str(loaded.dtype).removeprefix("torch."),
    )
    comparison.cause_kind, comparison.cause = diagnose(comparison, reference, ModelFacts.from_loaded(loaded))
    return comparison


@dataclass
class ComparisonReport:
    """Every strategy compared with ``single`` on the same texts."""

    model: str
    model_description: str
    dtype: str
    attn_implementation: str
    is_random: bool
    uses_absolute_positions: bool
    batch_size: int
    tokenized: TokenizedTexts
    reference: ExtractionResult
    strategies: dict[str, StrategyComparison]
    notes: list[str] = field(default_factory=list)  # pad-token choice, truncation, ...
    pooling: Pooling = DEFAULT_POOLING

    @property
    def num_layers(self) -> int:
        """Entries of ``per_layer_min_cosine``: the embeddings plus one per block."""
        return self.reference.hidden.shape[1]

    @property
    def texts(self) -> list[str]:
        return self.tokenized.texts

    def summary_frame(self) -> pd.DataFrame:
        """One row per strategy: verdict, cause and headline numbers."""
        rows = []
        for name, comp in self.strategies.items():
            rows.append(
                {
                    "strategy": name,
                    "verdict": comp.verdict,
                    "cause_kind": comp.cause_kind,
                    "min_cosine": comp.min_cosine,
                    "mean_cosine": comp.mean_cosine,
                    "max_relative_l2": comp.max_relative_l2,
                    "top1_agreement": comp.top1_agreement,
                    "mean_kl": comp.mean_kl,
                    "pad_fraction": comp.extraction.pad_fraction,
                    "tokens_per_second": comp.extraction.tokens_per_second,
                    "cause": comp.cause,
                }
            )
        return pd.DataFrame(rows)

    def layers_frame(self) -> pd.DataFrame:
        """Long table over strategies, texts and layers (see :meth:`StrategyComparison.to_frame`)."""
        return pd.concat([comp.to_frame() for comp in self.strategies.values()], ignore_index=True)

    def to_json_dict(self) -> dict:
        return {
            "model": self.model,
            "dtype": self.dtype,
            "num_layers": self.num_layers,
            "attn_implementation": self.attn_implementation,
            "random_weights": self.is_random,
            "batch_size": self.batch_size,
            "pooling": self.pooling,
            "num_texts": len(self.tokenized),
            "thresholds": {
                "exact_min_cosine": EXACT_COSINE,
                "drift_min_cosine": DRIFT_COSINE,
                "corrupted_relative_l2": CORRUPTED_RELATIVE_L2,
            },
            "notes": self.notes,
            "strategies": {name: comp.to_dict() for name, comp in self.strategies.items()},
        }


def compare_strategies(
    loaded: LoadedModel,
    texts: Sequence[str] | TokenizedTexts,
    strategies: str | Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    progress: CompareProgress | None = None,
    pooling: Pooling = DEFAULT_POOLING,
) -> ComparisonReport:
    """Extract with ``single`` and each of ``strategies`` (default all), pooled by
    ``pooling``, and compare."""
    names = parse_strategy_names(strategies)
    pooling = parse_pooling(pooling)
    tokenized = (
        texts
        if isinstance(texts, TokenizedTexts)
        else tokenize_texts(loaded.tokenizer, list(texts), max_tokens=loaded.context_length)
    )
    notes = [note for note in (loaded.pad_token_note, tokenized.truncation_note) if note]
    if pooling == "tokens":
        tokenized, capped = cap_token_texts(tokenized, loaded.num_hidden_layers + 1, loaded.hidden_size)
        notes.extend(capped)
    if loaded.is_random:
        notes.insert(0, f"{loaded.name} has random weights: its predictions mean nothing, only agreement does.")
    extractions: dict[str, ExtractionResult] = {}
    for number, name in enumerate(names, start=1):

        def report(done: int, total: int, name: str = name, number: int = number) -> None:
            if progress is not None:
                progress(name, number, len(names), done, total)

        report(0, len(tokenized))
        extractions[name] = extract_states(
            loaded, tokenized, name, batch_size, max_batch_tokens, progress=report, pooling=pooling
        )
    reference = extractions[REFERENCE]
    if pooling == "last":
        lens = logit_lens_agreement(loaded, reference.hidden, {name: ext.hidden for name, ext in extractions.items()})
        # lm_head of every strategy's final states in one pass over the vocabulary matrix.
        finals = torch.cat([extractions[name].hidden[:, -1] for name in names])  # (S N, d)
        final_logits = torch.cat(
            [
                apply_lm_head(loaded, finals[k : k + LENS_ROWS], final_norm=False)
                for k in range(0, len(finals), LENS_ROWS)
            ]
        ).split(len(tokenized))  # S x (N, V), the reference's first (names start with it)
        comparisons = {
            name: compare_extractions(
                loaded, reference, extractions[name], lens[name], final_logits[k], final_logits[0]
            )
            for k, name in enumerate(names)
        }
    else:
        comparisons = {name: compare_extractions(loaded, reference, extractions[name]) for name in names}
    return ComparisonReport(
        model=loaded.name,
        model_description=loaded.description,
        dtype=str(loaded.dtype).removeprefix("torch."),
        attn_implementation=loaded.attn_implementation,
        is_random=loaded.is_random,
        uses_absolute_positions=loaded.uses_absolute_positions,
        batch_size=batch_size,
        tokenized=tokenized,
        reference=reference,
        strategies=comparisons,
        notes=notes,
        pooling=pooling,
    )


def cap_token_texts(tokenized: TokenizedTexts, num_states: int, width: int) -> tuple[TokenizedTexts, list[str]]:
    """The first texts whose token rows fit :data:`MAX_COMPARED_TOKEN_VALUES` (at least one),
    and a note saying what was left out (none when everything fits)."""
    budget = max(1, MAX_COMPARED_TOKEN_VALUES // (num_states * width))  # tokens
    total, keep = 0, 0
    for length in tokenized.lengths:
        if keep and total + length > budget:
            break
        total, keep = total + length, keep + 1
    if keep == len(tokenized):
        return tokenized, []
    note = (
        f"Pooling 'tokens' keeps every token's state of every strategy: the first {keep} of {len(tokenized)} texts "
        f"({total:,} of {sum(tokenized.lengths):,} tokens) were compared, to keep each strategy's rows within "
        f"{MAX_COMPARED_TOKEN_VALUES * 4 // 2**20} MiB."
    )
    return tokenized.subset(range(keep)), [note]


__all__ = [
    "DRIFT_COSINE",
    "EXACT_COSINE",
    "VERDICTS",
    "ComparisonReport",
    "StrategyComparison",
    "compare_extractions",
    "compare_strategies",
    "diagnose",
    "verdict_for",
    "STRATEGIES",
]
