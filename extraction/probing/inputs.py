"""The inputs of one dashboard probe run: the labelled texts (a built-in set by name, or an
uploaded CSV), checked before any model is loaded, the default strategies and batch size, and a digest
naming a data set's content (states extracted for one data set are reused only for the same content).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from ..texts import decode_bytes
from . import probe

#: More rows than this are refused by the dashboard: the command line handles any number.
MAX_PROBE_TEXTS = 2000
#: The dashboard's default strategies: the classic bug, its fix, and packing without a mask. The
#: two naive ones are the strategies that corrupt SmolLM2 in float32, and every extra strategy
#: costs one more pass over the data.
DEFAULT_STRATEGIES = ["right-naive", "right", "packed-naive"]
DEFAULT_BATCH_SIZE = 8
#: Help of the dashboard's CSV upload.
UPLOAD_HELP = (
    f"At least two labels, each on at least {probe.MIN_ROWS_PER_CLASS} rows; at most {MAX_PROBE_TEXTS} rows. Labels "
    "are used as written: ' positive' with a leading space is the single token a model predicts after "
    "'Sentiment:', so the zero-shot lm_head accuracy can be computed."
)


class NamedUpload(Protocol):
    """An uploaded file: its name and its bytes (a Streamlit ``UploadedFile`` is one)."""

    name: str

    def getvalue(self) -> bytes: ...


def labelled_texts(
    use_builtin: bool, upload: NamedUpload | None, dataset: str = probe.DEFAULT_DATASET
) -> probe.LabelledTexts:
    """The built-in set ``dataset``, or the uploaded CSV; ``ValueError`` saying what is wrong otherwise."""
    if use_builtin:
        # Looked up on the module at call time, so a replaced builtin_dataset (tests) is used.
        return probe.builtin_dataset(dataset)
    if upload is None:
        raise ValueError("no file uploaded: upload a .csv with text and label columns, or use the built-in set")
    name = str(upload.name)
    return probe.parse_labelled_csv(decode_bytes(upload.getvalue(), name), name)


def checked_probe_inputs(
    strategies: Sequence[str],
    use_builtin: bool,
    upload: NamedUpload | None,
    max_rows: int = MAX_PROBE_TEXTS,
    dataset: str = probe.DEFAULT_DATASET,
) -> probe.LabelledTexts:
    """The labelled texts of a run, checked in the order a user fixes them: a strategy chosen,
    a readable file (:func:`labelled_texts`), a probe-able set (:func:`~extraction.probing.probe.check_labelled`),
    at most ``max_rows`` rows. Raises ``ValueError`` (``TextsError`` for undecodable files)."""
    if not strategies:
        raise ValueError("no strategy chosen: pick at least one strategy to compare with single")
    data = labelled_texts(use_builtin, upload, dataset)
    probe.check_labelled(data)
    if len(data) > max_rows:
        raise ValueError(
            f"{len(data)} rows: the dashboard takes at most {max_rows}; for more, use "
            "`python -m extraction probe --data FILE.csv --json out.json`"
        )
    return data


def data_digest(data: probe.LabelledTexts) -> str:
    """Identifies a data set's content: sha256 over every (text, label) pair, in order."""
    digest = hashlib.sha256()
    for text, label in zip(data.texts, data.labels, strict=True):
        digest.update(text.encode() + b"\x1f" + label.encode() + b"\x1e")
    return digest.hexdigest()
