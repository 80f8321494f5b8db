"""Reading texts from files, tokenizing them once for every strategy, and their fingerprint
(:func:`texts_sha256`, recorded with extracted states).

Texts files: ``.txt`` (one text a line, blank lines skipped), ``.jsonl`` (a ``text``
field on each line, or a chat ``messages`` field: :mod:`extraction.chat`) and ``.csv`` (a
``text`` column). A folder, a device or another non-regular file is named as such. Anything else, or a malformed
file, raises :class:`TextsError` with a message naming the file and what is wrong.

What counts as text: UTF-8 (a BOM is allowed) or UTF-16 with a byte-order mark. A file
in which more than :data:`BINARY_CONTROL_FRACTION` of the bytes are control bytes other
than tab, newline, carriage return, form feed and vertical tab is binary and refused; a
few stray NUL bytes in otherwise textual content are removed from the texts (with a
warning naming the texts), since no tokenizer or pipeline means anything by them. Other
characters (emoji, CJK, right-to-left marks, zero-width and combining characters,
escape sequences) are kept exactly: they are part of what the model reads. Lines end at
``\n``, ``\r\n`` or ``\r`` only, not at the other characters ``str.splitlines`` breaks
on (form feed, U+2028, ...), so a text keeps them.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv")
#: A file with more control bytes than this (as a fraction of its bytes) is binary.
BINARY_CONTROL_FRACTION = 0.05
# C0 control bytes and DEL, less the whitespace ones text files do contain.
_CONTROL_BYTES = bytes([*range(0x20), 0x7F]).translate(None, b"\t\n\r\f\v")
_LINE_BREAK = re.compile(r"\r\n|\n|\r")


class TextsError(ValueError):
    """A texts file or a list of texts cannot be used; the message says why."""


def split_lines(content: str) -> list[str]:
    """Lines of ``content``, broken at ``\\n``, ``\\r\\n`` or ``\\r`` only (a final line break
    adds no empty line). Unlike ``str.splitlines`` this keeps form feeds, U+2028 and the
    other characters that are line breaks to Unicode but not to a texts file."""
    lines = _LINE_BREAK.split(content)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse_texts(content: str, suffix: str, source: str = "input") -> list[str]:
    """Plain texts of a texts file (:func:`parse_text_items`); a file holding chat ``messages``
    is refused, since those need the model's chat template (:func:`extraction.chat.format_texts`)."""
    items = parse_text_items(content, suffix, source)
    chats = [number for number, item in enumerate(items, start=1) if not isinstance(item, str)]
    if chats:
        raise TextsError(
            f"{source}: text {chats[0]} holds chat 'messages', which need the model's chat template "
            "(extraction.chat.format_texts)"
        )
    return items  # type: ignore[return-value]


@dataclass(frozen=True)
class Chat:
    """One conversation: ``(role, content)`` turns in order."""

    turns: tuple[tuple[str, str], ...]

    def messages(self) -> list[dict[str, str]]:
        """The turns as ``apply_chat_template`` takes them."""
        return [{"role": role, "content": content} for role, content in self.turns]


#: What a texts file yields before rendering: a plain text or a conversation.
TextItem = str | Chat


def parse_messages(value: Any, where: str) -> Chat:
    """A :class:`Chat` from a ``messages`` value (a non-empty list of ``{role, content}``
    objects with string values); :class:`TextsError` naming ``where`` and what is wrong."""
    if not isinstance(value, list) or not value:
        raise TextsError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    turns = []
    for number, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            raise TextsError(f"{where}: message {number} is not an object with 'role' and 'content'")
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or not role.strip():
            raise TextsError(f"{where}: message {number}: 'role' is not a non-empty string")
        if not isinstance(content, str):
            raise TextsError(f"{where}: message {number}: 'content' is not a string")
        problem = unicode_problem(role + content)
        if problem:
            raise TextsError(f"{where}: message {number} {problem}")
        turns.append((role, content.replace("\x00", "")))
    return Chat(tuple(turns))


