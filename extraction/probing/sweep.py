"""Probe impact across layers, over several seeded splits, with 95% intervals.

:func:`run_probe_sweep` extracts each strategy's states once at every layer asked (one pass
per strategy: the forward pass computes every layer), then, for every layer and every seed
``s`` of ``first_seed .. first_seed + K - 1``, splits the texts with
:func:`~extraction.probing.probe.stratified_split` (seed ``s``, the same split for every strategy and
layer) and trains and scores a probe per strategy with
:func:`~extraction.probing.probe.score_layer`, the very step of a single-layer
:func:`~extraction.probing.probe.run_probe` (so the sweep at layer ``k`` and seed ``s`` gives the
numbers of ``run_probe(layer=k, seed=s)``).

Per layer and strategy it reports the mean over the splits of ``accuracy_same``,
``accuracy_single`` and ``gap = accuracy_same - accuracy_single``, and the gap's 95% interval
(:func:`~extraction.probing.interval.mean_interval`, a t-interval over the K splits). Where every label is one token,
the zero-shot ``lm_head`` accuracy on the strategy's final-layer test states is compared the
same way with ``lm_head`` on single-sample final states: ``lm_head`` reads the last layer
only, so those numbers exist for the last layer only, and by default only when the last layer is
probed (``lm_head=True`` adds it): a sweep of middle layers stops each pass after the deepest one
and ``lm_head_note`` says "lm_head not run: layers up to N asked for".

What the interval means: how much the mean gap would move with other random splits of
*this* data set. The K splits share texts, so they are not independent samples of the
world; the interval is not a population confidence interval, and it is narrower than one.
It does answer the question a single split cannot: is a gap of a few points more than the
luck of which texts landed in the test split?

The interval itself lives in :mod:`.probe_interval`; what a sweep says in sentences in
:mod:`.probe_findings`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from ..pooling import DEFAULT_POOLING, Pooling
from ..storage.export import describe_layers, parse_layers
from ..strategies import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, REFERENCE
from ..texts import tokenize_texts
from .features import FeatureCache, ProbeProgress, StrategyStates, strategy_states
from .findings import layer_finding, lm_head_finding, strategy_finding
from .fit import DEFAULT_SEED, accuracy, stratified_split
from .interval import CONFIDENCE, Interval, mean_interval
from .labelled import DEFAULT_TEST_FRACTION, LabelledTexts
from .lm_head import lm_head_label_predictions, probe_lm_head
from .probe import check_probe_options, corrupted_fraction, probe_notes, score_layer

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

#: Seeded splits per layer when none is given: enough for a t-interval, few enough for a CPU.
DEFAULT_SEEDS = 5
#: Where lm_head applies, said wherever its numbers are shown.
LM_HEAD_SCOPE = (
    "lm_head is applied to the last layer's states only (hidden_states[-1], already after the final norm), "
    "so its accuracy and gap exist for the last layer only"
)


# --- the result --------------------------------------------------------------------------------


@dataclass
class ProbeSweep:
    """Probes per layer, strategy and seeded split (L layers, S strategies, K seeds).

    Arrays are indexed ``[layer position, strategy position, seed position]`` in the order of
    ``layers``, ``strategies`` and ``seeds``.
    """

    model: str
    model_description: str
    is_random: bool
    num_layers: int  # transformer blocks of the model (hidden_states 0..num_layers)
    layers: list[int]  # (L,) hidden_states indices probed, ascending
    strategies: list[str]  # (S,) the reference ("single") first
    seeds: list[int]  # (K,) split seeds
    data_source: str
    classes: list[str]
    num_texts: int
    num_test: int  # test texts of every split (stratified: the same count for every seed)
    test_fraction: float
    batch_size: int
    accuracy_same: np.ndarray = field(repr=False)  # (L, S, K) on the strategy's own test states
    accuracy_single: np.ndarray = field(repr=False)  # (L, S, K) on single-sample test states
    train_accuracy: np.ndarray = field(repr=False)  # (L, S, K)
    prediction_flips: np.ndarray = field(repr=False)  # (L, S, K) test predictions that change
    corrupted: np.ndarray = field(repr=False)  # (L, S) fraction of all texts with corrupted states
    majority_rate: float  # accuracy of always predicting the most frequent test class
    lm_head_accuracy: np.ndarray | None = field(default=None, repr=False)  # (S, K), last layer only
    lm_head_note: str | None = None  # why there is no lm_head accuracy, if there is none
    extraction_seconds: dict[str, float] = field(default_factory=dict)
    from_cache: list[str] = field(default_factory=list)  # strategies whose states an earlier run extracted
    fit_seconds: float = 0.0  # training and scoring every probe
    seconds: float = 0.0  # the whole sweep: extraction (or cache) and probes
    notes: list[str] = field(default_factory=list)
    pooling: Pooling = DEFAULT_POOLING  # how each text's state was pooled (last or mean)

    # --- per layer and strategy -----------------------------------------------------------------

    def _position(self, layer: int, strategy: str) -> tuple[int, int]:
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not probed (probed: {', '.join(map(str, self.layers))})")
        if strategy not in self.strategies:
            raise ValueError(f"strategy {strategy!r} was not probed (probed: {', '.join(self.strategies)})")
        return self.layers.index(layer), self.strategies.index(strategy)

    def gaps(self, layer: int, strategy: str) -> np.ndarray:
        """(K,) ``accuracy_same - accuracy_single`` of each split."""
        i, j = self._position(layer, strategy)
        return self.accuracy_same[i, j] - self.accuracy_single[i, j]

    def gap(self, layer: int, strategy: str) -> Interval:
        """The mean gap over the splits and its interval (:func:`mean_interval`)."""
        return mean_interval(self.gaps(layer, strategy))

    @property
    def lm_head_layer(self) -> int | None:
        """The layer lm_head numbers belong to (the last), or None without them."""
        return self.num_layers if self.lm_head_accuracy is not None else None

    def lm_head_gap(self, strategy: str) -> Interval | None:
        """``lm_head`` accuracy on the strategy's final states minus on single-sample final
        states, over the splits (None without lm_head numbers)."""
        if self.lm_head_accuracy is None:
            return None
        j = self.strategies.index(strategy)
        return mean_interval(self.lm_head_accuracy[j] - self.lm_head_accuracy[self.strategies.index(REFERENCE)])

    def largest_gap_layer(self, strategy: str) -> int:
        """The layer whose mean gap is largest in size (either sign); the first such layer on ties."""
        means = [abs(self.gap(layer, strategy).mean) for layer in self.layers]
        return self.layers[int(np.argmax(means))]

    @property
    def focus_layer(self) -> int:
        """The layer to show first: where validation overstates inference most (the largest
        significant positive gap of any strategy); else where any significant gap is largest in
        size; else where any gap is; else (no gap anywhere) the last layer probed."""
        gaps = [
            (self.gap(layer, name), layer) for name in self.strategies if name != REFERENCE for layer in self.layers
        ]
        for pool in (
            [(gap.mean, layer) for gap, layer in gaps if gap.significant and gap.mean > 0],
            [(abs(gap.mean), layer) for gap, layer in gaps if gap.significant],
            [(abs(gap.mean), layer) for gap, layer in gaps if gap.mean != 0.0],
        ):
            if pool:
                return max(pool, key=lambda item: (item[0], -item[1]))[1]
        return self.layers[-1]

    def significant_layers(self, strategy: str) -> list[int]:
        """Layers whose gap interval excludes 0."""
        return [layer for layer in self.layers if self.gap(layer, strategy).significant]

    # --- tables ---------------------------------------------------------------------------------

    def _record(self, layer: int, strategy: str) -> dict:
        i, j = self._position(layer, strategy)
        gap = self.gap(layer, strategy)
        record = {
            "accuracy_same": float(self.accuracy_same[i, j].mean()),
            "accuracy_single": float(self.accuracy_single[i, j].mean()),
            "gap": gap.mean,
            "gap_low": gap.low,
            "gap_high": gap.high,
            "significant": gap.significant,
            "gaps": [float(value) for value in self.gaps(layer, strategy)],
            "train_accuracy": float(self.train_accuracy[i, j].mean()),
            "prediction_flips": float(self.prediction_flips[i, j].mean()),
            "corrupted_fraction": float(self.corrupted[i, j]),
        }
        lm_head = self.lm_head_gap(strategy)
        if lm_head is not None and layer == self.lm_head_layer:
            record.update(
                lm_head_accuracy=float(self.lm_head_accuracy[j].mean()),
                lm_head_gap=lm_head.mean,
                lm_head_gap_low=lm_head.low,
                lm_head_gap_high=lm_head.high,
            )
        return record

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, strategy): the means over the splits, ``gap_low``/``gap_high`` (the
        95% interval; NaN with one seed), ``significant``, ``corrupted_fraction``, and the
        ``lm_head_*`` columns (NaN except at the last layer)."""
        rows = []
        for layer in self.layers:
            for strategy in self.strategies:
                record = self._record(layer, strategy)
                record.pop("gaps")
                rows.append({"layer": layer, "strategy": strategy, **record})
        frame = pd.DataFrame(rows)
        for column in ("lm_head_accuracy", "lm_head_gap", "lm_head_gap_low", "lm_head_gap_high"):
            if column not in frame:
                frame[column] = np.nan
        return frame.astype({"gap_low": float, "gap_high": float})

    def layer_frame(self, layer: int) -> pd.DataFrame:
        """The rows of :meth:`to_frame` at ``layer``, one per strategy."""
        self._position(layer, REFERENCE)
        frame = self.to_frame()
        return frame[frame["layer"] == layer].drop(columns="layer").reset_index(drop=True)

    def to_dict(self) -> dict:
        """JSON-ready (the ``probe --json`` output): ``{"layers": {"<layer>": {"<strategy>":
        {"accuracy_same", "accuracy_single", "gap", "gap_low", "gap_high", ...}}}, "seeds": K, ...}``,
        accuracies and gaps as fractions."""
        return {
            "model": self.model,
            "random_weights": self.is_random,
            "num_layers": self.num_layers,
            "data": self.data_source,
            "classes": self.classes,
            "num_texts": self.num_texts,
            "num_test": self.num_test,
            "test_fraction": self.test_fraction,
            "batch_size": self.batch_size,
            "pooling": self.pooling,
            "seeds": len(self.seeds),
            "seed_values": self.seeds,
            "confidence": CONFIDENCE,
            "interval": "t-interval over the seeded splits: mean ± t(0.975, K-1) · s / sqrt(K)",
            "majority_rate": self.majority_rate,
            "lm_head_layer": self.lm_head_layer,
            "lm_head_note": self.lm_head_note or LM_HEAD_SCOPE,
            "seconds": self.seconds,
            "fit_seconds": self.fit_seconds,
            "extraction_seconds": self.extraction_seconds,
            "from_cache": self.from_cache,
            "notes": self.notes,
            "findings": self.findings(),
            "layers": {
                str(layer): {strategy: self._record(layer, strategy) for strategy in self.strategies}
                for layer in self.layers
            },
        }

    # --- sentences --------------------------------------------------------------------------------

    def describe(self) -> str:
        """What was probed and how long it took, in one sentence."""
        extraction = sum(self.extraction_seconds.values())
        return (
            f"{self.data_source}, {self.num_texts} texts, classes {', '.join(repr(c) for c in self.classes)}; "
            f"{describe_layers(self.layers)} of 0..{self.num_layers}; {len(self.seeds)} stratified splits of "
            f"{self.num_test} test texts; batch size {self.batch_size}. The sweep took {self.seconds:.0f} s "
            f"(extraction {extraction:.0f} s{', partly from earlier runs' if self.from_cache else ''}; "
            f"{self.accuracy_same.size} probes in {self.fit_seconds:.0f} s)."
        )

    def findings(self) -> list[str]:
        """What the data say: one sentence per strategy (``single`` is the reference and has
        none), then one on ``lm_head``."""
        sentences = [strategy_finding(self, name) for name in self.strategies if name != REFERENCE]
        lm_head = lm_head_finding(self)
        return sentences + ([lm_head] if lm_head else [])

    def layer_findings(self, layer: int) -> list[str]:
        """One sentence per strategy on its gap at ``layer``."""
        return [layer_finding(self, layer, name) for name in self.strategies if name != REFERENCE]


