"""Texts files larger than memory: read one text at a time, and from a byte offset.

:class:`TextSource` reads a ``.txt`` or ``.jsonl`` file as a stream with the same rules
as :func:`~extraction.texts.read_texts` (lines end at ``\\n``, ``\\r\\n`` or ``\\r``; blank
lines skipped; NUL characters removed with a warning; a JSONL line must hold a non-empty
string ``text``), so a streamed file gives the same texts, in the same order, as reading
it whole. :meth:`TextSource.scan` yields ``(index, text, byte_offset)`` for every text,
and :meth:`TextSource.read` reads ``count`` texts from a byte offset met during a scan, so
a rank that knows where its share starts reads only its share.

``.csv`` files (quoted fields can span lines) and UTF-16 files are read whole, with
:func:`~extraction.texts.read_texts`: convert those to JSONL for files larger than memory.

:class:`TextsHasher` computes :func:`~extraction.texts.texts_sha256` one text at a time.
"""

from __future__ import annotations

import bisect
import codecs
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from ..texts import TEXT_SUFFIXES, TextsError, decode_bytes, jsonl_text, read_texts, unicode_problem

logger = logging.getLogger(__name__)

STREAMED_SUFFIXES = (".txt", ".jsonl")
_BLOCK_BYTES = 1 << 20
_HEAD_BYTES = 1 << 16  # checked for binary content and encoding before streaming
_LINE_BREAK = re.compile(rb"\r\n|\n|\r")
_LINE_BREAK_TEXT = re.compile(r"\r\n|\n|\r")
_PROGRESS_BYTES = 8 << 20  # sample() reports progress about this often


class TextsHasher:
    """:func:`~extraction.texts.texts_sha256` of texts given one at a time: the SHA-256 of
    ``json.dumps(texts, ensure_ascii=False)``, i.e. ``[`` + the texts' JSON joined by ``", "`` + ``]``."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b"[")
        self.count = 0

    def update(self, text: str) -> None:
        if self.count:
            self._hash.update(b", ")
        self._hash.update(json.dumps(text, ensure_ascii=False).encode("utf-8"))
        self.count += 1

    def update_many(self, texts: list[str]) -> None:
        """:meth:`update` with each of ``texts`` in turn, in one ``json.dumps`` of the list (the same bytes)."""
        if not texts:
            return
        if self.count:
            self._hash.update(b", ")
        self._hash.update(json.dumps(texts, ensure_ascii=False)[1:-1].encode("utf-8"))
        self.count += len(texts)

    def hexdigest(self) -> str:
        final = self._hash.copy()
        final.update(b"]")
        return final.hexdigest()


def _lines(handle, offset: int) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, line bytes without its break)`` from ``offset`` on, read in blocks."""
    handle.seek(offset)
    pending, position = b"", offset
    while True:
        block = handle.read(_BLOCK_BYTES)
        end_of_file = not block
        data = pending + block
        start = 0
        for match in _LINE_BREAK.finditer(data):
            if not end_of_file and match.end() == len(data) and match.group() == b"\r":
                break  # a final \r may be the first half of \r\n
            yield position + start, data[start : match.start()]
            start = match.end()
        pending, position = data[start:], position + start
        if end_of_file:
            if pending:
                yield position, pending
            return


