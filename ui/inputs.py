"""The texts and files a page's inputs give: the text box or an upload, the Home run's inputs,
the Audit page's two uploads or two paths on the app's machine. Each raises ``ValueError``
(``TextsError``) saying what is missing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from extraction.chat import TextItem
from extraction.storage.lazy_states import LazyStates, open_states
from extraction.storage.stored_states import StoredStates, read_states
from extraction.storage.text_stream import TextSource
from extraction.texts import TextsError, decode_bytes, parse_text_items, read_text_items, split_lines


class KeptTextSource(TextSource):
    """A streamed texts file that keeps the texts of its last sampled scan (:attr:`kept`), so that the
    page can show the checked texts without reading the file again."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.kept: dict[int, str] = {}

    def sample(self, indices, progress=None, hash_texts=True):
        found, count, digest = super().sample(indices, progress, hash_texts)
        self.kept = dict(found)
        return found, count, digest


def texts_from_inputs(text_box: str, upload=None) -> tuple[list[TextItem], str]:
    """(texts, source): from an uploaded file (``.name``, ``.getvalue()``) when there is one,
    else the text box, one text a line. A ``.jsonl`` upload may hold chat ``messages``
    (:class:`~extraction.chat.Chat` items, rendered with the model's template by
    :func:`~extraction.chat.format_texts` once it is loaded). Raises :class:`TextsError`
    when there is none."""
    if upload is not None:
        name = str(upload.name)
        suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
        return parse_text_items(decode_bytes(upload.getvalue(), name), suffix, name), name
    # Lines break where a texts file's do (\n, \r\n, \r), not at U+2028 or form feeds.
    texts = [line.strip() for line in split_lines(text_box) if line.strip()]
    if not texts:
        raise TextsError("no texts: type at least one text (one per line) or upload a file")
    return texts, "text box"


def comparison_inputs(text_box: str, upload, strategies: Sequence[str]) -> tuple[list[TextItem], str]:
    """(texts, source) of a Home run (:func:`texts_from_inputs`), and at least one strategy
    chosen; :class:`TextsError` saying what is missing otherwise."""
    texts, source = texts_from_inputs(text_box, upload)
    if not strategies:
        raise TextsError("no strategy chosen: pick at least one strategy to compare with single")
    return texts, source


#: Uploads opened with :func:`~extraction.storage.lazy_states.open_states` (they may keep their own ids or texts).
LAZY_UPLOADS = (".parquet", ".safetensors", ".pt", ".pth")


def audit_inputs(
    states_upload, texts_upload, tensor_key: str
) -> tuple[StoredStates | LazyStates, list[TextItem] | None]:
    """(stored states, texts) from the two uploads; the texts None for a states file that keeps its own
    token ids or texts and no texts upload. ``ValueError`` saying what is missing or unreadable."""
    if states_upload is None:
        raise ValueError("upload the stored states (and the texts they were extracted from)")
    name, key = str(states_upload.name), tensor_key.strip() or None
    if name.lower().endswith(LAZY_UPLOADS):
        states = open_states(states_upload.getvalue(), name=name, key=key)
    else:
        states = read_states(states_upload.getvalue(), name=name, key=key)
    if texts_upload is None:
        if getattr(states, "token_ids", None) is None and getattr(states, "texts", None) is None:
            raise ValueError(
                "upload the texts the states were extracted from: this file keeps no token ids "
                "(input_ids / token_ids) nor a text column"
            )
        return states, None
    texts, _ = texts_from_inputs("", texts_upload)
    return states, texts


def audit_path_inputs(
    states_path: str, texts_path: str, tensor_key: str, as_chat: bool = False
) -> tuple[LazyStates, list[TextItem] | KeptTextSource | None]:
    """(stored states, texts) named by their paths on the app's machine: the store opened lazily
    (:func:`~extraction.storage.lazy_states.open_states`, only the sampled rows are read) and a plain
    ``.txt``/``.jsonl`` texts file streamed (only the sampled texts kept); a file of chat ``messages``,
    one to format as chat, or a ``.csv`` is read whole. The texts are None for a store that keeps its
    own token ids or texts and no texts path was given. ``ValueError`` saying what is missing."""
    if not states_path.strip():
        raise ValueError("give the stored states' path (and the texts file's, unless the store keeps its token ids)")
    states_file = Path(states_path.strip()).expanduser()
    if not states_file.exists():
        raise ValueError(f"{states_file}: no such file or folder on the app's machine")
    states = open_states(states_file, key=tensor_key.strip() or None)
    if not texts_path.strip():
        if states.token_ids is None and states.texts is None:
            raise ValueError(
                f"{states_file}: give the texts file's path too: the store keeps no token ids "
                "(input_ids / token_ids) nor a text column"
            )
        return states, None
    texts_file = Path(texts_path.strip()).expanduser()
    if not as_chat and texts_file.is_file() and not _holds_messages(texts_file):
        source = KeptTextSource(texts_file)
        if source.streamed:
            return states, source
    return states, read_text_items(texts_file)


def _holds_messages(path: Path) -> bool:
    """True for a ``.jsonl`` file whose first text line holds chat ``messages`` (those need the template)."""
    if path.suffix.lower() != ".jsonl":
        return False
    with path.open("rb") as handle:
        first = next((line for line in handle if line.strip()), b"")
    try:
        record = json.loads(first.decode("utf-8", "replace"))
    except json.JSONDecodeError:
        return True  # read whole: read_text_items names the bad line
    return isinstance(record, dict) and "messages" in record
