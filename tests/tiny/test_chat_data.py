"""Chat-formatted data on the tiny models: texts that end in the pad token, ``messages``
files and ``--chat-template`` in every command.

Both tiny models carry SmolLM2's tokenizer: ``<|im_end|>`` is the eos token and the pad
token (id 2), and its chat template is SmolLM2's. A hand-written chat text ends in it,
so whether a pad position was read can only be told from the layout, not the token id.
"""

from __future__ import annotations

import csv
import json

import pytest

from extraction.chat import Chat, format_texts
from extraction.cli import main
from extraction.comparison.compare import compare_strategies
from extraction.texts import tokenize_texts

TURNS = [
    ("Hi", "Hello! How can I help?"),
    ("What is two plus two?", "Four."),
    ("Name a colour.", "Blue, the colour of a clear sky over the sea on a calm summer afternoon."),
    ("Say yes.", "Yes."),
    ("Capital of France?", "Paris is the capital of France."),
    ("Count to three.", "One, two, three."),
]
#: Written as instruct data is: every text ends in <|im_end|>, the pad token.
CHAT_TEXTS = [
    f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>" for user, answer in TURNS
]


def test_pad_ending_batch_gets_pad_state_not_cross_text(tiny_model):
    tokenized = tokenize_texts(tiny_model.tokenizer, CHAT_TEXTS)
    assert all(ids[-1] == tiny_model.pad_token_id for ids in tokenized.token_ids)  # the case under test
    report = compare_strategies(tiny_model, tokenized, "right-naive,right,left,packed,packed-naive", batch_size=3)
    naive = report.strategies["right-naive"]
    assert naive.verdict == "corrupted"
    assert naive.cause_kind == "pad-state", naive.cause
    assert not naive.extraction.saw_other_text.any()  # right padding never shows a text another one
    lengths = tokenized.lengths
    for start in range(0, len(lengths), 3):
        group = range(start, start + 3)
        longest = max(lengths[i] for i in group)
        assert [bool(naive.extraction.read_is_pad[i]) for i in group] == [lengths[i] < longest for i in group]
    for name in ("right", "left", "packed"):
        assert (report.strategies[name].verdict, report.strategies[name].cause_kind) == ("exact", "none"), name
    assert report.strategies["packed-naive"].cause_kind == "cross-text"


def write_messages(path, turns=TURNS):
    lines = [
        json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
        for user, answer in turns
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_compare_reads_a_messages_file_with_the_models_template(tiny_llama, tmp_path, capsys):
    texts_file, out = write_messages(tmp_path / "chat.jsonl"), tmp_path / "out.json"
    args = ["compare", "--model", "tiny-random-llama", "--texts", str(texts_file), "--batch-size", "3"]
    assert main([*args, "--strategies", "right-naive,right", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["strategies"]["right-naive"]["cause_kind"] == "pad-state"
    assert data["strategies"]["right"]["cause_kind"] == "none"
    expected = format_texts([Chat((("user", u), ("assistant", a))) for u, a in TURNS], tiny_llama.tokenizer)
    expected_tokens = sum(tokenize_texts(tiny_llama.tokenizer, expected).lengths)
    assert f"{len(TURNS)} texts, {expected_tokens} tokens" in capsys.readouterr().out


def test_chat_template_flag_formats_plain_texts_in_compare(tiny_llama, tmp_path, capsys):
    texts_file = tmp_path / "t.txt"
    texts_file.write_text("\n".join(user for user, _ in TURNS) + "\n", encoding="utf-8")
    args = ["compare", "--model", "tiny-random-llama", "--texts", str(texts_file), "--strategies", "right"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main([*args, "--chat-template"]) == 0
    as_chat = capsys.readouterr().out
    formatted = format_texts([user for user, _ in TURNS], tiny_llama.tokenizer, as_chat=True)
    tokens = sum(tokenize_texts(tiny_llama.tokenizer, formatted).lengths)
    assert f"{len(TURNS)} texts, {tokens} tokens" in as_chat
    assert f"{len(TURNS)} texts, {tokens} tokens" not in plain


def test_a_model_without_a_template_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    import extraction.chat

    monkeypatch.setattr(extraction.chat, "has_chat_template", lambda tokenizer: False)
    texts_file = write_messages(tmp_path / "chat.jsonl")
    code = main(["compare", "--model", "tiny-random-gpt2", "--texts", str(texts_file), "--strategies", "right"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tiny-random-gpt2 has no chat template" in err[0]


@pytest.mark.parametrize("command", ["compare", "audit", "extract"])
def test_a_folder_as_texts_is_named_a_folder(tmp_path, capsys, command):
    extra = {"audit": ["--states", str(tmp_path / "s.npy")], "extract": ["--out", str(tmp_path / "o.safetensors")]}
    code = main([command, "--model", "tiny-random-llama", "--texts", str(tmp_path), *extra.get(command, [])])
    assert code == 2
    assert "is a folder, not a texts file" in capsys.readouterr().err


def test_extract_and_audit_with_chat_template_agree(tmp_path, capsys):
    texts_file = write_messages(tmp_path / "chat.jsonl")
    out, audit_json = tmp_path / "states.safetensors", tmp_path / "audit.json"
    common = ["--model", "tiny-random-llama", "--texts", str(texts_file)]
    assert (
        main(["extract", *common, "--out", str(out), "--strategy", "right", "--batch-size", "3", "--verify", "3"]) == 0
    )
    assert main(["audit", *common, "--states", str(out), "--json", str(audit_json)]) == 0
    assert json.loads(audit_json.read_text())["verdict"] == "exact"
    capsys.readouterr()


def test_probe_with_chat_template_formats_the_labelled_texts(tmp_path, capsys):
    data_file = tmp_path / "data.csv"
    with data_file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(12):
            writer.writerow([f"Review {i}: {'great' if i % 2 else 'awful'} food.<|im_end|>", " a" if i % 2 else " b"])
    out = tmp_path / "probe.json"
    args = ["probe", "--model", "tiny-random-llama", "--data", str(data_file), "--strategies", "right-naive,right"]
    assert main([*args, "--batch-size", "4", "--layer", "0", "--chat-template", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    layer = report["layers"]["0"]  # the probe command reports the layer sweep
    assert layer["right"]["corrupted_fraction"] == 0.0
    assert layer["right-naive"]["corrupted_fraction"] > 0.0
    capsys.readouterr()
