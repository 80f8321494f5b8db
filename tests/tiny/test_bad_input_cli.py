"""Bad input on the command line (tiny random models): bad texts, each model failure, the
token budget, interruption and the output file, and bad stored states for ``audit``: one
line on stderr, exit 2 (130 when interrupted), never a traceback, never a partial output file."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from transformers import ViTConfig

from extraction import models
from extraction.cli import main
from extraction.comparison import compare
from extraction.models import ModelLoadError, load_model
from extraction.samples import SAMPLE_TEXTS
from extraction.storage import atomic
from tests.bad_input_cases import (
    ODD_TEXTS,
    STATE_CASES,
    STATE_TEXTS,
    fake_gguf,
    jsonl,
    remote_code_folder,
    state_file,
    write,
)


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    """The single line the command line printed on stderr (fails if there is not exactly one)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


# --- the command line on bad texts ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"", "the file is empty"),
        ("blank.txt", b"\r\n  \r\n\t\n", "contains no texts"),
        ("bin.txt", bytes(range(256)), "binary file"),
        ("latin.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8"),
        ("t.csv", b"id,body\n1,x\n", "no 'text' column (columns found: id, body)"),
        ("t.jsonl", b'{"text": "a"}\n{"text": "b",}\n', "line 2 is not valid JSON"),
        ("t.pdf", b"%PDF-1.7", "unsupported file type '.pdf'"),
    ],
)
def test_cli_bad_texts_file_is_one_line_exit_2_and_no_output(tmp_path, capsys, name, content, message):
    texts = write(tmp_path, name, content)
    out = tmp_path / "out.json"
    code = main(["compare", "--model", "tiny-random-llama", "--texts", str(texts), "--json", str(out)])
    assert code == 2
    line = one_error_line(capsys)
    assert line.startswith("error: ") and message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_cli_texts_with_odd_characters_run(tmp_path, capsys):
    texts = write(tmp_path, "odd.jsonl", jsonl(ODD_TEXTS))
    out = tmp_path / "out.json"
    argv = ["compare", "--model", "tiny-random-llama", "--texts", str(texts), "--strategies", "right,left"]
    assert main([*argv, "--json", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["num_texts"] == len(ODD_TEXTS)
    assert {record["verdict"] for record in data["strategies"].values()} == {"exact"}


def test_cli_long_text_is_cut_and_the_note_is_printed_and_saved(tmp_path, capsys):
    # tiny-random-gpt2 has 512 learned positions: without the cut, position 512 would not exist.
    long_text = " ".join(SAMPLE_TEXTS) * 8
    texts = write(tmp_path, "t.txt", f"a short text\n{long_text}\nanother short one\n")
    out = tmp_path / "out.json"
    argv = [
        "compare",
        "--model",
        "tiny-random-gpt2",
        "--texts",
        str(texts),
        "--strategies",
        "right",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    match = re.search(
        r"^note: cut to the first 512 tokens \(the model's context\): text 2 \((\d+) tokens\)$", printed, re.M
    )
    assert match and int(match.group(1)) > 512
    notes = json.loads(out.read_text())["notes"]
    assert any(note.startswith("cut to the first 512 tokens") and "text 2" in note for note in notes)


# --- the command line on bad models ---------------------------------------------------


def folder_without_weights(tmp_path: Path) -> str:
    (tmp_path / "config.json").write_text("{}")
    return str(tmp_path)


def vision_model_folder(tmp_path: Path) -> str:
    ViTConfig().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    return str(tmp_path)


@pytest.mark.parametrize(
    ("make_model", "message"),
    [
        (lambda tmp_path: "padding-audit-tests/no-such-model", "not found locally and the hub is offline"),
        (lambda tmp_path: str(tmp_path / "no" / "such" / "folder"), "no such file or folder"),
        (folder_without_weights, "has no model weights"),
        (vision_model_folder, "'vit' model, not a causal language model"),
        (remote_code_folder, "needs remote code"),
        (fake_gguf, "not a GGUF file"),
    ],
    ids=["unknown-name", "missing-path", "no-weights", "not-causal-lm", "remote-code", "fake-gguf"],
)
def test_cli_bad_model_is_one_line_exit_2_and_no_output(tmp_path, capsys, monkeypatch, make_model, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = make_model(model_dir)
    texts = write(tmp_path, "t.txt", "a text\n")
    out = tmp_path / "out.json"
    assert main(["compare", "--model", model, "--texts", str(texts), "--json", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: ") and message in line
    assert not out.exists()
    assert not (model_dir / "remote-code-ran").exists()


def test_no_network_is_named_as_such(tmp_path, capsys, monkeypatch):
    """Online mode with the network down: the loader says the hub cannot be reached.

    Every socket is refused, so this runs the real hub client without touching a network."""
    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # the hub client's retry back-off
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(ModelLoadError, match="the hub cannot be reached \\(no network\\?\\)"):
        load_model("padding-audit-tests/no-such-model", device="cpu")

    texts = write(tmp_path, "t.txt", "a text\n")
    assert main(["compare", "--model", "padding-audit-tests/no-such-model", "--texts", str(texts)]) == 2
    assert "the hub cannot be reached" in one_error_line(capsys)


def test_remote_code_is_off_unless_asked_for(tmp_path, monkeypatch):
    seen: list[bool] = []

    def fake_load_model(name, **options):
        seen.append(options["trust_remote_code"])
        raise ModelLoadError("stop here")

    monkeypatch.setattr(models, "load_model", fake_load_model)
    texts = write(tmp_path, "t.txt", "a text\n")
    argv = ["compare", "--model", "some/model", "--texts", str(texts)]
    assert main(argv) == 2
    assert main([*argv, "--trust-remote-code"]) == 2
    assert seen == [False, True]


# --- resources: the token budget per batch --------------------------------------------


def test_cli_max_batch_tokens_is_used_and_recorded(tmp_path, capsys):
    texts = write(tmp_path, "t.txt", "short one\nanother short one\n" + "a much longer text " * 20 + "\nend\n")
    runs = {}
    for budget in (8192, 40):
        out = tmp_path / f"{budget}.json"
        argv = ["compare", "--model", "tiny-random-llama", "--texts", str(texts), "--strategies", "right"]
        assert main([*argv, "--max-batch-tokens", str(budget), "--json", str(out)]) == 0
        runs[budget] = json.loads(out.read_text())
    assert "at most 40 positions a pass" in capsys.readouterr().out
    assert runs[40]["max_batch_tokens"] == 40
    assert runs[8192]["strategies"]["right"]["forward_passes"] == 1
    assert runs[40]["strategies"]["right"]["forward_passes"] > 1
    assert runs[40]["strategies"]["right"]["verdict"] == "exact"


@pytest.mark.parametrize("value", ["0", "-5"])
def test_cli_max_batch_tokens_must_be_positive(tmp_path, capsys, value):
    texts = write(tmp_path, "t.txt", "a text\n")
    argv = ["compare", "--model", "tiny-random-llama", "--texts", str(texts), "--max-batch-tokens", value]
    assert main(argv) == 2
    assert "--max-batch-tokens must be at least 1" in one_error_line(capsys)


# --- interruption and the output file --------------------------------------------------


def test_ctrl_c_mid_comparison_leaves_no_output_file(tmp_path, capsys, monkeypatch):
    texts = write(tmp_path, "t.txt", "\n".join(SAMPLE_TEXTS[:4]) + "\n")
    out_dir = tmp_path / "out"
    real_extract = compare.extract_states
    calls = []

    def interrupted_extract(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(compare, "extract_states", interrupted_extract)
    argv = ["compare", "--model", "tiny-random-llama", "--texts", str(texts), "--json", str(out_dir / "r.json")]
    assert main(argv) == 130
    assert len(calls) == 3
    assert one_error_line(capsys) == "interrupted: no output was written"
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_ctrl_c_while_writing_the_json_leaves_no_file(tmp_path, capsys, monkeypatch):
    texts = write(tmp_path, "t.txt", "one text\nand another\n")
    out = tmp_path / "out" / "r.json"
    out.parent.mkdir()
    out.write_text('{"old": "result"}\n')  # an earlier result must survive too

    seen: list[str] = []

    def interrupt_before_the_rename(fd):  # the temporary file holds the JSON, not yet renamed
        seen.extend(p.name for p in out.parent.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupt_before_the_rename)
    argv = ["compare", "--model", "tiny-random-llama", "--texts", str(texts), "--strategies", "right"]
    assert main([*argv, "--json", str(out)]) == 130
    assert any(name.endswith(".tmp") for name in seen)  # it was writing the JSON when interrupted
    assert "interrupted" in capsys.readouterr().err
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]
    assert json.loads(out.read_text()) == {"old": "result"}


@pytest.mark.parametrize("kind", ["folder", "file-as-folder", "texts-file"])
def test_cli_refuses_an_unwritable_json_path_before_any_work(tmp_path, capsys, monkeypatch, kind):
    texts = write(tmp_path, "t.txt", "a text\n")
    (tmp_path / "plain").write_text("x")
    out = {"folder": tmp_path, "file-as-folder": tmp_path / "plain" / "r.json", "texts-file": texts}[kind]
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["compare", "--model", "tiny-random-llama", "--texts", str(texts), "--json", str(out)]) == 2
    assert one_error_line(capsys).startswith("error: --json ")
    assert texts.read_text() == "a text\n"


# --- stored states through the command line (audit) and an interrupted extract ---------


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_audit_bad_states_is_one_line_exit_2_and_no_output(tmp_path, capsys, case):
    texts = write(tmp_path, "t.txt", "\n".join(STATE_TEXTS) + "\n")
    states, extra = state_file(tmp_path, case)
    out = tmp_path / "report.json"
    argv = ["audit", "--model", "tiny-random-llama", "--texts", str(texts), "--states", str(states), *extra]
    assert main([*argv, "--json", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: ") and re.search(STATE_CASES[case], line), line
    assert not out.exists()
    assert not (tmp_path / "code-ran").exists()


@pytest.mark.parametrize("stage", ["extracting", "verifying", "committing"])
def test_ctrl_c_during_extract_leaves_no_output_file(tmp_path, capsys, monkeypatch, stage):
    from extraction.storage import export, safetensors_writer

    texts = write(tmp_path, "t.txt", "\n".join(SAMPLE_TEXTS) + "\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("an unrelated file")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    real_extract = export.extract_states

    def extract_then_interrupt(*args, **kwargs):
        real_extract(*args, **kwargs)  # the rows are computed, the temporary file is open
        raise KeyboardInterrupt

    if stage == "extracting":
        monkeypatch.setattr(export, "extract_states", extract_then_interrupt)
    elif stage == "verifying":
        monkeypatch.setattr(export, "_verify", interrupt)
    else:
        monkeypatch.setattr(safetensors_writer.os, "replace", interrupt)
    argv = ["extract", "--model", "tiny-random-llama", "--texts", str(texts), "--out", str(out_dir / "s.safetensors")]
    argv += ["--strategy", "right", "--batch-size", "2"]
    if stage == "extracting":
        argv += ["--verify", "0"]
    assert main(argv) == 130
    assert one_error_line(capsys) == "interrupted: no output was written"
    assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]