# --- the sweep ---------------------------------------------------------------------------------


class SweepScores(NamedTuple):
    """The scores of every probe of a sweep, each ``(L, S, K)`` (layers, strategies, seeds)."""

    accuracy_same: np.ndarray
    accuracy_single: np.ndarray
    train_accuracy: np.ndarray
    prediction_flips: np.ndarray


def score_sweep(
    states: dict[str, StrategyStates],
    labels: np.ndarray,
    layers: Sequence[int],
    seeds: Sequence[int],
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> SweepScores:
    """For every layer of ``layers`` and seed of ``seeds``: split ``labels (N,)`` with
    :func:`~extraction.probing.probe.stratified_split` (that seed) and :func:`~extraction.probing.probe.score_layer`
    every strategy's states there (``states[name].at(layer)``, ``(N, d)``; ``states`` has the
    reference, ``single``). Pure: no model involved. Strategies in the order of ``states``."""
    names = list(states)
    shape = (len(layers), len(names), len(seeds))  # (L, S, K)
    same, single, train, flips = (np.zeros(shape) for _ in range(4))
    splits = [stratified_split(labels, test_fraction, seed) for seed in seeds]
    for i, layer in enumerate(layers):
        features = {name: states[name].at(layer) for name in names}  # (N, d) each
        for k, (seed, (train_indices, test_indices)) in enumerate(zip(seeds, splits, strict=True)):
            scores = score_layer(features, labels, train_indices, test_indices, seed)
            for j, name in enumerate(names):
                same[i, j, k] = scores[name].accuracy_same
                single[i, j, k] = scores[name].accuracy_single
                train[i, j, k] = scores[name].train_accuracy
                flips[i, j, k] = scores[name].prediction_flips
        logger.info("layer %d: %d probes trained", layer, len(names) * len(seeds))
    return SweepScores(same, single, train, flips)


def corrupted_fractions(states: dict[str, StrategyStates], layers: Sequence[int]) -> np.ndarray:
    """(L, S) the fraction of all texts whose states are corrupted against the reference's, per layer of
    ``layers`` and strategy of ``states`` (:func:`~extraction.probing.probe.corrupted_fraction`). Pure."""
    reference = states[REFERENCE]
    return np.array(
        [[corrupted_fraction(states[name].at(layer), reference.at(layer)) for name in states] for layer in layers]
    )  # (L, S)


def _lm_head_accuracy(
    loaded: LoadedModel,
    states: dict[str, StrategyStates],
    token_ids: list[int],
    labels: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """(S, K) zero-shot ``lm_head`` accuracy on each strategy's final-layer states, on each split's test texts."""
    predictions = [
        lm_head_label_predictions(loaded, states[name].at(loaded.num_hidden_layers), token_ids) for name in states
    ]
    return np.array(
        [[accuracy(predicted[test], labels[test]) for _, test in splits] for predicted in predictions]
    )  # (S, K)


def run_probe_sweep(
    loaded: LoadedModel,
    data: LabelledTexts,
    strategies: str | Sequence[str] | None = None,
    layers: str | Sequence[int] | None = None,
    seeds: int = DEFAULT_SEEDS,
    first_seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    progress: ProbeProgress | None = None,
    feature_cache: FeatureCache | None = None,
    pooling: Pooling = DEFAULT_POOLING,
    lm_head: bool | None = None,
) -> ProbeSweep:
    """Probes at every layer of ``layers`` (``"all"``/None, ``"3,9,-1"`` or a list, read by
    :func:`~extraction.storage.export.parse_layers`; negative counts from the end) over ``seeds``
    seeded splits (seeds ``first_seed .. first_seed + seeds - 1``); see the module docstring.
    ``feature_cache`` as in :func:`~extraction.probing.probe.run_probe`. ``pooling``: each text's state is
    its last real token's (``last``) or the mean of its tokens' (``mean``), as each strategy's
    layout pools them; ``lm_head`` accuracy is measured under ``last`` only, on the final layer, when
    ``lm_head`` says (default: only when the last layer is probed; :func:`.lm_head.probe_lm_head`),
    else each pass stops after the deepest layer probed and ``lm_head_note`` says it was not run."""
    start = time.perf_counter()
    names = check_probe_options(strategies, data, test_fraction, batch_size)
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1 (2 or more for an interval), got {seeds}")
    num_layers = loaded.num_hidden_layers
    probed = sorted(parse_layers(layers, num_layers + 1))  # hidden_states indices, ascending
    seed_values = list(range(first_seed, first_seed + seeds))
    labels = data.label_indices
    tokenized = tokenize_texts(loaded.tokenizer, data.texts, max_tokens=loaded.context_length)
    token_ids, lm_head_note = probe_lm_head(loaded.tokenizer, data.classes, pooling, lm_head, probed, num_layers + 1)
    kept = sorted({*probed, num_layers} if token_ids is not None else set(probed))  # the final layer for lm_head
    states = strategy_states(
        loaded, tokenized, names, kept, batch_size, max_batch_tokens, progress, feature_cache, pooling
    )

    fit_start = time.perf_counter()
    splits = [stratified_split(labels, test_fraction, seed) for seed in seed_values]
    scores = score_sweep(states, labels, probed, seed_values, test_fraction)
    corrupted = corrupted_fractions(states, probed)
    lm_head = None if token_ids is None else _lm_head_accuracy(loaded, states, token_ids, labels, splits)
    test_counts = np.bincount(labels[splits[0][1]])
    return ProbeSweep(
        model=loaded.name,
        model_description=loaded.description,
        is_random=loaded.is_random,
        num_layers=num_layers,
        layers=probed,
        strategies=names,
        seeds=seed_values,
        data_source=data.source,
        classes=data.classes,
        num_texts=len(data),
        num_test=int(len(splits[0][1])),
        test_fraction=test_fraction,
        batch_size=batch_size,
        accuracy_same=scores.accuracy_same,
        accuracy_single=scores.accuracy_single,
        train_accuracy=scores.train_accuracy,
        prediction_flips=scores.prediction_flips,
        corrupted=corrupted,
        majority_rate=float(test_counts.max() / test_counts.sum()),
        lm_head_accuracy=lm_head,
        lm_head_note=lm_head_note,
        extraction_seconds={name: states[name].seconds for name in names},
        from_cache=[name for name in names if states[name].from_cache],
        fit_seconds=time.perf_counter() - fit_start,
        seconds=time.perf_counter() - start,
        notes=probe_notes(loaded, tokenized.truncation_note),
        pooling=pooling,
    )


__all__ = [
    "CONFIDENCE",
    "DEFAULT_SEEDS",
    "LM_HEAD_SCOPE",
    "Interval",
    "ProbeSweep",
    "SweepScores",
    "corrupted_fractions",
    "mean_interval",
    "run_probe_sweep",
    "score_sweep",
]
