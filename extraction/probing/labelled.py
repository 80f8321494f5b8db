"""Labelled texts for the probe: reading and checking a labelled CSV (``text`` and ``label``
columns), and the built-in sets shipped in ``extraction/data`` (:data:`BUILTIN_DATASETS`:
``sentiment``, the reviews, and ``tense``, a harder past/future set; docs/datasets.md says
how each was made)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ..texts import decode_bytes

#: Share of each class held out for testing.
DEFAULT_TEST_FRACTION = 0.25
#: Each class needs this many rows: at least one in the test split and several to train on.
MIN_ROWS_PER_CLASS = 4


@dataclass(frozen=True)
class BuiltinDataset:
    """A labelled set shipped in ``extraction/data``, written by its generator script there."""

    file: str  # the CSV in extraction/data
    generator: str  # the script in extraction/data that writes it
    description: str  # one sentence for UIs and --help


#: The built-in labelled sets, by the name ``probe --dataset`` and the Probe page use.
BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "sentiment": BuiltinDataset(
        "sentiment_demo.csv",
        "generate_sentiment_demo.py",
        "200 short product, movie and restaurant reviews written for this project, ending in "
        "' Sentiment:', labelled ' positive' / ' negative' (balanced, 6 to 77 tokens)",
    ),
    "tense": BuiltinDataset(
        "tense_demo.csv",
        "generate_tense_demo.py",
        "400 one-event texts written for this project, ending in ' Tense:', labelled ' past' / ' future' by "
        "the tense of the event's main clause, with time adverbs, clauses and present-tense context that "
        "point either way (balanced, 7 to 72 tokens)",
    ),
}
#: The set used when none is named: the reviews (half the texts of `tense`; README, "Probe impact", says why).
DEFAULT_DATASET = "sentiment"


@dataclass
class LabelledTexts:
    """Texts with one label each (``N`` rows). Labels are kept exactly as written, leading
    spaces included: ``" positive"`` is the token a model predicts after ``"Sentiment:"``."""

    texts: list[str]
    labels: list[str]
    source: str = "input"

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{self.source}: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted: class ``k`` of the probe is ``classes[k]``."""
        return sorted(set(self.labels))

    @property
    def label_indices(self) -> np.ndarray:
        """(N,) int: the class index of every row."""
        index = {label: k for k, label in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    def class_counts(self) -> dict[str, int]:
        return {label: self.labels.count(label) for label in self.classes}

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"text": self.texts, "label": self.labels})


def parse_labelled_csv(content: str, source: str = "input") -> LabelledTexts:
    """Parse CSV text with ``text`` and ``label`` columns (other columns are ignored).

    Raises ``ValueError`` when a column is missing, a row has an empty text or label, or
    there are no rows; see :func:`check_labelled` for the checks on the classes.
    """
    reader = csv.DictReader(io.StringIO(content))
    columns = reader.fieldnames or []
    missing = [name for name in ("text", "label") if name not in columns]
    if missing:
        found = ", ".join(repr(c) for c in columns) or "none"
        raise ValueError(
            f"{source}: missing column(s) {', '.join(missing)}; a labelled CSV needs 'text' and 'label' "
            f"columns (found: {found})"
        )
    texts: list[str] = []
    labels: list[str] = []
    for number, row in enumerate(reader, start=2):  # line 1 is the header
        text, label = row.get("text"), row.get("label")
        if text is None or not text.strip():
            raise ValueError(f"{source}: row {number} has an empty text")
        if label is None or not label.strip():
            raise ValueError(f"{source}: row {number} has an empty label")
        texts.append(text)
        labels.append(label)
    if not texts:
        raise ValueError(f"{source}: has a header but no rows")
    return LabelledTexts(texts, labels, source)


def read_labelled_csv(path: str | Path) -> LabelledTexts:
    """Read a labelled ``.csv`` file (UTF-8); see :func:`parse_labelled_csv`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path}: a labelled data set must be a .csv file with text and label columns")
    return parse_labelled_csv(decode_bytes(path.read_bytes(), str(path)), str(path))


def builtin_dataset(name: str = DEFAULT_DATASET) -> LabelledTexts:
    """The built-in labelled set ``name`` (a key of :data:`BUILTIN_DATASETS`), read from
    ``extraction/data``; ``ValueError`` for an unknown name or a set whose CSV is not installed."""
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in data set {name!r}; valid: {', '.join(BUILTIN_DATASETS)}")
    dataset = BUILTIN_DATASETS[name]
    path = resources.files("extraction").joinpath("data", dataset.file)
    if not path.is_file():
        raise ValueError(
            f"built-in data set {name!r} is not installed: extraction/data/{dataset.file} is missing "
            f"(run extraction/data/{dataset.generator})"
        )
    return parse_labelled_csv(path.read_text(encoding="utf-8"), f"built-in {dataset.file}")


def check_labelled(data: LabelledTexts, test_fraction: float = DEFAULT_TEST_FRACTION) -> None:
    """``ValueError`` unless ``data`` can be split for a probe: at least two classes, and every
    class with at least :data:`MIN_ROWS_PER_CLASS` rows."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    counts = data.class_counts()
    if len(counts) < 2:
        only = next(iter(counts), "")
        raise ValueError(f"{data.source}: only one class ({only!r}); a probe needs at least two different labels")
    small = {label: n for label, n in counts.items() if n < MIN_ROWS_PER_CLASS}
    if small:
        listed = ", ".join(f"{label!r}: {n}" for label, n in small.items())
        raise ValueError(
            f"{data.source}: too few rows for a stratified train/test split ({listed}); every class needs at "
            f"least {MIN_ROWS_PER_CLASS}"
        )


__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_DATASET",
    "BuiltinDataset",
    "DEFAULT_TEST_FRACTION",
    "MIN_ROWS_PER_CLASS",
    "LabelledTexts",
    "builtin_dataset",
    "check_labelled",
    "parse_labelled_csv",
    "read_labelled_csv",
]
