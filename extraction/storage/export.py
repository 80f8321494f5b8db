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
  rule, the ``lm_head`` top-1 under ``last`` only, and only when the last layer is stored or
  ``verify_lm_head`` asks: otherwise the re-extraction too stops after the deepest stored layer
  and ``lm_head_note`` says "lm_head not run: layers up to N asked for"); anything but an exact
  verdict raises :class:`VerificationError`.
* The file is written to a temporary name and renamed at the end: an interrupted (``KeyboardInterrupt``) or
  failed run leaves nothing at the target path. An existing file is replaced only with ``overwrite=True``.
* Each pass runs the blocks up to the deepest layer stored (``forward_pass`` in the metadata and result).

The run's steps (options, choice, chunks written, verification, commit) are one function each;
what the file says about how it was made (its metadata, the layers) is :mod:`.metadata`, the
checks live in :mod:`extraction.audit.check`, the writer in :mod:`.safetensors_writer`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..audit.check import check_rows, check_token_rows, checked_lm_head_note, subset
from ..comparison.choose import AUTO_EXCLUDED, PROBE_TEXTS, StrategyChoice, choose_strategy
from ..extract import ExtractionResult, ForwardPass, extract_states, forward_pass
from ..pooling import DEFAULT_POOLING, Pooling, parse_pooling, row_offsets
from ..strategies import DEFAULT_BATCH_SIZE, get_strategy
from ..texts import TokenizedTexts, tokenize_texts
from ..verdicts import Verdict
from .metadata import FORMAT, base_metadata, describe_layers, library_versions, parse_layers
from .safetensors_writer import STORE_DTYPES, SafetensorsRowWriter
from .stored_states import OFFSETS_NAME

if TYPE_CHECKING:
    from ..audit.row_check import RowCheck
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

TENSOR_NAME = "hidden_states"
AUTO = "auto"
AUTO_SAMPLE = PROBE_TEXTS  # texts of different lengths in auto's exactness probe
CHUNK_TEXTS = 512  # texts extracted per step: bounds memory, and sorting/bucketing happen within a chunk
#: tokens pooling: a chunk also stops before its texts' tokens x L x d pass this many values (128 MiB float32)
CHUNK_TOKEN_VALUES = 2**25
DEFAULT_VERIFY = 8

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
    lm_head_note: str = ""  # how the lm_head top-1 was checked, or why not ("lm_head not run: ...")

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
            "lm_head_note": self.lm_head_note,
        }

    @classmethod
    def of(cls, rows: list[int], check: RowCheck, pooling: Pooling, layers: list[int], num_states: int) -> Verification:
        """The verification of ``rows`` from their :class:`~extraction.audit.row_check.RowCheck` on the
        stored ``layers`` of a model of ``num_states`` hidden states."""
        return cls(
            rows=rows,
            min_cosine=float(check.cosine.min()),
            top1_same=None if check.top1_same is None else float(check.top1_same.float().mean()),
            verdict=check.verdict,
            max_relative_l2=float(check.row_max_relative_l2.max()),
            pooling=pooling,
            lm_head_note=checked_lm_head_note(check, layers, num_states, pooling),
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
    verify_lm_head: bool | None = None,
) -> ExportResult:
    """Extract the states of ``texts``, pooled by ``pooling``, at ``layers`` (default all) to
    ``out`` (a ``.safetensors`` file); see the module docstring. ``verify_lm_head``: whether the
    verification runs the lm_head top-1 check (the whole pass); default only when the last layer
    is stored (:func:`~extraction.extract.wants_lm_head`)."""
    out = Path(out)
    pooling = _check_options(out, overwrite, store_dtype, batch_size, chunk_texts, verify, pooling)
    tokenized = (
        texts
        if isinstance(texts, TokenizedTexts)
        else tokenize_texts(loaded.tokenizer, list(texts), max_tokens=loaded.context_length)
    )
    layer_list = parse_layers(layers, loaded.num_hidden_layers + 1)
    planned = forward_pass(loaded, layer_list, keep_logits=False)  # the blocks up to the deepest layer stored
    name, choice, known = _choose(
        loaded, tokenized, strategy, batch_size, auto_sample, progress, pooling, layer_list, planned.blocks_run
    )
    n, tokens = len(tokenized), pooling == "tokens"
    shape = (0 if tokens else n, len(layer_list), loaded.hidden_size)
    metadata = base_metadata(loaded, tokenized, name, choice, layer_list, store_dtype, batch_size, pooling)
    metadata["forward_pass"] = json.dumps(planned.to_dict())
    index = (OFFSETS_NAME, n + 1) if tokens else None
    started = time.perf_counter()
    dtype = STORE_DTYPES[store_dtype]
    with SafetensorsRowWriter(out, TENSOR_NAME, shape, dtype, metadata, overwrite, grow=tokens, index=index) as writer:
        rows_per_text = _write_chunks(
            writer, loaded, tokenized, name, batch_size, layer_list, pooling, chunk_texts, known, progress
        )
        seconds = time.perf_counter() - started
        offsets = row_offsets(rows_per_text) if tokens else None
        verification = None
        if verify:
            verification = _verify(
                loaded, tokenized, writer, layer_list, verify, seed, progress, pooling, offsets, verify_lm_head
            )
        metadata["verification"] = _verification_entry(verification, name, pooling)
        writer.commit({"verification": metadata["verification"]}, index_values=offsets)
    shape = writer.shape
    logger.info(
        "wrote %s: %s, %s, %s, %.1f texts/s", out, shape, name, pooling, n / seconds if seconds else float("inf")
    )
    return ExportResult(
        out, name, choice, layer_list, shape, store_dtype, verification, metadata, seconds, pooling, n, offsets, planned
    )


