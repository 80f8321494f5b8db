"""Train a probe and score it on two versions of the same test texts (pure: feature arrays in,
scores out, no model): the stratified split, the standardized logistic regression, and
:func:`fit_and_score`, the step :mod:`extraction.probing.probe` and :mod:`extraction.probing.sweep` share."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .labelled import DEFAULT_TEST_FRACTION

logger = logging.getLogger(__name__)

DEFAULT_SEED = 0
DEFAULT_C = 1.0  # inverse L2 strength of the logistic regression (scikit-learn's default)
MAX_ITER = 5000  # lbfgs iterations; standardized features converge well before this


# --- the split ---------------------------------------------------------------------------


def stratified_split(
    labels: Sequence[int] | np.ndarray, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """(train_indices, test_indices), both sorted, disjoint and covering every row.

    Per class with ``n`` rows, ``round(n * test_fraction)`` of them (at least 1 and at most
    ``n - 1``) go to the test split, chosen by a permutation from ``numpy``'s generator
    seeded with ``seed``: the same labels and seed always give the same split.
    """
    labels = np.asarray(labels)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            raise ValueError(f"class {label!r} has {len(members)} row(s); a stratified split needs at least 2")
        take = min(max(1, round(len(members) * test_fraction)), len(members) - 1)
        test.append(rng.permutation(members)[:take])
    test_indices = np.sort(np.concatenate(test))
    train_indices = np.setdiff1d(np.arange(len(labels)), test_indices)
    return train_indices, test_indices


# --- the probe (pure) ------------------------------------------------------------------


def make_probe(seed: int = DEFAULT_SEED, C: float = DEFAULT_C) -> Pipeline:
    """A standardized logistic regression: ``StandardScaler`` then ``LogisticRegression``
    (L2, lbfgs). Standardizing matters: hidden-state dimensions differ in scale by orders
    of magnitude (a few "massive activation" dimensions dominate raw features)."""
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("logistic", LogisticRegression(C=C, max_iter=MAX_ITER, random_state=seed)),
        ]
    )


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """``mean(predictions == labels)``."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {predictions.shape} and {labels.shape}")
    return float(np.mean(predictions == labels))


@dataclass
class ProbeScores:
    """A probe fitted on train features and scored on two versions of the same test rows."""

    probe: Pipeline = field(repr=False)  # the fitted StandardScaler + LogisticRegression
    train_accuracy: float  # on its own training features
    accuracy_same: float  # on the test features extracted like the training ones
    accuracy_single: float  # on the single-sample test features of the same texts
    predictions_same: np.ndarray = field(repr=False)  # (n_test,) class index
    predictions_single: np.ndarray = field(repr=False)  # (n_test,) class index

    @property
    def gap(self) -> float:
        """``accuracy_same - accuracy_single``: how much validation overstates inference."""
        return self.accuracy_same - self.accuracy_single

    @property
    def prediction_flips(self) -> float:
        """Fraction of test texts whose prediction changes between the two feature sets."""
        return float(np.mean(self.predictions_same != self.predictions_single))


def fit_and_score(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features_same: np.ndarray,
    test_features_single: np.ndarray,
    test_labels: np.ndarray,
    seed: int = DEFAULT_SEED,
    C: float = DEFAULT_C,
) -> ProbeScores:
    """Fit :func:`make_probe` on ``(train_features (n_train, d), train_labels (n_train,))``, then
    score it on ``test_features_same (n_test, d)`` and ``test_features_single (n_test, d)``
    against ``test_labels (n_test,)``. Pure: no model involved, same inputs -> same scores."""
    train_features = np.asarray(train_features, dtype=np.float64)
    same = np.asarray(test_features_same, dtype=np.float64)
    single = np.asarray(test_features_single, dtype=np.float64)
    if same.shape != single.shape or same.shape[1:] != train_features.shape[1:]:
        raise ValueError(
            f"feature shapes disagree: train {train_features.shape}, same {same.shape}, single {single.shape}"
        )
    for name, array in (("train", train_features), ("same", same), ("single", single)):
        if not np.isfinite(array).all():
            raise ValueError(f"{name} features contain NaN or inf; a probe cannot be trained or scored on them")
    probe = make_probe(seed, C)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(train_features, train_labels)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.warning("the probe's logistic regression did not converge in %d iterations", MAX_ITER)
    predictions_same = probe.predict(same)
    predictions_single = probe.predict(single)
    return ProbeScores(
        probe=probe,
        train_accuracy=accuracy(probe.predict(train_features), np.asarray(train_labels)),
        accuracy_same=accuracy(predictions_same, np.asarray(test_labels)),
        accuracy_single=accuracy(predictions_single, np.asarray(test_labels)),
        predictions_same=predictions_same,
        predictions_single=predictions_single,
    )
