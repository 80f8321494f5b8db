"""Extract hidden states correctly, to a safetensors file that says how it was made.

:func:`extract_to_file` writes ``hidden_states`` of shape ``(N, L, d)`` (row i is the
last-real-token state of text i at each of the L layers asked for, in the
``hidden_states`` numbering) with string metadata: model, strategy, layers, dtypes,
library versions, the SHA-256 of the texts (:func:`~extraction.texts.texts_sha256`) and the
verification result.

* ``strategy="auto"`` (:func:`~extraction.choose.choose_strategy`) takes the cheapest
  layout, by a cost model of these texts' passes and padding, that is exact on this model:
  exactness is checked on a few probe texts (or remembered from an earlier run with the
  same model, dtype, device, attention and versions). ``single`` is always exact, so there
  is always a choice; the ``-naive`` layouts never are. The probe texts' single-text rows
  are written as they are, not extracted again.
* Memory stays bounded: texts are extracted in chunks of :data:`CHUNK_TEXTS` with
  ``keep_logits=False`` and only the layers asked for, and every chunk's rows go
  straight to disk (:class:`~extraction.safetensors_writer.SafetensorsRowWriter`). Full sequences
  live only for one forward pass.
* ``verify=N`` reads N random rows back from the written file and compares them with
  single-sample extraction (:func:`~extraction.audit.check_rows`); anything but an exact
  verdict raises :class:`VerificationError`.
* The file is written to a temporary name and renamed at the end: an interrupted
  (``KeyboardInterrupt``) or failed run leaves nothing at the target path. An existing
  file is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .audit.check import check_rows, subset
from .choose import AUTO_EXCLUDED, PROBE_TEXTS, StrategyChoice, choose_strategy
from .extract import extract_states
from .safetensors_writer import STORE_DTYPES, SafetensorsRowWriter
from .strategies import DEFAULT_BATCH_SIZE, get_strategy
from .texts import TokenizedTexts, texts_sha256, tokenize_texts
from .verdicts import Verdict

if TYPE_CHECKING:
    from .models import LoadedModel

logger = logging.getLogger(__name__)

TENSOR_NAME = "hidden_states"
FORMAT = "padding-audit hidden states v1"
AUTO = "auto"
AUTO_SAMPLE = PROBE_TEXTS  # texts of different lengths in auto's exactness probe
CHUNK_TEXTS = 512  # texts extracted per step: bounds memory, and sorting/bucketing happen within a chunk
DEFAULT_VERIFY = 8
_VERSIONED = ("torch", "transformers", "tokenizers", "safetensors", "numpy")

#: ``progress(stage, done, total)``; stage is ``"choosing"`` (candidate layouts checked), ``"extracting"`` or
#: ``"verifying"`` (texts).
ExportProgress = Callable[[str, int, int], None]


class VerificationError(ValueError):
    """Re-extracted texts differ from the rows written; nothing is left at the target path."""


@dataclass
class Verification:
    """Rows read back from the written file, measured against single-sample extraction."""

    rows: list[int]  # text indices checked
    min_cosine: float  # over the rows and stored layers
    top1_same: float  # fraction of rows whose lm_head top-1 matches the fresh state's
    verdict: Verdict  # exact / drift / corrupted (the audit's rule)

    @property
    def passed(self) -> bool:
        return self.verdict == "exact"

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "min_cosine": self.min_cosine,
            "top1_same": self.top1_same,
            "verdict": self.verdict,
            "passed": self.passed,
        }


@dataclass
class ExportResult:
    """What :func:`extract_to_file` wrote."""

    path: Path
    strategy: str
    choice: StrategyChoice | None  # None when the strategy was named
    layers: list[int]
    shape: tuple[int, int, int]  # (N, L, d)
    store_dtype: str
    verification: Verification | None  # None when verify=0
    metadata: dict[str, str]
    seconds: float  # extraction and writing, choice and verification excluded

    @property
    def texts_per_second(self) -> float:
        return self.shape[0] / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "strategy": self.strategy,
            "choice": self.choice.to_dict() if self.choice else None,
            "layers": self.layers,
            "shape": list(self.shape),
            "store_dtype": self.store_dtype,
            "verification": self.verification.to_dict() if self.verification else None,
            "seconds": self.seconds,
            "texts_per_second": self.texts_per_second,
        }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def parse_layers(spec: str | Sequence[int] | None, num_states: int) -> list[int]:
    """``"all"``/None -> every hidden state; ``"i,j,..."`` or a list -> those indices
    (negative ones count from the end), validated and deduplicated in the order given."""
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return list(range(num_states))
    if isinstance(spec, str):
        try:
            values = [int(part) for part in spec.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"layers must be 'all' or comma-separated integers, got {spec!r}") from None
    else:
        values = [int(v) for v in spec]
    if not values:
        raise ValueError("no layer named: use 'all' or comma-separated integers")
    for value in values:
        if not -num_states <= value < num_states:
            raise ValueError(f"layer {value} out of range: this model has hidden_states 0..{num_states - 1}")
    return list(dict.fromkeys(v % num_states for v in values))


def describe_layers(layers: Sequence[int]) -> str:
    """``"layers 0..30"`` for a contiguous run of 3 or more, else ``"layer 4"`` / ``"layers 2,5"``."""
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}..{layers[-1]}"
    return ("layer " if len(layers) == 1 else "layers ") + ",".join(map(str, layers))


def base_metadata(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    strategy: str,
    choice: StrategyChoice | None,
    layers: list[int],
    store_dtype: str,
    batch_size: int,
) -> dict[str, str]:
    return {
        "format": FORMAT,
        "row_order": "row i is the i-th input text",
        "convention": (
            "last real token of each text; layers in the hidden_states numbering: 0 = embeddings, "
            "k = output of block k, the last one after the final norm"
        ),
        "model": loaded.name,
        "model_source": loaded.source,
        "model_description": loaded.description,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "stored_dtype": store_dtype,
        "attn_implementation": loaded.attn_implementation,
        "strategy": strategy,
        "strategy_choice": json.dumps(choice.to_dict() if choice else {"chosen": strategy, "named": True}),
        "batch_size": str(batch_size),
        "layers": json.dumps(layers),
        "num_texts": str(len(tokenized)),
        "hidden_size": str(loaded.hidden_size),
        "texts_sha256": texts_sha256(tokenized.texts),
        "truncated_texts": json.dumps([i for i, _ in tokenized.truncated]),
        "versions": json.dumps(library_versions()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def extract_to_file(
    loaded: LoadedModel,
    texts: Sequence[str] | TokenizedTexts,
    out: str | Path,
    layers: str | Sequence[int] | None = None,
    strategy: str = AUTO,
    batch_size: int = DEFAULT_BATCH_SIZE,
    store_dtype: str = "float32",
    verify: int = DEFAULT_VERIFY,
    overwrite: bool = False,
    chunk_texts: int = CHUNK_TEXTS,
    seed: int = 0,
    auto_sample: int = AUTO_SAMPLE,
    progress: ExportProgress | None = None,
) -> ExportResult:
    """Extract the last-real-token states of ``texts`` at ``layers`` (default all) to ``out``
    (a ``.safetensors`` file); see the module docstring."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the output must be a .safetensors file")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --force (overwrite=True) to replace it")
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"unknown store dtype {store_dtype!r}: choose one of {', '.join(STORE_DTYPES)}")
    if batch_size < 1 or chunk_texts < 1:
        raise ValueError(f"batch size and chunk size must be at least 1, got {batch_size} and {chunk_texts}")
    if verify < 0:
        raise ValueError(f"verify must be 0 (off) or a number of texts, got {verify}")
    tokenized = (
        texts
        if isinstance(texts, TokenizedTexts)
        else tokenize_texts(loaded.tokenizer, list(texts), max_tokens=loaded.context_length)
    )
    num_states = loaded.num_hidden_layers + 1
    layer_list = parse_layers(layers, num_states)
    choice = None
    known: dict[int, torch.Tensor] = {}  # text index -> (L, d) rows already extracted one at a time
    if strategy == AUTO:

        def report_choice(done: int, total: int) -> None:
            if progress is not None:
                progress("choosing", done, total)

        choice = choose_strategy(loaded, tokenized, batch_size, probe_texts=auto_sample, progress=report_choice)
        name = choice.name
        if choice.reference_rows is not None:
            known = dict(zip(choice.probe_rows, choice.reference_rows[:, layer_list], strict=True))
    else:
        name = get_strategy(strategy).name
    n = len(tokenized)
    shape = (n, len(layer_list), loaded.hidden_size)
    metadata = base_metadata(loaded, tokenized, name, choice, layer_list, store_dtype, batch_size)
    started = time.perf_counter()
    with SafetensorsRowWriter(out, TENSOR_NAME, shape, STORE_DTYPES[store_dtype], metadata, overwrite) as writer:
        for start in range(0, n, chunk_texts):
            rows = list(range(start, min(start + chunk_texts, n)))
            todo = [row for row in rows if row not in known]
            positions = [k for k, row in enumerate(rows) if row not in known]

            def report(done: int, total: int, before: int = start + len(rows) - len(todo)) -> None:
                if progress is not None:
                    progress("extracting", before + done, n)

            hidden = torch.empty(len(rows), len(layer_list), loaded.hidden_size)  # (k, L, d)
            if todo:
                extraction = extract_states(
                    loaded, subset(tokenized, todo), name, batch_size, layers=layer_list, keep_logits=False,
                    progress=report,
                )  # fmt: skip
                hidden[positions] = extraction.hidden
            for row in rows:
                if row in known:
                    hidden[row - start] = known[row]
            bad = ~torch.isfinite(hidden)
            if bad.any():
                texts_bad = [rows[k] + 1 for k in bad.flatten(1).any(1).nonzero().flatten().tolist()]
                raise ValueError(f"NaN/inf in the extracted states of text(s) {texts_bad[:8]} (dtype overflow?)")
            writer.write(hidden)  # (k, L, d)
        seconds = time.perf_counter() - started
        verification = None
        if verify:
            verification = _verify(loaded, tokenized, writer, layer_list, verify, seed, progress)
            metadata["verification"] = json.dumps(verification.to_dict())
            if not verification.passed:
                raise VerificationError(
                    f"verification failed: {len(verification.rows)} texts re-extracted one at a time differ from "
                    f"the rows written with {name} (min cosine {verification.min_cosine:.6f}, top-1 agreement "
                    f"{100 * verification.top1_same:.0f}%, verdict {verification.verdict}); no file was written"
                )
        else:
            metadata["verification"] = json.dumps({"skipped": True})
        writer.commit({"verification": metadata["verification"]})
    logger.info("wrote %s: %s, %s, %.1f texts/s", out, shape, name, n / seconds if seconds else float("inf"))
    return ExportResult(out, name, choice, layer_list, shape, store_dtype, verification, metadata, seconds)


def _verify(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    writer: SafetensorsRowWriter,
    layers: list[int],
    count: int,
    seed: int,
    progress: ExportProgress | None,
) -> Verification:
    rows = sorted(random.Random(seed + 1).sample(range(len(tokenized)), min(count, len(tokenized))))
    if progress is not None:
        progress("verifying", 0, len(rows))
    written = writer.read_rows(rows)  # (K, L, d) as stored on disk
    check = check_rows(loaded, subset(tokenized, rows), written, layers)
    if progress is not None:
        progress("verifying", len(rows), len(rows))
    return Verification(
        rows=rows,
        min_cosine=float(check.cosine.min()),
        top1_same=float(check.top1_same.float().mean()),
        verdict=check.verdict,
    )


__all__ = [
    "AUTO",
    "AUTO_EXCLUDED",
    "ExportResult",
    "StrategyChoice",
    "Verification",
    "VerificationError",
    "choose_strategy",
    "extract_to_file",
    "parse_layers",
]