# The steps, in the order extract_to_file takes them.


def _check_options(
    out: Path, overwrite: bool, store_dtype: str, batch_size: int, chunk_texts: int, verify: int, pooling: Pooling
) -> Pooling:
    """The pooling parsed; ``FileExistsError`` or a ``ValueError`` naming what is allowed for a bad option."""
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
    return pooling


def _choose(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    strategy: str,
    batch_size: int,
    auto_sample: int,
    progress: ExportProgress | None,
    pooling: Pooling,
    layers: list[int],
    blocks_run: int | None = None,
) -> tuple[str, StrategyChoice | None, dict[int, torch.Tensor]]:
    """The strategy's name, the auto choice (None when named), and the rows auto's probe already
    extracted one text at a time (text index -> (L, d) at ``layers``; not under tokens)."""
    if strategy != AUTO:
        return get_strategy(strategy).name, None, {}

    def report_choice(done: int, total: int) -> None:
        if progress is not None:
            progress("choosing", done, total)

    choice = choose_strategy(
        loaded,
        tokenized,
        batch_size,
        probe_texts=auto_sample,
        progress=report_choice,
        pooling=pooling,
        blocks_run=blocks_run,
    )
    known = {}
    if choice.reference_rows is not None and pooling != "tokens":
        known = dict(zip(choice.probe_rows, choice.reference_rows[:, layers], strict=True))
    return choice.name, choice, known


def _write_chunks(
    writer: SafetensorsRowWriter,
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    name: str,
    batch_size: int,
    layers: list[int],
    pooling: Pooling,
    chunk_texts: int,
    known: dict[int, torch.Tensor],
    progress: ExportProgress | None,
) -> torch.Tensor:
    """Every text's rows, extracted chunk by chunk (``known`` rows reused) and written in input order;
    the rows written for each text (N,) int64."""
    n, tokens = len(tokenized), pooling == "tokens"
    rows_per_text = torch.zeros(n, dtype=torch.long)
    max_rows = CHUNK_TOKEN_VALUES // (len(layers) * loaded.hidden_size)
    for rows in _chunks(tokenized.lengths, chunk_texts, max_rows, tokens):
        todo = [row for row in rows if row not in known]

        def report(done: int, total: int, before: int = rows[-1] + 1 - len(todo)) -> None:
            if progress is not None:
                progress("extracting", before + done, n)

        extraction = None
        if todo:
            extraction = extract_states(
                loaded, subset(tokenized, todo), name, batch_size, layers=layers, keep_logits=False,
                progress=report, pooling=pooling,
            )  # fmt: skip
        if tokens:
            hidden = extraction.hidden  # (R_chunk, L, d), the chunk's texts in input order
            rows_per_text[rows] = extraction.offsets.diff()
        else:
            hidden = _with_known_rows(extraction, rows, known, len(layers), loaded.hidden_size)  # (k, L, d)
        _refuse_nonfinite(hidden, rows, rows_per_text if tokens else None)
        writer.write(hidden)  # (k, L, d); tokens: (R_chunk, L, d)
        del extraction, hidden
    return rows_per_text


def _with_known_rows(
    extraction: ExtractionResult | None, rows: list[int], known: dict[int, torch.Tensor], num_layers: int, width: int
) -> torch.Tensor:
    """The chunk's rows (k, L, d) in input order: the extracted ones and the ``known`` ones."""
    hidden = torch.empty(len(rows), num_layers, width)  # (k, L, d)
    if extraction is not None:
        hidden[[k for k, row in enumerate(rows) if row not in known]] = extraction.hidden
    for k, row in enumerate(rows):
        if row in known:
            hidden[k] = known[row]
    return hidden


def _verification_entry(verification: Verification | None, name: str, pooling: Pooling) -> str:
    """The file's ``verification`` metadata (``{"skipped": true}`` when verify=0); a
    :class:`VerificationError` when it failed (the file is then never committed)."""
    if verification is None:
        return json.dumps({"skipped": True})
    if not verification.passed:
        raise VerificationError(
            f"verification failed: {len(verification.rows)} texts re-extracted one at a time differ from "
            f"the rows written with {name} under {pooling} pooling: {verification.describe()}; "
            "no file was written"
        )
    return json.dumps(verification.to_dict())


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
    lm_head: bool | None = None,
) -> Verification:
    """``count`` random texts' rows read back from the file being written, against single-text
    extraction under the same pooling (tokens: each text's rows, found by ``offsets``) on the
    layers stored, lm_head as ``lm_head`` says (:func:`~extraction.audit.check.check_rows`)."""
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
        written = writer.read_rows(rows)  # (K, L, d) as stored on disk
        check = check_rows(loaded, sample, written, layers, pooling, lm_head=lm_head)
    if progress is not None:
        progress("verifying", len(rows), len(rows))
    return Verification.of(rows, check, pooling, layers, loaded.num_hidden_layers + 1)


__all__ = [
    "AUTO",
    "AUTO_EXCLUDED",
    "FORMAT",
    "ExportResult",
    "StrategyChoice",
    "Verification",
    "VerificationError",
    "base_metadata",
    "choose_strategy",
    "describe_layers",
    "extract_to_file",
    "library_versions",
    "parse_layers",
]
