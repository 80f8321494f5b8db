"""Chat data without a model: parsing messages, rendering with a template, the errors."""

import json

import pytest

from extraction.chat import Chat, format_texts
from extraction.texts import TextsError, parse_text_items, parse_texts, read_text_items, read_texts


class TemplateTokenizer:
    """A tokenizer with a ChatML-like template; it adds no BOS unless ``adds_bos``."""

    chat_template = "chatml"
    bos_token = "<s>"
    bos_token_id = 1

    def __init__(self, adds_bos: bool = False, starts_with_bos: bool = False):
        self.adds_bos, self.starts_with_bos = adds_bos, starts_with_bos
        self.calls = []

    def apply_chat_template(self, messages, tokenize=True):
        assert tokenize is False
        self.calls.append(messages)
        if any(m["role"] not in ("system", "user", "assistant") for m in messages):
            raise RuntimeError(f"unknown role {messages[0]['role']}")
        body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return ("<s>" if self.starts_with_bos else "") + body

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if self.adds_bos and add_special_tokens else []) + [ord(c) for c in text]}


class NoTemplateTokenizer(TemplateTokenizer):
    chat_template = None


MESSAGES = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def jsonl(*records) -> str:
    return "\n".join(json.dumps(record) for record in records) + "\n"


def test_jsonl_messages_lines_become_chats_beside_plain_texts():
    items = parse_text_items(jsonl({"messages": MESSAGES}, {"text": "plain"}), ".jsonl", "chat.jsonl")
    assert items == [Chat((("user", "Hi"), ("assistant", "Hello"))), "plain"]
    assert items[0].messages() == MESSAGES


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"messages": []}, "non-empty list"),
        ({"messages": "Hi"}, "non-empty list"),
        ({"messages": [{"role": "user"}]}, "message 1 is not an object with 'role' and 'content'"),
        ({"messages": [{"role": "user", "content": 3}]}, "message 1: 'content' is not a string"),
        ({"messages": [{"role": "", "content": "x"}]}, "'role' is not a non-empty string"),
        ({"messages": MESSAGES, "text": "x"}, "both 'text' and 'messages'"),
        ({"body": "x"}, "has no 'text' field \\(nor chat 'messages'\\)"),
    ],
)
def test_bad_messages_name_the_line_and_the_problem(record, message):
    with pytest.raises(TextsError, match=f"chat.jsonl: line 1.*{message}|{message}"):
        parse_text_items(jsonl(record), ".jsonl", "chat.jsonl")


def test_plain_readers_refuse_chats_and_point_to_the_template():
    with pytest.raises(TextsError, match="text 1 holds chat 'messages'"):
        parse_texts(jsonl({"messages": MESSAGES}), ".jsonl", "chat.jsonl")


def test_format_renders_chats_and_keeps_plain_texts_unless_asked():
    tokenizer = TemplateTokenizer()
    items = [Chat((("user", "Hi"), ("assistant", "Hello"))), "plain"]
    texts = format_texts(items, tokenizer)
    assert texts == ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n", "plain"]
    as_chat = format_texts(items, tokenizer, as_chat=True)
    assert as_chat[1] == "<|im_start|>user\nplain<|im_end|>\n"
    assert tokenizer.calls[-1] == [{"role": "user", "content": "plain"}]


def test_plain_texts_need_no_template():
    assert format_texts(["a", "b"], NoTemplateTokenizer()) == ["a", "b"]


@pytest.mark.parametrize("items,as_chat", [(["a"], True), ([Chat((("user", "a"),))], False)])
def test_a_model_without_a_template_is_one_clear_error(items, as_chat):
    with pytest.raises(TextsError, match="tiny has no chat template"):
        format_texts(items, NoTemplateTokenizer(), as_chat=as_chat, model_name="tiny")


def test_a_refused_conversation_names_the_text():
    with pytest.raises(TextsError, match="text 2: the chat template of m refused it"):
        format_texts(["a", Chat((("robot", "x"),))], TemplateTokenizer(), model_name="m")


def test_a_bos_the_tokenizer_adds_again_is_not_doubled():
    chat = [Chat((("user", "a"),))]
    kept = format_texts(chat, TemplateTokenizer(adds_bos=False, starts_with_bos=True))[0]
    assert kept.startswith("<s>")  # the tokenizer adds none: the template's is the only one
    dropped = format_texts(chat, TemplateTokenizer(adds_bos=True, starts_with_bos=True))[0]
    assert dropped.startswith("<|im_start|>")  # the tokenizer adds it back once


def test_messages_files_are_read_as_items(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(jsonl({"messages": MESSAGES}), encoding="utf-8")
    assert read_text_items(path) == [Chat((("user", "Hi"), ("assistant", "Hello")))]
    with pytest.raises(TextsError, match="holds chat 'messages'"):
        read_texts(path)


def test_a_folder_or_a_device_is_named_for_what_it_is(tmp_path):
    with pytest.raises(TextsError, match="is a folder, not a texts file"):
        read_texts(tmp_path)
    with pytest.raises(TextsError, match="is not a regular file"):
        read_text_items("/dev/null")
    with pytest.raises(TextsError, match="no such file"):
        read_texts(tmp_path / "missing.txt")
