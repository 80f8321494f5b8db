"""Reading texts from files and tokenizing them once for every strategy.

Texts files: ``.txt`` (one text a line, blank lines skipped), ``.jsonl`` (a ``text``
field on each line) and ``.csv`` (a ``text`` column). Anything else, or a malformed
file, raises :class:`TextsError` with a message naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv")


class TextsError(ValueError):
    """A texts file or a list of texts cannot be used; the message says why."""


def parse_texts(content: str, suffix: str, source: str = "input") -> list[str]:
    """Parse the decoded content of a texts file of type ``suffix`` into texts."""
    suffix = suffix.lower()
    if suffix == ".txt":
        texts = [line.strip("\r") for line in content.splitlines()]
        texts = [t for t in texts if t.strip()]
    elif suffix == ".jsonl":
        texts = []
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TextsError(f"{source}: line {number} is not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or "text" not in record:
                raise TextsError(f"{source}: line {number} has no 'text' field")
            if not isinstance(record["text"], str):
                raise TextsError(f"{source}: line {number}: 'text' is not a string")
            texts.append(record["text"])
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(content))
        if reader.fieldnames is None or "text" not in reader.fieldnames:
            found = ", ".join(reader.fieldnames or []) or "none"
            raise TextsError(f"{source}: no 'text' column (columns found: {found})")
        texts = [row["text"] for row in reader if row.get("text") and row["text"].strip()]
    else:
        raise TextsError(f"{source}: unsupported file type '{suffix}' (use one of {', '.join(TEXT_SUFFIXES)})")
    if not texts:
        raise TextsError(f"{source}: contains no texts")
    return texts


def decode_bytes(data: bytes, source: str = "input") -> str:
    """Decode file bytes as UTF-8 (a BOM is allowed); binary or other encodings are refused."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise TextsError(f"{source}: looks like a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TextsError(f"{source}: is not UTF-8 text (bad byte at offset {error.start})") from None


def read_texts(path: str | Path) -> list[str]:
    """Read texts from a ``.txt``, ``.jsonl`` or ``.csv`` file."""
    path = Path(path)
    if not path.is_file():
        raise TextsError(f"{path}: no such file")
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise TextsError(f"{path}: unsupported file type '{path.suffix}' (use one of {', '.join(TEXT_SUFFIXES)})")
    return parse_texts(decode_bytes(path.read_bytes(), str(path)), path.suffix, str(path))


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

    @property
    def truncation_note(self) -> str | None:
        if not self.truncated:
            return None
        items = ", ".join(f"text {i + 1} ({n} tokens)" for i, n in self.truncated[:5])
        more = f" and {len(self.truncated) - 5} more" if len(self.truncated) > 5 else ""
        return f"cut to the first {self.max_tokens} tokens (the model's context): {items}{more}"


def tokenize_texts(tokenizer, texts: list[str], max_tokens: int | None = None) -> TokenizedTexts:
    """Tokenize each text on its own; cut texts longer than ``max_tokens``.

    Raises :class:`TextsError` if there are no texts or a text has no tokens at all.
    """
    if not texts:
        raise TextsError("no texts given")
    token_ids: list[list[int]] = []
    truncated: list[tuple[int, int]] = []
    for index, text in enumerate(texts):
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