def parse_text_items(content: str, suffix: str, source: str = "input") -> list[TextItem]:
    """Parse the decoded content of a texts file of type ``suffix`` into texts, and, for a
    ``.jsonl`` line with a ``messages`` field, a :class:`~extraction.chat.Chat`.

    NUL characters are removed from the texts (a warning names the texts); a text left
    blank by that is dropped like a blank line.
    """

    suffix = suffix.lower()
    items: list[TextItem] = []
    if suffix == ".txt":
        items = [line for line in split_lines(content) if line.replace("\x00", "").strip()]
    elif suffix == ".jsonl":
        for number, line in enumerate(split_lines(content), start=1):
            item = jsonl_item(line, number, source)
            if item is not None:
                items.append(item)
    elif suffix == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(content, newline=""))
            if reader.fieldnames is None or "text" not in reader.fieldnames:
                found = ", ".join(reader.fieldnames or []) or "none"
                raise TextsError(f"{source}: no 'text' column (columns found: {found})")
            rows = list(reader)
        except csv.Error as error:
            raise TextsError(f"{source}: is not valid CSV near line {reader.line_num} ({error})") from None
        items = [row["text"] for row in rows if row.get("text") and row["text"].replace("\x00", "").strip()]
    else:
        raise TextsError(f"{source}: unsupported file type '{suffix}' (use one of {', '.join(TEXT_SUFFIXES)})")
    items = _without_nul(items, source)
    if not items:
        raise TextsError(f"{source}: contains no texts")
    return items


def jsonl_item(line: str, number: int, source: str = "input") -> TextItem | None:
    """Line ``number`` of a JSONL file: its ``text`` field, or its chat ``messages`` as a
    :class:`~extraction.chat.Chat`, or None for a blank line; :class:`TextsError` naming the
    line when it is not a JSON object with a non-empty string ``text`` or valid ``messages``."""
    if not line.strip():
        return None
    try:
        # strict=False: raw tabs and other control characters inside strings are text.
        record = json.loads(line, strict=False)
    except json.JSONDecodeError as error:
        raise TextsError(f"{source}: line {number} is not valid JSON ({error.msg} at column {error.colno})") from None
    if isinstance(record, dict) and "messages" in record:
        if "text" in record:
            raise TextsError(f"{source}: line {number} has both 'text' and 'messages'; keep one")
        return parse_messages(record["messages"], f"{source}: line {number}")
    if not isinstance(record, dict) or "text" not in record:
        raise TextsError(f"{source}: line {number} has no 'text' field (nor chat 'messages')")
    if not isinstance(record["text"], str):
        raise TextsError(f"{source}: line {number}: 'text' is not a string")
    if not record["text"].replace("\x00", "").strip():
        raise TextsError(f"{source}: line {number}: 'text' is empty")
    problem = unicode_problem(record["text"])
    if problem:
        raise TextsError(f"{source}: line {number}: 'text' {problem}")
    return record["text"]


def jsonl_text(line: str, number: int, source: str = "input") -> str | None:
    """:func:`jsonl_item` for readers that take plain texts only (the streamed reader of
    sharded runs): a chat ``messages`` line is refused with a clear error."""
    item = jsonl_item(line, number, source)
    if item is not None and not isinstance(item, str):
        raise TextsError(
            f"{source}: line {number} holds chat 'messages', which a sharded run does not stream yet; "
            "extract them in one process (--out FILE.safetensors), which formats them with the chat template"
        )
    return item


def _without_nul(texts: list[TextItem], source: str) -> list[TextItem]:
    """``texts`` with NUL characters removed from the plain texts (a chat's were removed when
    parsed); a warning names the texts that had some."""
    had_nul = [number for number, text in enumerate(texts, start=1) if isinstance(text, str) and "\x00" in text]
    if not had_nul:
        return texts
    shown = ", ".join(str(number) for number in had_nul[:10]) + (" ..." if len(had_nul) > 10 else "")
    logger.warning("%s: removed NUL bytes from %d text(s): text %s", source, len(had_nul), shown)
    return [text.replace("\x00", "") if isinstance(text, str) else text for text in texts]


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot be encoded (an unpaired surrogate, e.g. from a JSON ``\\ud800``
    escape), or None when it is valid Unicode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"holds an unpaired surrogate U+{ord(text[error.start]):04X} at character {error.start + 1}, "
            "which is not a character (a broken \\u escape?)"
        )
    return None


