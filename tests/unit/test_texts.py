"""Reading texts files and tokenizing texts."""

import pytest

from extraction.texts import TextsError, read_texts, tokenize_texts


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_txt_skips_blank_lines_and_handles_crlf(tmp_path):
    path = write(tmp_path, "t.txt", "first text\r\n\r\n  \r\nsecond text\r\n")
    assert read_texts(path) == ["first text", "second text"]


def test_jsonl_and_csv(tmp_path):
    assert read_texts(write(tmp_path, "t.jsonl", '{"text": "a b"}\n\n{"text": "c", "x": 1}\n')) == ["a b", "c"]
    assert read_texts(write(tmp_path, "t.csv", 'id,text\n1,"hello, world"\n2,bye\n')) == ["hello, world", "bye"]


def test_malformed_jsonl_names_the_line(tmp_path):
    with pytest.raises(TextsError, match="line 2 is not valid JSON"):
        read_texts(write(tmp_path, "t.jsonl", '{"text": "ok"}\n{oops\n'))
    with pytest.raises(TextsError, match="line 1 has no 'text' field"):
        read_texts(write(tmp_path, "t.jsonl", '{"body": "x"}\n'))


def test_csv_without_text_column(tmp_path):
    with pytest.raises(TextsError, match="no 'text' column"):
        read_texts(write(tmp_path, "t.csv", "body\nx\n"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "", "contains no texts"),
        ("blank.txt", "\n  \n\n", "contains no texts"),
        ("bin.txt", b"\x00\x01\x02binary", "binary"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("t.docx", "text", "unsupported file type"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, name, content, message):
    with pytest.raises(TextsError, match=message):
        read_texts(write(tmp_path, name, content))


def test_missing_file(tmp_path):
    with pytest.raises(TextsError, match="no such file"):
        read_texts(tmp_path / "nope.txt")


class CharTokenizer:
    """One token per character: enough to test truncation and empty texts."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}


def test_tokenize_truncates_and_says_so():
    tokenized = tokenize_texts(CharTokenizer(), ["abc", "abcdefgh"], max_tokens=5)
    assert tokenized.lengths == [3, 5]
    assert tokenized.truncated == [(1, 8)]
    assert "text 2 (8 tokens)" in tokenized.truncation_note


def test_tokenize_refuses_no_texts_and_zero_token_texts():
    with pytest.raises(TextsError, match="no texts"):
        tokenize_texts(CharTokenizer(), [])
    with pytest.raises(TextsError, match="text 2"):
        tokenize_texts(CharTokenizer(), ["a", ""])
