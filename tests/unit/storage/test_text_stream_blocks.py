"""TextSource.sample reads a .txt file a block of lines at a time: the same texts, count and
texts_sha256 as the line-by-line scan and as reading the file whole, whatever the block size cuts."""

from __future__ import annotations

import codecs

import pytest

import extraction.storage.text_stream as text_stream
from extraction.storage.text_stream import TextSource
from extraction.texts import TextsError, read_texts, texts_sha256

CONTENT = (
    "first\r\nsecond\rthird\n\n   \n\u3000\nwith\x0cform feed\nnul\x00inside\n\x00\nemoji 🙂 and é\r\n"
    "\r\r\nlast line without a break"
)


def _line_by_line(source: TextSource, indices: list[int]):
    texts = [text for _, text, _ in source.scan()]
    return {i: texts[i] for i in indices if i < len(texts)}, len(texts), texts_sha256(texts)


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 64, 1 << 20])
@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_blocks_give_what_the_scan_and_read_texts_give(tmp_path, monkeypatch, block, bom):
    path = tmp_path / "texts.txt"
    path.write_bytes(bom + CONTENT.encode("utf-8"))
    monkeypatch.setattr(text_stream, "_BLOCK_BYTES", block)
    source = TextSource(path)
    whole = read_texts(path)
    indices = [0, 2, 4, 5, len(whole) - 1, len(whole) + 3]
    found, count, digest = source.sample(indices)
    assert (found, count, digest) == _line_by_line(source, indices)
    assert count == len(whole) and digest == texts_sha256(whole)
    assert source.sample(indices, hash_texts=False) == (found, count, None)  # a store with no hash to compare
    assert found[len(whole) - 1] == "last line without a break" and found[4] == "nulinside"


def test_progress_reaches_the_file_and_bad_utf8_is_named_by_line(tmp_path, monkeypatch):
    monkeypatch.setattr(text_stream, "_BLOCK_BYTES", 16)
    monkeypatch.setattr(text_stream, "_PROGRESS_BYTES", 32)
    path = tmp_path / "texts.txt"
    path.write_bytes(b"".join(f"text number {k}\n".encode() for k in range(50)))
    seen: list[tuple[int, int]] = []
    TextSource(path).sample([3], progress=lambda done, total: seen.append((done, total)))
    size = path.stat().st_size
    assert len(seen) > 3 and all(total == size for _, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen) and seen[-1][0] <= size
    path.write_bytes(b"fine\n" * 14_000 + b"bad \xff byte\n")  # past the 64 KiB head checked on opening
    with pytest.raises(TextsError, match="line 14001 is not UTF-8"):
        TextSource(path).sample([0])