def decode_bytes(data: bytes, source: str = "input") -> str:
    """Decode file bytes as UTF-8 (a BOM is allowed) or BOM-marked UTF-16.

    Raises :class:`TextsError` for a binary file (more than :data:`BINARY_CONTROL_FRACTION`
    of its bytes are control bytes; UTF-16 without a byte-order mark is recognised and
    named) and for any other encoding.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise TextsError(
                f"{source}: starts with a UTF-16 byte-order mark but is not valid UTF-16 "
                f"(bad bytes at offset {error.start})"
            ) from None
    if data:
        controls = len(data) - len(data.translate(None, _CONTROL_BYTES))
        if controls / len(data) > BINARY_CONTROL_FRACTION:
            if _looks_like_utf16_without_bom(data):
                raise TextsError(f"{source}: looks like UTF-16 text without a byte-order mark; save it as UTF-8")
            raise TextsError(
                f"{source}: looks like a binary file, not text ({100 * controls / len(data):.0f}% control bytes)"
            )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TextsError(
            f"{source}: is not UTF-8 text (bad byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None


def _looks_like_utf16_without_bom(data: bytes) -> bool:
    """True when nearly every other byte is NUL and the bytes between are not, as in
    UTF-16 of mostly Latin text."""
    sample = data[:8192]
    half = len(sample) // 2
    nuls = sorted((sample[0::2].count(0), sample[1::2].count(0)))  # (fewer, more)
    return half >= 2 and nuls[1] >= 0.9 * half and nuls[0] <= 0.1 * half


def read_texts(path: str | Path) -> list[str]:
    """Read plain texts from a ``.txt``, ``.jsonl`` or ``.csv`` file (chat ``messages`` are
    refused: use :func:`read_text_items` and :func:`extraction.chat.format_texts`)."""
    path = Path(path)
    return parse_texts(decode_bytes(_texts_file_bytes(path), str(path)), path.suffix, str(path))


def read_text_items(path: str | Path) -> list[TextItem]:
    """Read texts, and chat conversations (``.jsonl`` ``messages``), from a texts file."""
    path = Path(path)
    return parse_text_items(decode_bytes(_texts_file_bytes(path), str(path)), path.suffix, str(path))


def _texts_file_bytes(path: Path) -> bytes:
    """The bytes of a texts file; :class:`TextsError` saying what ``path`` is when it is not one."""
    if path.is_dir():
        raise TextsError(f"{path}: is a folder, not a texts file")
    if not path.exists():
        raise TextsError(f"{path}: no such file")
    if not path.is_file():
        raise TextsError(f"{path}: is not a regular file (a device, pipe or socket); give a texts file")
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise TextsError(f"{path}: unsupported file type '{path.suffix}' (use one of {', '.join(TEXT_SUFFIXES)})")
    data = path.read_bytes()
    if not data:
        raise TextsError(f"{path}: the file is empty, it contains no texts")
    return data


def texts_sha256(texts: Sequence[str]) -> str:
    """SHA-256 of the texts in order: ``sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8"))``."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass
class TokenizedTexts:
    """Texts tokenized once, individually, exactly as single-sample extraction sees them.

    ``token_ids[i]`` is the list of token ids of ``texts[i]`` (special tokens as the
    tokenizer adds them by default). Texts longer than ``max_tokens`` are cut to their
    first ``max_tokens`` tokens and listed in ``truncated`` as ``(index, original_length)``.
    """

    texts: list[str]
    token_ids: list[list[int]]
    truncated: list[tuple[int, int]] = field(default_factory=list)
    max_tokens: int | None = None

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.token_ids]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> TokenizedTexts:
        """The texts at ``indices``, in that order (truncation records renumbered)."""
        indices = list(indices)
        where = {old: new for new, old in enumerate(indices)}
        truncated = [(where[i], n) for i, n in self.truncated if i in where]
        return TokenizedTexts(
            [self.texts[i] for i in indices], [self.token_ids[i] for i in indices], truncated, self.max_tokens
        )

    @property
    def truncation_note(self) -> str | None:
        if not self.truncated:
            return None
        items = ", ".join(f"text {i + 1} ({n} tokens)" for i, n in self.truncated[:5])
        more = f" and {len(self.truncated) - 5} more" if len(self.truncated) > 5 else ""
        return f"cut to the first {self.max_tokens} tokens (the model's context): {items}{more}"


def tokenize_texts(tokenizer, texts: list[str], max_tokens: int | None = None) -> TokenizedTexts:
    """Tokenize each text on its own; cut texts longer than ``max_tokens``.

    Raises :class:`TextsError` if there are no texts, or a text is not a string, is not
    valid Unicode (an unpaired surrogate) or has no tokens at all (the empty string).
    """
    if not texts:
        raise TextsError("no texts given")
    token_ids: list[list[int]] = []
    truncated: list[tuple[int, int]] = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            if type(text).__name__ == "Chat":
                raise TextsError(f"text {index + 1} is a chat conversation: render it first (chat.format_texts)")
            raise TextsError(f"text {index + 1} is a {type(text).__name__}, not a string")
        problem = unicode_problem(text)
        if problem:
            raise TextsError(f"text {index + 1} {problem}")
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if not ids:
            raise TextsError(f"text {index + 1} ({text[:30]!r}) has no tokens after tokenization")
        if max_tokens is not None and len(ids) > max_tokens:
            truncated.append((index, len(ids)))
            ids = ids[:max_tokens]
        token_ids.append(ids)
    if truncated:
        logger.warning("%d text(s) longer than %d tokens were cut", len(truncated), max_tokens)
    return TokenizedTexts(list(texts), token_ids, truncated, max_tokens)
