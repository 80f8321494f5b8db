"""Sharding without a model: the plan, the balance by tokens, the streamed texts reader."""

import json

import pytest

from extraction.storage.shards import assign_shards, plan_shards, shard_name
from extraction.storage.text_stream import TextsHasher, TextSource
from extraction.texts import TextsError, read_texts, texts_sha256


def test_plan_is_contiguous_and_named_by_count():
    lengths = [3, 1, 4, 1, 5, 9, 2]
    shards = plan_shards(lengths, [0, 100, 200, 300], shard_texts=2)
    assert [(s.first_text, s.rows, s.tokens, s.offset) for s in shards] == [
        (0, 2, 4, 0),
        (2, 2, 5, 100),
        (4, 2, 14, 200),
        (6, 1, 2, 300),
    ]
    assert shards[0].file == "shard-00000-of-00004.safetensors" == shard_name(0, 4)
    assert shard_name(3, 123456) == "shard-000003-of-123456.safetensors"
    assert shards[2].text_index.tolist() == [4, 5]


def test_shares_are_balanced_by_tokens_not_by_count():
    # One long shard and many short ones: by count rank 0 would get 3 of 6 shards (with
    # the long one); by tokens it gets the long one alone.
    lengths = [100, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10]
    shards = plan_shards(lengths, list(range(6)), shard_texts=2)
    shares = assign_shards(shards, 2)
    loads = [sum(s.tokens for s in share) for share in shares]
    assert sorted(s.number for share in shares for s in share) == list(range(6))
    assert loads == [110, 100]
    assert [len(share) for share in shares] == [1, 5]
    assert all(share == sorted(share, key=lambda s: s.number) for share in shares)
    assert assign_shards(shards, 2) == shares  # deterministic: every rank computes the same


CONTENT = [
    "first line",
    "with\u2028a unicode line separator and a form\x0cfeed",
    "   ",
    "emoji 🎉 and CJK 漢字",
    "nul\x00inside",
]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_streamed_txt_gives_the_texts_read_texts_gives(tmp_path, newline):
    path = tmp_path / "t.txt"
    long_line = "x" * 70_000 + "é"  # longer than the head checked before streaming
    path.write_bytes(("\ufeff" + newline.join([*CONTENT, long_line, ""])).encode("utf-8"))
    source = TextSource(path)
    scanned = list(source.scan())
    expected = read_texts(path)
    assert [text for _, text, _ in scanned] == expected
    assert [index for index, _, _ in scanned] == list(range(len(expected)))
    for _, text, offset in scanned:
        assert source.read(offset, 1) == [text]
    assert source.read(scanned[1][2], 3) == expected[1:4]
    hasher = TextsHasher()
    for text in expected:
        hasher.update(text)
    assert hasher.hexdigest() == texts_sha256(expected)


def test_streamed_jsonl_and_its_errors(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["a", "b\nc", "d"]) + "\n\n", encoding="utf-8")
    assert [t for _, t, _ in TextSource(path).scan()] == read_texts(path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"txt": "b"}\n', encoding="utf-8")
    with pytest.raises(TextsError, match="line 2"):
        list(TextSource(bad).scan())
    binary = tmp_path / "b.txt"
    binary.write_bytes(bytes(range(32)) * 10)
    with pytest.raises(TextsError):
        TextSource(binary)


def test_csv_is_read_whole(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"two\nlines",1\nplain,0\n', encoding="utf-8")
    source = TextSource(path)
    assert not source.streamed
    assert [t for _, t, _ in source.scan()] == read_texts(path) == ["two\nlines", "plain"]
    assert source.read(1, 1) == ["plain"]
