"""The audit's first step: the sampled rows read from the store and their texts tokenized.

:func:`read_inputs` checks the store's shape against the model and the texts without reading
its rows (:func:`~extraction.storage.stored_states.check_states_shape`), draws the sample
(:mod:`.sampling`), reads only the sampled rows (:class:`~extraction.storage.lazy_states.LazyStates`)
and tokenizes only the sampled texts. Texts come as a list, as :class:`~extraction.texts.TokenizedTexts`,
or as a :class:`~extraction.storage.text_stream.TextSource` read in one streamed scan that keeps the
sampled texts, counts them all and hashes them (for the file's ``texts_sha256``). A store held in
memory is still checked for NaN/inf in every row; a lazy one in the rows read.

:func:`whole_inputs` is what the forensics need (they compare a row with every other row and
text): the whole store and every text tokenized, read only when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..pooling import DEFAULT_POOLING, POOLINGS, Pooling, parse_pooling
from ..storage.lazy_states import LazyStates
from ..storage.states_record import StoredStates
from ..storage.stored_states import check_finite, check_states_shape, validate_offsets, validate_states
from ..storage.text_stream import TextSource
from ..texts import TokenizedTexts, texts_sha256, tokenize_texts
from .sampling import RowSample

if TYPE_CHECKING:
    from ..models import LoadedModel

#: The progress stage of the streamed scan of a texts file (``done`` and ``total`` in bytes).
READING_TEXTS = "reading texts"


@dataclass
class ScannedTexts:
    """A streamed texts file scanned once for every row an audit may check (all the rounds of
    ``max_corrupted``), so that later rounds take their texts from here and do not scan it again."""

    source: TextSource
    found: dict[int, str]  # text index -> text, for the rows scanned for
    count: int  # texts in the file
    digest: str | None  # their texts_sha256 (None where the store records none to compare with)


#: What an audit takes as its texts.
AuditTexts = Sequence[str] | TokenizedTexts | TextSource | ScannedTexts


def scan_texts(
    source: TextSource,
    rows: Sequence[int],
    progress: Callable[[str, int, int], None] | None = None,
    hash_texts: bool = True,
) -> ScannedTexts:
    """One streamed scan of ``source`` keeping the texts of ``rows``, counting them all and, with
    ``hash_texts``, hashing them; ``progress("reading texts", bytes_read, file_bytes)`` on the way."""
    scan_progress = None
    if progress is not None:

        def scan_progress(done: int, total: int) -> None:
            progress(READING_TEXTS, done, total)

    found, count, digest = source.sample(list(rows), progress=scan_progress, hash_texts=hash_texts)
    if progress is not None:
        size = source.path.stat().st_size
        progress(READING_TEXTS, size, size)
    return ScannedTexts(source, found, count, digest)


@dataclass
class AuditInputs:
    """The sampled rows and texts, and what the later steps of the audit share."""

    states: LazyStates  # the store (source, shape, dtype and metadata for the report)
    texts: AuditTexts  # as given (the forensics read them all)
    n_texts: int
    checked: list[int]  # text indices re-extracted (ascending)
    tokenized: TokenizedTexts  # the checked texts, tokenized, in the order of checked
    stored: torch.Tensor  # (K, L, d) the checked texts' rows, or (R_K, L, d) under tokens pooling
    offsets: torch.Tensor | None  # (K + 1,) under tokens pooling: checked text k owns stored[offsets[k]:offsets[k+1]]
    store_offsets: torch.Tensor | None  # (N + 1,) the whole store's row offsets under tokens pooling
    layers: list[int]  # hidden_states index of each stored layer
    pooling: Pooling
    notes: list[str]


def as_lazy(states: LazyStates | StoredStates | torch.Tensor) -> LazyStates:
    if isinstance(states, LazyStates):
        return states
    if not isinstance(states, StoredStates):
        states = StoredStates(states.float(), "tensor", None, str(states.dtype).removeprefix("torch."))
    return LazyStates.from_stored(states)


def resolve_pooling(stored: StoredStates | LazyStates, pooling: str | None) -> tuple[Pooling, str | None]:
    """The pooling to audit under: ``pooling`` if given, else the one the file records (its metadata
    ``"pooling"``, or ``tokens`` for a file with offsets),
    else :data:`~extraction.pooling.DEFAULT_POOLING`; and a one-line note when the two disagree."""
    recorded = stored.stored_pooling
    if recorded is not None and recorded not in POOLINGS:
        recorded = None
    if pooling is None:
        return parse_pooling(recorded or DEFAULT_POOLING), None
    chosen = parse_pooling(pooling)
    if recorded is not None and recorded != chosen:
        return chosen, f"the file's metadata says pooling {recorded!r}; auditing under {chosen!r} as asked"
    return chosen, None


def row_offsets_for(
    states: LazyStates, pooling: Pooling, offsets: torch.Tensor | None, num_texts: int
) -> torch.Tensor | None:
    """The checked row offsets of a ``tokens`` file (given, else the file's), None under another pooling;
    ``ValueError`` for offsets given with another pooling or a tokens file without rows."""
    if pooling == "tokens":
        given = offsets if offsets is not None else states.offsets
        row_offsets = validate_offsets(given, num_texts, states.shape[0])
        if states.shape[0] == 0:
            raise ValueError("stored states have no rows")
        return row_offsets
    if offsets is not None or states.offsets is not None:
        raise ValueError(
            f"the states come with row offsets (a tokens file) but are audited under pooling {pooling!r}; "
            "use pooling 'tokens'"
        )
    return None


def needs_texts_hash(states: LazyStates) -> bool:
    """True when the store records the ``texts_sha256`` of its texts (the audit then compares it)."""
    return bool(states.metadata.get("texts_sha256"))


def metadata_notes(states: LazyStates, loaded: LoadedModel, texts_hash: Callable[[], str | None]) -> list[str]:
    notes = []
    meta = states.metadata
    if meta.get("model") and meta["model"] != loaded.name:
        notes.append(f"the file says it was extracted with {meta['model']!r}; auditing with {loaded.name!r}")
    if meta.get("texts_sha256") and meta["texts_sha256"] != texts_hash():
        notes.append("the texts differ from those the file was extracted from (texts_sha256 in its metadata)")
    return notes


def count_texts(texts: AuditTexts, states: LazyStates, offsets: torch.Tensor | None) -> int:
    """The number of texts (for a stream: the store's, checked once the stream is scanned)."""
    if isinstance(texts, TextSource | ScannedTexts):
        return len(offsets) - 1 if offsets is not None else states.num_texts
    return len(texts)


def _sampled_texts(
    loaded: LoadedModel,
    texts: AuditTexts,
    checked: list[int],
    num_rows: int,
    progress: Callable[[str, int, int], None] | None = None,
    hash_texts: bool = True,
) -> tuple[TokenizedTexts, Callable[[], str | None]]:
    """The checked texts tokenized (truncation records naming the texts' own indices) and the
    texts' SHA-256, computed when asked (a streamed file hashes its texts during the scan only with
    ``hash_texts``). A streamed file's scan reports
    ``progress("reading texts", bytes_read, file_bytes)``."""
    if isinstance(texts, TokenizedTexts):
        return texts.subset(checked), lambda: texts_sha256(texts.texts)
    if isinstance(texts, TextSource | ScannedTexts):
        scanned = texts if isinstance(texts, ScannedTexts) else scan_texts(texts, checked, progress, hash_texts)
        found, count, digest = scanned.found, scanned.count, scanned.digest
        if count != num_rows:
            raise ValueError(
                f"stored states have {num_rows} rows but {count} texts were given: row i must be the state of text i"
            )
        chosen, texts_hash = [found[i] for i in checked], lambda: digest
    else:
        chosen, texts_hash = [texts[i] for i in checked], lambda: texts_sha256(list(texts))
    tokenized = tokenize_texts(loaded.tokenizer, chosen, max_tokens=loaded.context_length)
    return tokenized, texts_hash


def read_inputs(
    loaded: LoadedModel,
    texts: AuditTexts,
    states: LazyStates | StoredStates | torch.Tensor,
    sample: RowSample,
    layer: int | None,
    layers: Sequence[int] | None,
    pooling: str | None,
    offsets: torch.Tensor | None,
    progress: Callable[[str, int, int], None] | None = None,
) -> AuditInputs:
    """The store checked against the model and the texts, ``sample``'s rows read and their texts tokenized
    (``progress`` as :func:`_sampled_texts` reports it)."""
    states = as_lazy(states)
    chosen, pooling_note = resolve_pooling(states, pooling)
    num_states = loaded.num_hidden_layers + 1
    if layers is None and layer is None and len(states.shape) == 3:
        layers = states.stored_layers
    n_texts = count_texts(texts, states, offsets if offsets is not None else states.offsets)
    store_offsets = row_offsets_for(states, chosen, offsets, n_texts)
    num_rows = n_texts if store_offsets is None else states.shape[0]
    resolved = check_states_shape(states.shape, num_rows, loaded.hidden_size, num_states, layer, layers)
    if states.whole is not None:
        check_finite(states.whole)
    checked = sample.draw(n_texts)
    tokenized, texts_hash = _sampled_texts(loaded, texts, checked, n_texts, progress, needs_texts_hash(states))
    if store_offsets is not None:
        states.offsets = store_offsets
    stored, checked_offsets = states.text_rows(checked)
    if len(states.shape) == 2:
        stored = stored[:, None, :]  # (K, 1, d)
    if states.whole is None:
        check_finite(stored, checked if checked_offsets is None else None)
    truncated = [(checked[k], n) for k, n in tokenized.truncated]
    truncation_note = TokenizedTexts([], [], truncated, tokenized.max_tokens).truncation_note
    notes = [n for n in (pooling_note, loaded.pad_token_note, truncation_note) if n]
    notes += metadata_notes(states, loaded, texts_hash)
    if loaded.is_random:
        notes.insert(0, f"{loaded.name} has random weights: its predictions mean nothing, only agreement does.")
    return AuditInputs(
        states, texts, n_texts, checked, tokenized, stored, checked_offsets, store_offsets, resolved, chosen, notes
    )


def whole_inputs(loaded: LoadedModel, inputs: AuditInputs) -> tuple[TokenizedTexts, torch.Tensor]:
    """Every text tokenized and the whole store ``(N, L, d)`` (or ``(R, L, d)``), for the forensics."""
    texts = inputs.texts.source if isinstance(inputs.texts, ScannedTexts) else inputs.texts
    if isinstance(texts, TokenizedTexts):
        tokenized = texts
    else:
        every = [text for _, text, _ in texts.scan()] if isinstance(texts, TextSource) else list(texts)
        tokenized = tokenize_texts(loaded.tokenizer, every, max_tokens=loaded.context_length)
    whole = inputs.states.load()
    num_rows = inputs.n_texts if inputs.store_offsets is None else whole.tensor.shape[0]
    stored, _ = validate_states(
        whole.tensor, num_rows, loaded.hidden_size, loaded.num_hidden_layers + 1, layers=inputs.layers
    )
    return tokenized, stored
