"""Probe impact: what a probe trained on one strategy's states scores at inference time.

A researcher extracts hidden states in padded batches, trains a linear probe on them and
validates it on a held-out split extracted the same way. At inference time states come
one text at a time (``single``). If the batched states were corrupted, the probe learned
the corruption: its validation accuracy overstates what inference will see.

For each strategy :func:`run_probe`:

1. extracts the last-real-token state of every text at one layer (``hidden_states``
   index, default the last) and, where step 5 runs, at the last layer (for ``lm_head``): a
   middle layer alone stops each pass after it (``lm_head``, default only for the last layer);
2. splits the texts train/test, stratified by label, with a fixed seed (the same split
   for every strategy);
3. trains a standardized logistic-regression probe on the strategy's train features;
4. scores it on (a) the strategy's own test features, ``accuracy_same`` (what the
   researcher sees), and (b) the ``single`` test features, ``accuracy_single`` (what
   inference sees); ``gap = accuracy_same - accuracy_single``;
5. when every label is exactly one token of the vocabulary (and lm_head runs), applies ``lm_head`` to the
   strategy's final-layer test states and predicts the label whose token has the
   highest logit: the zero-shot ``lm_head_accuracy``.

The train/score step, :func:`~extraction.probing.fit.fit_and_score` (and :func:`score_layer`, every strategy at one
layer), is a pure function of feature arrays. The states come from
:mod:`extraction.probing.features` (one extraction per strategy, cached); the labelled data from
:mod:`extraction.probing.labelled`, a few of whose names are re-exported here for the Probe page.
:mod:`extraction.probing.sweep` runs the same step over every layer and several seeded splits.

The split and the pure train/score step live in :mod:`extraction.probing.fit` (re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from .. import metrics
from ..pooling import DEFAULT_POOLING, Pooling
from ..strategies import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, REFERENCE, parse_strategy_names
from ..texts import tokenize_texts
from ..verdicts import corrupted_rows
from .features import FeatureCache, ProbeProgress, StrategyStates, strategy_states
from .fit import (
    DEFAULT_C,
    DEFAULT_SEED,
    MAX_ITER,
    ProbeScores,
    accuracy,
    fit_and_score,
    make_probe,
    stratified_split,
)
from .labelled import (
    BUILTIN_DATASETS,
    DEFAULT_DATASET,
    DEFAULT_TEST_FRACTION,
    MIN_ROWS_PER_CLASS,
    LabelledTexts,
    builtin_dataset,
    check_labelled,
    parse_labelled_csv,
)
from .lm_head import label_token_ids, lm_head_label_predictions, lm_head_labels, probe_lm_head

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)


#: What the gap means, for UIs and the command line.
GAP_EXPLANATION = (
    "gap = accuracy_same - accuracy_single. A probe is validated on test states extracted the same way "
    "as its training states (accuracy_same), but at inference states are extracted one text at a time "
    "(accuracy_single). A positive gap is accuracy that exists only on corrupted states: the probe learned "
    "the corruption, and validation overstates what it will do in use. With exact states the two "
    "test sets are the same and the gap is 0."
)

# --- the report ----------------------------------------------------------------------------


@dataclass
class StrategyProbe:
    """One strategy's probe and zero-shot numbers (``n_test`` test texts, width ``d``)."""

    name: str
    scores: ProbeScores
    features: np.ndarray = field(repr=False)  # (N, d) float32: every text's state at the probed layer
    corrupted_test_fraction: float  # test texts whose features are corrupted (verdicts.corrupted_rows) against single's
    lm_head_accuracy: float | None  # zero-shot, on final-layer test states; None if labels are not single tokens
    lm_head_predictions: np.ndarray | None = field(default=None, repr=False)  # (n_test,) class index
    extraction_seconds: float = 0.0  # wall-clock time of this strategy's extraction
    from_cache: bool = False  # the states came from a feature cache (extracted by an earlier run)

    @property
    def accuracy_same(self) -> float:
        return self.scores.accuracy_same

    @property
    def accuracy_single(self) -> float:
        return self.scores.accuracy_single

    @property
    def gap(self) -> float:
        return self.scores.gap

    def summary(self) -> str:
        """One or two sentences on what this strategy's states did to its probe."""
        same, single, gap = self.accuracy_same, self.accuracy_single, 100 * self.gap
        flips = self.scores.prediction_flips
        if self.name == REFERENCE:
            return (
                f"The reference: trained and tested on single-sample states, so both accuracies are the same "
                f"by construction ({same:.1%})."
            )
        if self.corrupted_test_fraction == 0.0 and flips == 0.0:
            return (
                f"Its test states match single-sample extraction, so the probe makes the same predictions on "
                f"both ({same:.1%})."
            )
        text = (
            f"{self.corrupted_test_fraction:.0%} of its test states differ from single-sample extraction. "
            f"Validation on them says {same:.1%}; on single-sample states, as at inference, the same probe "
            f"gets {single:.1%} (gap {gap:+.1f} points), and {flips:.0%} of its test predictions change"
        )
        if gap > 0:
            return f"{text}: validation overstates what inference will see."
        if gap < 0:
            return f"{text}: it happens to do better at inference here, but it was trained on the wrong states."
        if flips > 0:
            return f"{text}: the changes cancel out in the accuracy, not in the predictions."
        return f"{text}."

    def to_dict(self) -> dict:
        return {
            "accuracy_same": self.accuracy_same,
            "accuracy_single": self.accuracy_single,
            "gap": self.gap,
            "train_accuracy": self.scores.train_accuracy,
            "prediction_flips": self.scores.prediction_flips,
            "corrupted_test_fraction": self.corrupted_test_fraction,
            "extraction_seconds": self.extraction_seconds,
            **({"lm_head_accuracy": self.lm_head_accuracy} if self.lm_head_accuracy is not None else {}),
        }