def _line_blocks(handle, offset: int) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, bytes)`` of runs of whole lines from ``offset`` on, about a block at a time: each
    run ends at a line break (the last one at the end of the file), so no line or ``\r\n`` is split."""
    handle.seek(offset)
    pending, position = b"", offset
    while True:
        block = handle.read(_BLOCK_BYTES)
        data = pending + block
        if not block:
            if data:
                yield position, data
            return
        cut = data.rfind(b"\n") + 1
        if not cut:  # no \n: cut after a \r that is not the last byte (which may start a \r\n)
            cut = data.rfind(b"\r", 0, len(data) - 1) + 1
        if cut:
            yield position, data[:cut]
        pending, position = data[cut:], position + cut


def _check_head(head: bytes, source: str) -> None:
    """Refuse binary content and other encodings as :func:`~extraction.texts.decode_bytes`
    does, on the head of the file cut where no character can be split."""
    if len(head) < _HEAD_BYTES:
        decode_bytes(head, source)
        return
    cut = max(head.rfind(b"\n"), head.rfind(b"\r")) + 1
    if cut:
        decode_bytes(head[:cut], source)
        return
    for trailing in range(4):  # one long line: a UTF-8 character is at most 4 bytes
        try:
            decode_bytes(head[: len(head) - trailing], source)
            return
        except TextsError:
            if trailing == 3:
                raise


class TextSource:
    """A texts file read as a stream (``.txt``, ``.jsonl`` in UTF-8) or whole (the rest)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise TextsError(f"{self.path}: no such file")
        suffix = self.path.suffix.lower()
        if suffix not in TEXT_SUFFIXES:
            raise TextsError(
                f"{self.path}: unsupported file type '{self.path.suffix}' (use one of {', '.join(TEXT_SUFFIXES)})"
            )
        with self.path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
        if not head:
            raise TextsError(f"{self.path}: the file is empty, it contains no texts")
        self.suffix = suffix
        utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        self.streamed = suffix in STREAMED_SUFFIXES and not utf16
        self._whole: list[str] | None = None
        if self.streamed:
            # Binary content and other encodings are refused as read_texts refuses them; the
            # head is cut at its last line break so that no character is split.
            _check_head(head, str(self.path))
            self._start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        else:
            self._whole = read_texts(self.path)

    def _text(self, line: bytes, number: int | None) -> str | None:
        where = f"line {number}" if number is not None else "a line"
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise TextsError(
                f"{self.path}: {where} is not UTF-8 (bad byte 0x{line[error.start]:02x}); save the file as UTF-8"
            ) from None
        if self.suffix == ".jsonl":
            text = jsonl_text(decoded, number or 0, str(self.path))
        else:
            text = decoded if decoded.replace("\x00", "").strip() else None
            problem = unicode_problem(text) if text is not None else None
            if problem:
                raise TextsError(f"{self.path}: {where}: {problem}")
        return text.replace("\x00", "") if text is not None else None

    def scan(self) -> Iterator[tuple[int, str, int]]:
        """``(index, text, byte_offset)`` for every text in file order (the offset of its
        line; for a file read whole, the index). NUL characters are removed, and counted
        in a warning at the end."""
        if self._whole is not None:
            yield from ((index, text, index) for index, text in enumerate(self._whole))
            return
        index = nul_texts = 0
        with self.path.open("rb") as handle:
            for number, (offset, line) in enumerate(_lines(handle, self._start), start=1):
                text = self._text(line, number)
                if text is None:
                    continue
                nul_texts += b"\x00" in line
                yield index, text, offset
                index += 1
        if index == 0:
            raise TextsError(f"{self.path}: contains no texts")
        if nul_texts:
            logger.warning("%s: removed NUL bytes from %d text(s)", self.path, nul_texts)

    def read(self, offset: int, count: int) -> list[str]:
        """``count`` texts starting at ``offset``, a byte offset that :meth:`scan` gave."""
        if self._whole is not None:
            return self._whole[offset : offset + count]
        texts: list[str] = []
        with self.path.open("rb") as handle:
            for _, line in _lines(handle, offset):
                text = self._text(line, None)
                if text is not None:
                    texts.append(text)
                    if len(texts) == count:
                        break
        if len(texts) != count:
            raise TextsError(f"{self.path}: changed while being read ({len(texts)} of {count} texts found)")
        return texts

    def texts_at(self, indices: list[int]) -> list[str]:
        """The texts at ``indices`` (any order), found in one scan."""
        wanted = set(indices)
        found = {index: text for index, text, _ in self.scan() if index in wanted}
        missing = wanted - found.keys()
        if missing:
            raise TextsError(f"{self.path}: has no text {min(missing) + 1}")
        return [found[index] for index in indices]

    def sample(
        self, indices: list[int], progress=None, hash_texts: bool = True
    ) -> tuple[dict[int, str], int, str | None]:
        """``{index: text}`` for those of ``indices`` the file has, the number of texts in the file
        and their :func:`~extraction.texts.texts_sha256` (None without ``hash_texts``: a store that
        records no hash needs none), from one scan that holds only the texts asked for.
        ``progress(done_bytes, total_bytes)``, if given, is called every 65,536 texts (a ``.txt``
        file: every 8 MiB). A streamed ``.txt`` file is read a block of lines at a time
        (decoded, split and hashed in one call each), with the same texts, count and hash as
        :meth:`scan` gives; a block that is not UTF-8 is left to :meth:`scan`, whose error names the line."""
        if self._whole is None and self.suffix == ".txt":
            try:
                return self._sample_blocks(indices, progress, hash_texts)
            except UnicodeDecodeError:
                pass  # the line-by-line scan below names the line that is not UTF-8
        wanted = set(indices)
        found: dict[int, str] = {}
        hasher = TextsHasher()
        total = self.path.stat().st_size
        for index, text, offset in self.scan():
            hasher.update(text)  # counts even where the hash is not asked for (cheap next to the scan)
            if index in wanted:
                found[index] = text
            if progress is not None and index % 65536 == 0:
                progress(offset if self._whole is None else 0, total)
        return found, hasher.count, hasher.hexdigest() if hash_texts else None

    def _sample_blocks(
        self, indices: list[int], progress=None, hash_texts: bool = True
    ) -> tuple[dict[int, str], int, str | None]:
        """:meth:`sample` of a streamed ``.txt`` file, a block of whole lines at a time."""
        wanted = sorted(set(indices))
        found: dict[int, str] = {}
        hasher = TextsHasher()
        total = self.path.stat().st_size
        index = nul_texts = reported = 0
        with self.path.open("rb") as handle:
            for offset, chunk in _line_blocks(handle, self._start):
                text = chunk.decode("utf-8")
                lines = _LINE_BREAK_TEXT.split(text) if "\r" in text else text.split("\n")
                if lines[-1] == "":
                    lines.pop()  # the chunk ended in a line break
                if b"\x00" in chunk:
                    texts = [line.replace("\x00", "") for line in lines if line.replace("\x00", "").strip()]
                    nul_texts += sum("\x00" in line for line in lines if line.replace("\x00", "").strip())
                else:
                    texts = [line for line in lines if line.strip()]
                if hash_texts:
                    hasher.update_many(texts)
                for k in wanted[bisect.bisect_left(wanted, index) : bisect.bisect_left(wanted, index + len(texts))]:
                    found[k] = texts[k - index]
                index += len(texts)
                if progress is not None and offset + len(chunk) - reported >= _PROGRESS_BYTES:
                    reported = offset + len(chunk)
                    progress(reported, total)
        if index == 0:
            raise TextsError(f"{self.path}: contains no texts")
        if nul_texts:
            logger.warning("%s: removed NUL bytes from %d text(s)", self.path, nul_texts)
        return found, index, hasher.hexdigest() if hash_texts else None


__all__ = ["STREAMED_SUFFIXES", "TextSource", "TextsHasher"]
