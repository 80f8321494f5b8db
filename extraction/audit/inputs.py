"""The audit's first step: the sampled rows read from the store and their texts tokenized.

:func:`read_inputs` checks the store's shape against the model and the texts without reading
its rows (:func:`~extraction.storage.stored_states.check_states_shape`), draws the sample
(:mod:`.sampling`), reads only the sampled rows (:class:`~extraction.storage.lazy_states.LazyStates`)
and tokenizes only the sampled texts. Texts come as a list, as :class:`~extraction.texts.TokenizedTexts`,
or as a :class:`~extraction.storage.text_stream.TextSource` read in one streamed scan that keeps the
sampled texts, counts them all and hashes them (for the file's ``texts_sha256``). A store held in
memory is still checked for NaN/inf in every row; a lazy one in the rows read.

A store that keeps its own token ids (``LazyStates.token_ids``: :mod:`extraction.storage.engine_formats`,
:mod:`extraction.storage.columnar`) is re-extracted from them, and the texts may be left out (None);
given too, they are compared with the ids (:mod:`.stored_tokens`). A store with a text column
(``LazyStates.texts``) gives its own texts when none are given.

:func:`whole_inputs` is what the forensics need (they compare a row with every other row and
text): the whole store and every text tokenized, read only when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..pooling import DEFAULT_POOLING, POOLINGS, Pooling, parse_pooling
from ..storage.engine_formats import VLLM_FORMAT
from ..storage.lazy_states import LazyStates
from ..storage.states_record import StoredStates
from ..storage.stored_states import check_finite, check_states_shape, validate_offsets, validate_states
from ..storage.text_stream import TextSource
from ..texts import TokenizedTexts, texts_sha256, tokenize_texts
from .sampling import RowSample
from .stored_tokens import StoredIdsCheck, compare_token_ids

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
    stored_ids: StoredIdsCheck | None = None  # the store's own token ids (re-extracted from), else None


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
    digest = texts_hash() if meta.get("texts_sha256") else None
    if digest is not None and meta["texts_sha256"] != digest:
        notes.append("the texts differ from those the file was extracted from (texts_sha256 in its metadata)")
    return notes


def count_texts(texts: AuditTexts | None, states: LazyStates, offsets: torch.Tensor | None) -> int:
    """The number of texts (for a stream: the store's, checked once the stream is scanned)."""
    if states.token_ids is not None:
        count = states.token_ids.count
        if texts is not None and not isinstance(texts, TextSource | ScannedTexts) and len(texts) != count:
            raise ValueError(
                f"the store keeps the token ids of {count} texts but {len(texts)} texts were given: "
                "text i must be the one whose ids are the store's i-th"
            )
        return count
    if isinstance(texts, TextSource | ScannedTexts):
        return len(offsets) - 1 if offsets is not None else states.num_texts
    return len(texts)


def _from_stored_ids(
    loaded: LoadedModel,
    texts: AuditTexts | None,
    states: LazyStates,
    checked: list[int],
    num_rows: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[TokenizedTexts, Callable[[], str | None], StoredIdsCheck]:
    """The checked texts as the store's own ids (cut to the model's context like texts), the texts'
    hash (None without texts) and what comparing the ids with the texts' tokenization found."""
    stored = states.token_ids
    ids = stored.of(checked)
    given, texts_hash = (
        (None, lambda: None)
        if texts is None
        else _sampled_texts(loaded, texts, checked, num_rows, progress, needs_texts_hash(states))
    )
    check = compare_token_ids(
        loaded.tokenizer,
        stored.name,
        stored.layout,
        None if given is None else given.texts,
        None if given is None else given.token_ids,
        ids,
        checked,
        loaded.context_length,
    )
    shown = given.texts if given is not None else [loaded.tokenizer.decode(i) for i in ids]
    return _ids_as_texts(loaded, stored.name, shown, ids, checked), texts_hash, check


def _ids_as_texts(
    loaded: LoadedModel, name: str, shown: list[str], ids: list[list[int]], indices: list[int]
) -> TokenizedTexts:
    """Stored ids as :class:`TokenizedTexts` (cut to the model's context, as texts are), ``shown``
    their texts (given, or the ids decoded); ``ValueError`` for a text without ids."""
    empty = next((indices[k] for k, i in enumerate(ids) if not i), None)
    if empty is not None:
        raise ValueError(f"{name}: text {empty + 1} has no token ids")
    limit = loaded.context_length
    truncated = [(k, len(i)) for k, i in enumerate(ids) if limit is not None and len(i) > limit]
    return TokenizedTexts(shown, [i[:limit] if limit is not None else i for i in ids], truncated, limit)


def _every_text(texts: AuditTexts) -> list[str]:
    if isinstance(texts, TokenizedTexts):
        return list(texts.texts)
    if isinstance(texts, TextSource):
        return [text for _, text, _ in texts.scan()]
    return list(texts)


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
    texts: AuditTexts | None,
    states: LazyStates | StoredStates | torch.Tensor,
    sample: RowSample,
    layer: int | None,
    layers: Sequence[int] | None,
    pooling: str | None,
    offsets: torch.Tensor | None,
    progress: Callable[[str, int, int], None] | None = None,
) -> AuditInputs:
    """The store checked against the model and the texts, ``sample``'s rows read and their texts tokenized
    (or their stored ids read: module docstring; ``progress`` as :func:`_sampled_texts` reports it)."""
    states = as_lazy(states)
    if texts is None:
        texts = states.texts
    if texts is None and states.token_ids is None:
        raise ValueError(
            f"{states.source}: no texts were given, and the store keeps no token ids (input_ids / token_ids) "
            "nor a text column: give the texts the rows were extracted from"
        )
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
    stored_ids = None
    if states.token_ids is not None:
        tokenized, texts_hash, stored_ids = _from_stored_ids(loaded, texts, states, checked, n_texts, progress)
    else:
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
    if states.metadata.get("format") == VLLM_FORMAT and num_states - 1 in resolved:
        notes.append(
            f"vLLM records layer id {num_states - 1} (num_hidden_layers) before the final norm; hidden_states"
            f"[{num_states - 1}] here is after it, so that layer differs unless the model has no final norm"
        )
    if loaded.is_random:
        notes.insert(0, f"{loaded.name} has random weights: its predictions mean nothing, only agreement does.")
    return AuditInputs(
        states,
        texts,
        n_texts,
        checked,
        tokenized,
        stored,
        checked_offsets,
        store_offsets,
        resolved,
        chosen,
        notes,
        stored_ids,
    )


def whole_inputs(loaded: LoadedModel, inputs: AuditInputs) -> tuple[TokenizedTexts, torch.Tensor]:
    """Every text tokenized and the whole store ``(N, L, d)`` (or ``(R, L, d)``), for the forensics."""
    texts = inputs.texts.source if isinstance(inputs.texts, ScannedTexts) else inputs.texts
    stored_ids = inputs.states.token_ids
    if stored_ids is not None:
        every = list(range(inputs.n_texts))
        ids = stored_ids.of(every)
        shown = _every_text(texts) if texts is not None else [loaded.tokenizer.decode(i) for i in ids]
        tokenized = _ids_as_texts(loaded, stored_ids.name, shown, ids, every)
    elif isinstance(texts, TokenizedTexts):
        tokenized = texts
    else:
        tokenized = tokenize_texts(loaded.tokenizer, _every_text(texts), max_tokens=loaded.context_length)
    whole = inputs.states.load()
    num_rows = inputs.n_texts if inputs.store_offsets is None else whole.tensor.shape[0]
    stored, _ = validate_states(
        whole.tensor, num_rows, loaded.hidden_size, loaded.num_hidden_layers + 1, layers=inputs.layers
    )
    return tokenized, stored