@dataclass
class ProbeReport:
    """Probes trained on each strategy's features, all scored on the same test texts."""

    model: str
    model_description: str
    is_random: bool
    layer: int  # hidden_states index probed (0 = embeddings, num_layers = the last, post-norm)
    num_layers: int  # transformer blocks of the model
    data_source: str
    classes: list[str]
    num_texts: int
    train_indices: np.ndarray = field(repr=False)  # (n_train,) row indices
    test_indices: np.ndarray = field(repr=False)  # (n_test,) row indices
    test_labels: np.ndarray = field(repr=False)  # (n_test,) class index
    seed: int
    test_fraction: float
    batch_size: int
    strategies: dict[str, StrategyProbe]
    lm_head_note: str | None = None  # why there is no lm_head accuracy, if there is none
    notes: list[str] = field(default_factory=list)
    pooling: Pooling = DEFAULT_POOLING  # how each text's state was pooled (last or mean)

    def to_frame(self) -> pd.DataFrame:
        """One row per strategy: accuracy_same, accuracy_single, gap, lm_head_accuracy (NaN
        when labels are not single tokens), prediction_flips, corrupted_test_fraction,
        extraction_seconds."""
        rows = []
        for name, result in self.strategies.items():
            rows.append(
                {
                    "strategy": name,
                    "accuracy_same": result.accuracy_same,
                    "accuracy_single": result.accuracy_single,
                    "gap": result.gap,
                    "lm_head_accuracy": np.nan if result.lm_head_accuracy is None else result.lm_head_accuracy,
                    "prediction_flips": result.scores.prediction_flips,
                    "corrupted_test_fraction": result.corrupted_test_fraction,
                    "extraction_seconds": result.extraction_seconds,
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """JSON-ready (the ``probe --json`` output)."""
        return {
            "model": self.model,
            "random_weights": self.is_random,
            "layer": self.layer,
            "num_layers": self.num_layers,
            "data": self.data_source,
            "classes": self.classes,
            "num_texts": self.num_texts,
            "num_train": int(len(self.train_indices)),
            "num_test": int(len(self.test_indices)),
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "batch_size": self.batch_size,
            "pooling": self.pooling,
            "lm_head_note": self.lm_head_note,
            "notes": self.notes,
            "strategies": {name: result.to_dict() for name, result in self.strategies.items()},
        }


def resolve_layer(layer: int | None, num_layers: int) -> int:
    """A ``hidden_states`` index in ``0..num_layers``; None or negative counts from the end
    (``-1`` = ``num_layers``, the last)."""
    if layer is None:
        return num_layers
    resolved = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise ValueError(
            f"layer {layer} out of range: this model has hidden_states 0..{num_layers} (or -1..-{num_layers + 1})"
        )
    return resolved


def score_layer(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    train_indices: np.ndarray,
    test_indices: np.ndarray,
    seed: int = DEFAULT_SEED,
) -> dict[str, ProbeScores]:
    """Per strategy, :func:`fit_and_score` on its ``features[name] (N, d)`` at one layer: trained
    on the ``train_indices`` rows, scored on its own ``test_indices`` rows and on the reference's
    (``features["single"]``). Pure: the one step a single-layer run and a layer sweep share."""
    reference_test = features[REFERENCE][test_indices]  # (n_test, d)
    return {
        name: fit_and_score(
            states[train_indices],
            labels[train_indices],
            states[test_indices],
            reference_test,
            labels[test_indices],
            seed=seed,
        )
        for name, states in features.items()
    }


def corrupted_fraction(states: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of rows of ``states (n, d)`` corrupted against ``reference (n, d)``
    (:func:`~extraction.verdicts.corrupted_rows` of their cosine and relative L2 error)."""
    states_t, reference_t = torch.from_numpy(states), torch.from_numpy(reference)
    cosine = metrics.cosine_similarity(states_t, reference_t)  # (n,)
    relative_l2 = metrics.relative_l2_error(states_t, reference_t)  # (n,)
    return float(corrupted_rows(cosine, relative_l2).double().mean())


def probe_notes(loaded: LoadedModel, truncation_note: str | None) -> list[str]:
    """The notes of a probe run: random weights, the pad token used, texts cut to the context."""
    notes = [note for note in (loaded.pad_token_note, truncation_note) if note]
    if loaded.is_random:
        notes.insert(0, f"{loaded.name} has random weights: accuracies only show whether strategies agree.")
    return notes


def run_probe(
    loaded: LoadedModel,
    data: LabelledTexts,
    strategies: str | Sequence[str] | None = None,
    layer: int | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    progress: ProbeProgress | None = None,
    feature_cache: FeatureCache | None = None,
    pooling: Pooling = DEFAULT_POOLING,
    lm_head: bool | None = None,
) -> ProbeReport:
    """Train and score a probe per strategy (``single`` is always included) at one layer on one
    split; see the module docstring. :func:`~extraction.probing.sweep.run_probe_sweep` does this for
    many layers and seeds.

    ``feature_cache``: a dict this function reads and fills, so that a later run on the same
    model and data extracts only strategies (or layers, batch sizes) it has not seen. The
    caller must use one dict per (model, data set): the keys do not name them. ``pooling``:
    ``last`` (the last real token's state) or ``mean`` (the mean of the text's tokens' states,
    as each strategy's layout pools them); ``lm_head`` accuracy is measured under ``last`` only, when
    ``lm_head`` says (default: only when ``layer`` is the last; :func:`.lm_head.probe_lm_head`): a
    probe of a middle layer alone runs the blocks up to it and says lm_head was not run.
    """
    names = check_probe_options(strategies, data, test_fraction, batch_size)
    num_layers = loaded.num_hidden_layers
    layer = resolve_layer(layer, num_layers)
    labels = data.label_indices
    train_indices, test_indices = stratified_split(labels, test_fraction, seed)
    tokenized = tokenize_texts(loaded.tokenizer, data.texts, max_tokens=loaded.context_length)
    token_ids, lm_head_note = probe_lm_head(loaded.tokenizer, data.classes, pooling, lm_head, [layer], num_layers + 1)
    kept = [layer, num_layers] if token_ids is not None else [layer]  # the probed layer and the final one for lm_head
    states = strategy_states(
        loaded, tokenized, names, kept, batch_size, max_batch_tokens, progress, feature_cache, pooling
    )
    features = {name: states[name].at(layer) for name in names}  # (N, d) each
    scores = score_layer(features, labels, train_indices, test_indices, seed)
    results = {
        name: _strategy_probe(loaded, name, states[name], features, scores[name], labels, test_indices, token_ids)
        for name in names
    }
    return ProbeReport(
        model=loaded.name,
        model_description=loaded.description,
        is_random=loaded.is_random,
        layer=layer,
        num_layers=num_layers,
        data_source=data.source,
        classes=data.classes,
        num_texts=len(data),
        train_indices=train_indices,
        test_indices=test_indices,
        test_labels=labels[test_indices],
        seed=seed,
        test_fraction=test_fraction,
        batch_size=batch_size,
        strategies=results,
        lm_head_note=lm_head_note,
        notes=probe_notes(loaded, tokenized.truncation_note),
        pooling=pooling,
    )


def check_probe_options(
    strategies: str | Sequence[str] | None, data: LabelledTexts, test_fraction: float, batch_size: int
) -> list[str]:
    """The strategies' names (``single`` included); a ``ValueError`` naming what is allowed for a
    bad strategy, data set, test fraction or batch size. The checks a probe run and a sweep share."""
    names = parse_strategy_names(strategies)
    check_labelled(data, test_fraction)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    return names


def _strategy_probe(
    loaded: LoadedModel,
    name: str,
    states: StrategyStates,
    features: dict[str, np.ndarray],
    scores: ProbeScores,
    labels: np.ndarray,
    test_indices: np.ndarray,
    token_ids: list[int] | None,
) -> StrategyProbe:
    """One strategy's result: its probe scores, how many of its test states are corrupted, and the
    zero-shot ``lm_head`` accuracy on its final-layer test states (None without label tokens)."""
    lm_head_accuracy = lm_head_predictions = None
    if token_ids is not None:
        final = states.at(loaded.num_hidden_layers)  # (N, d)
        lm_head_predictions = lm_head_label_predictions(loaded, final, token_ids)[test_indices]  # (n_test,)
        lm_head_accuracy = accuracy(lm_head_predictions, labels[test_indices])
    logger.info(
        "%s: probe %.3f on its own test features, %.3f on single's", name, scores.accuracy_same, scores.accuracy_single
    )
    return StrategyProbe(
        name=name,
        scores=scores,
        features=features[name],
        corrupted_test_fraction=corrupted_fraction(features[name][test_indices], features[REFERENCE][test_indices]),
        lm_head_accuracy=lm_head_accuracy,
        lm_head_predictions=lm_head_predictions,
        extraction_seconds=states.seconds,
        from_cache=states.from_cache,
    )


__all__ = [
    # re-exported from extraction.probing.labelled for pages/5_Probe.py
    "BUILTIN_DATASETS",
    "DEFAULT_DATASET",
    "DEFAULT_TEST_FRACTION",
    "MIN_ROWS_PER_CLASS",
    "LabelledTexts",
    "builtin_dataset",
    "check_labelled",
    "parse_labelled_csv",
    # re-exported from extraction.probing.fit
    "DEFAULT_C",
    "DEFAULT_SEED",
    "MAX_ITER",
    "ProbeScores",
    "accuracy",
    "fit_and_score",
    "make_probe",
    "stratified_split",
    # re-exported from extraction.probing.lm_head
    "label_token_ids",
    "lm_head_label_predictions",
    "lm_head_labels",
    # this module
    "GAP_EXPLANATION",
    "FeatureCache",
    "ProbeProgress",
    "ProbeReport",
    "StrategyProbe",
    "check_probe_options",
    "corrupted_fraction",
    "probe_notes",
    "resolve_layer",
    "run_probe",
    "score_layer",
]
