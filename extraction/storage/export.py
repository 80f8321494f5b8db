"""Extract hidden states correctly, to a safetensors file that says how it was made.

:func:`extract_to_file` writes ``hidden_states`` with string metadata: model, strategy,
pooling, layers, dtypes, library versions, the SHA-256 of the texts
(:func:`~extraction.texts.texts_sha256`) and the verification result. The rows depend on the
pooling (:mod:`extraction.pooling`), at each of the L layers asked for, in the
``hidden_states`` numbering:

* ``last`` (default) and ``mean``: ``(N, L, d)``, row i is text i's last-real-token state,
  or the mean of its tokens' states;
* ``tokens``: ``(R, L, d)`` with R the rows kept (the texts' token counts summed, when the
  layout is sound), and ``offsets`` ``(N + 1,)`` int64: text i owns rows
  ``offsets[i]:offsets[i + 1]``, texts in input order, tokens in text order. The rows are
  streamed: each chunk of texts (at most :data:`CHUNK_TEXTS` texts and
  :data:`CHUNK_TOKEN_VALUES` stored values) is extracted, its rows are held until the
  chunk is done and then written in input order (a sorting layout reorders texts only
  within a chunk), and the row count and offsets are written at the end
  (:class:`~extraction.storage.safetensors_writer.SafetensorsRowWriter` with ``grow`` and an
  index). A right-naive file keeps pad positions as rows, so its row count exceeds the
  tokens; the offsets say which rows each text got.

* ``strategy="auto"`` (:func:`~extraction.comparison.choose.choose_strategy`) takes the cheapest
  layout, by a cost model of these texts' passes and padding, that is exact on this model:
  exactness is checked on a few probe texts (or remembered from an earlier run with the
  same model, dtype, device, attention and versions). ``single`` is always exact, so there
  is always a choice; the ``-naive`` layouts never are. The probe texts' single-text rows
  are written as they are, not extracted again.
* Memory stays bounded: texts are extracted in chunks of :data:`CHUNK_TEXTS` with ``keep_logits=False`` and
  only the layers asked for, and every chunk's rows go straight to disk
  (:class:`~extraction.storage.safetensors_writer.SafetensorsRowWriter`). Full sequences live for one pass.
* ``verify=N`` reads N random texts' rows back from the written file and compares them with
  single-sample extraction under the same pooling (the audit's checks,
  :func:`~extraction.audit.check.check_rows` and under ``tokens``
  :func:`~extraction.audit.check.check_token_rows`, with the row count; the same verdict
  rule, the ``lm_head`` top-1 under ``last`` only); anything but an exact verdict raises
  :class:`VerificationError`.
* The file is written to a temporary name and renamed at the end: an interrupted (``KeyboardInterrupt``) or
  failed run leaves nothing at the target path. An existing file is replaced only with ``overwrite=True``.
* Each pass runs the blocks up to the deepest layer stored (``forward_pass`` in the metadata and result).

(Over 400 lines: one run's steps, choose, stream, verify, commit, share its state; the
checks live in :mod:`.audit.check`, the writer in :mod:`.safetensors_writer`.)
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..audit.check import check_rows, check_token_rows, subset
from ..comparison.choose import AUTO_EXCLUDED, PROBE_TEXTS, StrategyChoice, choose_strategy
from ..extract import ForwardPass, extract_states, forward_pass
from ..pooling import DEFAULT_POOLING, Pooling, parse_pooling, row_offsets
from ..strategies import DEFAULT_BATCH_SIZE, get_strategy
from ..texts import TokenizedTexts, texts_sha256, tokenize_texts
from ..verdicts import Verdict
from .safetensors_writer import STORE_DTYPES, SafetensorsRowWriter
from .stored_states import OFFSETS_NAME

if TYPE_CHECKING:
    from ..audit.row_check import RowCheck
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

TENSOR_NAME = "hidden_states"
FORMAT = "padding-audit hidden states v1"
AUTO = "auto"
AUTO_SAMPLE = PROBE_TEXTS  # texts of different lengths in auto's exactness probe
CHUNK_TEXTS = 512  # texts extracted per step: bounds memory, and sorting/bucketing happen within a chunk
#: tokens pooling: a chunk also stops before its texts' tokens x L x d pass this many values (128 MiB float32)
CHUNK_TOKEN_VALUES = 2**25
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
    top1_same: float | None  # fraction of rows whose lm_head top-1 matches the fresh state's (None unless last)
    verdict: Verdict  # exact / drift / corrupted (the audit's rule)
    max_relative_l2: float | None = None  # over the rows and stored layers (None where not measured)
    pooling: Pooling = DEFAULT_POOLING

    @property
    def passed(self) -> bool:
        return self.verdict == "exact"

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "min_cosine": self.min_cosine,
            "top1_same": self.top1_same,
            "max_relative_l2": self.max_relative_l2,
            "pooling": self.pooling,
            "verdict": self.verdict,
            "passed": self.passed,
        }

    @classmethod
    def of(cls, rows: list[int], check: RowCheck, pooling: Pooling) -> Verification:
        """The verification of ``rows`` from their :class:`~extraction.audit.row_check.RowCheck`."""
        return cls(
            rows=rows,
            min_cosine=float(check.cosine.min()),
            top1_same=None if check.top1_same is None else float(check.top1_same.float().mean()),
            verdict=check.verdict,
            max_relative_l2=float(check.row_max_relative_l2.max()),
            pooling=pooling,
        )

    def describe(self) -> str:
        """``"exact (min cosine 1.000000, top-1 agreement 100%)"``; no top-1 outside ``last``."""
        figures = f"min cosine {self.min_cosine:.6f}"
        if self.top1_same is not None:
            figures += f", top-1 agreement {100 * self.top1_same:.0f}%"
        elif self.max_relative_l2 is not None:
            figures += f", max relative L2 {self.max_relative_l2:.2g}"
        return f"{self.verdict} ({figures})"


@dataclass
class ExportResult:
    """What :func:`extract_to_file` wrote."""

    path: Path
    strategy: str
    choice: StrategyChoice | None  # None when the strategy was named
    layers: list[int]
    shape: tuple[int, int, int]  # (N, L, d); tokens: (R, L, d), R the rows of every text
    store_dtype: str
    verification: Verification | None  # None when verify=0
    metadata: dict[str, str]
    seconds: float  # extraction and writing, choice and verification excluded
    pooling: Pooling = DEFAULT_POOLING
    num_texts: int = 0
    offsets: torch.Tensor | None = None  # (N + 1,) int64 under tokens, else None
    forward_pass: ForwardPass | None = None  # what each pass ran: the blocks up to the deepest layer stored

    @property
    def texts_per_second(self) -> float:
        return self.num_texts / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "strategy": self.strategy,
            "choice": self.choice.to_dict() if self.choice else None,
            "layers": self.layers,
            "shape": list(self.shape),
            "pooling": self.pooling,
            "num_texts": self.num_texts,
            "store_dtype": self.store_dtype,
            "verification": self.verification.to_dict() if self.verification else None,
            "seconds": self.seconds,
            "texts_per_second": self.texts_per_second,
            "forward_pass": self.forward_pass.to_dict() if self.forward_pass else None,
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
    pooling: Pooling = DEFAULT_POOLING,
) -> dict[str, str]:
    numbering = (
        "layers in the hidden_states numbering: 0 = embeddings, k = output of block k, the last one after the "
        "final norm"
    )
    read = {
        "last": "last real token of each text",
        "mean": "mean of each text's token states, at each layer",
        "tokens": "one row per token of each text, at each layer",
    }[pooling]
    order = (
        "text i owns rows offsets[i]:offsets[i+1] (tensor 'offsets'), texts in input order, tokens in text order"
        if pooling == "tokens"
        else "row i is the i-th input text"
    )
    return {
        "format": FORMAT,
        "row_order": order,
        "convention": f"{read}; {numbering}",
        "pooling": pooling,
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
    pooling: Pooling = DEFAULT_POOLING,
) -> ExportResult:
    """Extract the states of ``texts``, pooled by ``pooling``, at ``layers`` (default all) to
    ``out`` (a ``.safetensors`` file); see the module docstring."""
    out = Path(out)
    pooling = parse_pooling(pooling)
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
    planned = forward_pass(loaded, layer_list, keep_logits=False)  # the blocks up to the deepest layer stored
    choice = None
    known: dict[int, torch.Tensor] = {}  # text index -> (L, d) rows already extracted one at a time
    if strategy == AUTO:

        def report_choice(done: int, total: int) -> None:
            if progress is not None:
                progress("choosing", done, total)

        choice = choose_strategy(loaded, tokenized, batch_size, probe_texts=auto_sample, progress=report_choice,
                                 pooling=pooling, blocks_run=planned.blocks_run)  # fmt: skip
        name = choice.name
        if choice.reference_rows is not None and pooling != "tokens":
            known = dict(zip(choice.probe_rows, choice.reference_rows[:, layer_list], strict=True))
    else:
        name = get_strategy(strategy).name
    n, width = len(tokenized), loaded.hidden_size
    tokens = pooling == "tokens"
    shape = (0 if tokens else n, len(layer_list), width)
    metadata = base_metadata(loaded, tokenized, name, choice, layer_list, store_dtype, batch_size, pooling)
    metadata["forward_pass"] = json.dumps(planned.to_dict())
    rows_per_text = torch.zeros(n, dtype=torch.long)  # rows written for each text
    index = (OFFSETS_NAME, n + 1) if tokens else None
    started = time.perf_counter()
    dtype = STORE_DTYPES[store_dtype]
    with SafetensorsRowWriter(out, TENSOR_NAME, shape, dtype, metadata, overwrite, grow=tokens, index=index) as writer:
        for rows in _chunks(tokenized.lengths, chunk_texts, CHUNK_TOKEN_VALUES // (len(layer_list) * width), tokens):
            todo = [row for row in rows if row not in known]
            positions = [k for k, row in enumerate(rows) if row not in known]

            def report(done: int, total: int, before: int = rows[-1] + 1 - len(todo)) -> None:
                if progress is not None:
                    progress("extracting", before + done, n)

            extraction = None
            if todo:
                extraction = extract_states(
                    loaded, subset(tokenized, todo), name, batch_size, layers=layer_list, keep_logits=False,
                    progress=report, pooling=pooling,
                )  # fmt: skip
            if tokens:
                hidden = extraction.hidden  # (R_chunk, L, d), the chunk's texts in input order
                rows_per_text[rows] = extraction.offsets.diff()
            else:
                hidden = torch.empty(len(rows), len(layer_list), width)  # (k, L, d)
                if extraction is not None:
                    hidden[positions] = extraction.hidden
                for k, row in enumerate(rows):
                    if row in known:
                        hidden[k] = known[row]
            _refuse_nonfinite(hidden, rows, rows_per_text if tokens else None)
            writer.write(hidden)  # (k, L, d); tokens: (R_chunk, L, d)
            del extraction, hidden
        seconds = time.perf_counter() - started
        offsets = row_offsets(rows_per_text) if tokens else None
        verification = None
        if verify:
            verification = _verify(loaded, tokenized, writer, layer_list, verify, seed, progress, pooling, offsets)
            metadata["verification"] = json.dumps(verification.to_dict())
            if not verification.passed:
                raise VerificationError(
                    f"verification failed: {len(verification.rows)} texts re-extracted one at a time differ from "
                    f"the rows written with {name} under {pooling} pooling: {verification.describe()}; "
                    "no file was written"
                )
        else:
            metadata["verification"] = json.dumps({"skipped": True})
        writer.commit({"verification": metadata["verification"]}, index_values=offsets)
    shape = writer.shape
    logger.info(
        "wrote %s: %s, %s, %s, %.1f texts/s", out, shape, name, pooling, n / seconds if seconds else float("inf")
    )
    return ExportResult(out, name, choice, layer_list, shape, store_dtype, verification, metadata, seconds, pooling,
                        n, offsets, planned)  # fmt: skip


def _chunks(lengths: Sequence[int], chunk_texts: int, max_rows: int, tokens: bool) -> Iterator[list[int]]:
    """Consecutive text indices, at most ``chunk_texts`` a chunk; under ``tokens`` also at most
    ``max_rows`` tokens a chunk (a longer text alone)."""
    chunk: list[int] = []
    rows = 0
    for index, length in enumerate(lengths):
        if chunk and (len(chunk) == chunk_texts or (tokens and rows + length > max_rows)):
            yield chunk
            chunk, rows = [], 0
        chunk.append(index)
        rows += length
    if chunk:
        yield chunk


def _refuse_nonfinite(hidden: torch.Tensor, rows: list[int], rows_per_text: torch.Tensor | None) -> None:
    """``ValueError`` naming the texts (1-based) with NaN/inf rows in ``hidden``."""
    bad = ~torch.isfinite(hidden)
    if not bad.any():
        return
    bad_rows = bad.flatten(1).any(1)
    if rows_per_text is not None:  # tokens: which text each row belongs to
        owners = torch.repeat_interleave(torch.tensor(rows), rows_per_text[rows])
        texts_bad = sorted(set((owners[bad_rows] + 1).tolist()))
    else:
        texts_bad = [rows[k] + 1 for k in bad_rows.nonzero().flatten().tolist()]
    raise ValueError(f"NaN/inf in the extracted states of text(s) {texts_bad[:8]} (dtype overflow?)")


def _verify(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    writer: SafetensorsRowWriter,
    layers: list[int],
    count: int,
    seed: int,
    progress: ExportProgress | None,
    pooling: Pooling = DEFAULT_POOLING,
    offsets: torch.Tensor | None = None,
) -> Verification:
    """``count`` random texts' rows read back from the file being written, against single-text
    extraction under the same pooling (tokens: each text's rows, found by ``offsets``)."""
    rows = sorted(random.Random(seed + 1).sample(range(len(tokenized)), min(count, len(tokenized))))
    if progress is not None:
        progress("verifying", 0, len(rows))
    sample = subset(tokenized, rows)
    if pooling == "tokens":
        spans = [range(int(offsets[i]), int(offsets[i + 1])) for i in rows]
        written = writer.read_rows([r for span in spans for r in span])  # (R_k, L, d)
        written_offsets = row_offsets(torch.tensor([len(span) for span in spans]))
        check = check_token_rows(loaded, sample, written, written_offsets, layers)
    else:
        check = check_rows(loaded, sample, writer.read_rows(rows), layers, pooling)  # (K, L, d) as stored on disk
    if progress is not None:
        progress("verifying", len(rows), len(rows))
    return Verification.of(rows, check, pooling)


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
