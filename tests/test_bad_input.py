"""Bad input, faults and safety: every case gets a clear message, never a traceback, and
never a partial output file.

The basic file errors (empty file, CSV without ``text``, first malformed JSONL lines)
live in ``test_texts.py`` and the model loader's own messages in ``test_models.py``;
this module adds the odd characters, encodings and control bytes, the command line's
behaviour on each model failure, the token budget per batch, interruption, and the
static safety rules (no eval/exec/pickle of user data, remote code off by default).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import logging
import re
import socket
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import ViTConfig

from extraction import atomic, cli, compare, models
from extraction.atomic import write_json_atomic
from extraction.cli import main
from extraction.models import ModelLoadError, load_model
from extraction.samples import SAMPLE_TEXTS
from extraction.strategies import MAX_PACK_TOKENS, STRATEGIES, get_strategy
from extraction.texts import TextsError, decode_bytes, parse_texts, read_texts, split_lines, tokenize_texts

REPO = Path(__file__).resolve().parents[1]

#: Texts a user might paste: every one must come back from a file exactly as written.
ODD_TEXTS = [
    "emoji: 🙂👍🏽 and a family 👨‍👩‍👧 (zero-width joiners)",
    "CJK: 日本語のテキストと中文文本",
    "right-to-left: مرحبا بالعالم and שלום עולם with a mark \u200f and an override \u202e!",
    "zero-width: a\u200bb\u200cc\u200dd\ufeffe",
    "combining: e\u0301 a\u0308 n\u0303 and Zalgo z\u0351\u0352\u0353",
    "control: tab\there, escape \x1b[31mred\x1b[0m, bell \x07, form feed \x0c, DEL \x7f",
    "unicode breaks kept: line\u2028separator, paragraph\u2029separator, next\x85line",
]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    """The single line the command line printed on stderr (fails if there is not exactly one)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


# --- texts: characters, encodings, line endings ---------------------------------------


def jsonl(texts: list[str]) -> str:
    return "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)


def csv_text(texts: list[str], newline: str = "\n") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline)
    writer.writerow(["id", "text"])
    writer.writerows(enumerate(texts))
    return buffer.getvalue()


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_odd_characters_survive_every_file_type(tmp_path, suffix):
    content = {".txt": "\n".join(ODD_TEXTS) + "\n", ".jsonl": jsonl(ODD_TEXTS), ".csv": csv_text(ODD_TEXTS)}[suffix]
    assert read_texts(write(tmp_path, f"t{suffix}", content)) == ODD_TEXTS


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_windows_line_endings_give_the_same_texts(tmp_path, suffix):
    texts = ["first text", "second, with a comma", "third"]
    unix = {".txt": "\n".join(texts) + "\n", ".jsonl": jsonl(texts), ".csv": csv_text(texts)}[suffix]
    windows = unix.replace("\n", "\r\n")
    assert "\r\n" in windows
    assert read_texts(write(tmp_path, f"w{suffix}", windows)) == texts
    assert read_texts(write(tmp_path, f"u{suffix}", unix)) == texts


def test_old_mac_line_endings_and_a_multiline_csv_field(tmp_path):
    assert read_texts(write(tmp_path, "mac.txt", "one\rtwo\r")) == ["one", "two"]
    # A quoted CSV field may hold a line break (Windows or not): it stays one text.
    path = write(tmp_path, "m.csv", 'text\r\n"two\r\nlines"\r\nnext\r\n')
    assert read_texts(path) == ["two\r\nlines", "next"]


def test_split_lines_keeps_unicode_line_separators():
    assert split_lines("a\u2028b\x0cc\x1cd\n\ne\r\n") == ["a\u2028b\x0cc\x1cd", "", "e"]
    assert "a\u2028b\x0cc\x1cd".splitlines() != ["a\u2028b\x0cc\x1cd"]  # what str.splitlines would do


def test_a_few_nul_bytes_are_removed_and_named(tmp_path, caplog):
    path = write(tmp_path, "t.txt", b"first text\nsec\x00ond text\n\x00\x00\nthird text\x00\n" + b"padding " * 20)
    with caplog.at_level(logging.WARNING, logger="extraction.texts"):
        texts = read_texts(path)
    assert texts == ["first text", "second text", "third text", ("padding " * 20)]
    assert "removed NUL bytes from 2 text(s): text 2, 3" in caplog.text


def test_nul_inside_json_and_csv_fields(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="extraction.texts"):
        assert read_texts(write(tmp_path, "t.jsonl", '{"text": "a\\u0000b"}\n{"text": "c\x00d"}\n')) == ["ab", "cd"]
        assert read_texts(write(tmp_path, "t.csv", "text\na\x00b\nsome ordinary text in a row\n")) == [
            "ab",
            "some ordinary text in a row",
        ]
    assert caplog.text.count("removed NUL bytes") == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x06\x00\x00\x00", "binary file"),
        (bytes(range(256)) * 4, "binary file"),
        (b"plain text, then a lot of NULs" + bytes(200), "binary file"),
        ("text saved as UTF-16\nwithout a byte-order mark\n".encode("utf-16-le"), "UTF-16 text without a byte-order"),
        ("caf\xe9 au lait\n".encode("cp1252"), r"not UTF-8 text \(bad byte 0xe9 at offset 3\); save it as UTF-8"),
        ("Grüße\n".encode("latin-1") + b"ok\n", "not UTF-8 text"),
        (b"", "the file is empty"),
    ],
)
def test_binary_and_foreign_files_are_refused(tmp_path, content, message):
    with pytest.raises(TextsError, match=message):
        read_texts(write(tmp_path, "t.txt", content))


def test_utf16_with_a_byte_order_mark_is_read(tmp_path):
    texts = ["Notepad saves “Unicode” as UTF-16", "日本語"]
    assert read_texts(write(tmp_path, "t.txt", "\r\n".join(texts).encode("utf-16"))) == texts
    assert read_texts(write(tmp_path, "t8.txt", "\ufeff" + "\n".join(texts))) == texts  # UTF-8 with a BOM


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\r\n\r\n{"text": "also ok"}\r\n{"text": "unterminated}\r\n', "line 4 is not valid JSON"),
        ('{"text": "ok"}\n["text", "a list"]\n', "line 2 has no 'text' field"),
        ('{"text": "ok"}\n{"text": 42}\n', "line 2: 'text' is not a string"),
        ('{"text": "ok"}\n{"text": "  "}\n', "line 2: 'text' is empty"),
        ('{"text": "ok"}\n{"text": "a\\ud800b"}\n', "line 2: 'text' holds an unpaired surrogate U\\+D800"),
        ('{"text": "ok"}\n{"text": "a"} trailing\n', "line 2 is not valid JSON \\(Extra data at column 15\\)"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path, content, message):
    with pytest.raises(TextsError, match=message):
        read_texts(write(tmp_path, "t.jsonl", content))


def test_jsonl_line_numbers_ignore_unicode_line_separators(tmp_path):
    # A raw U+2028 inside a JSON string is valid JSON; splitting at it would break the line.
    path = write(tmp_path, "t.jsonl", '{"text": "a\u2028b"}\n{"text": "tab\there"}\n{oops\n')
    with pytest.raises(TextsError, match="line 3 is not valid JSON"):
        read_texts(path)
    assert read_texts(write(tmp_path, "ok.jsonl", '{"text": "a\u2028b"}\n{"text": "tab\there"}\n')) == [
        "a\u2028b",
        "tab\there",
    ]


def test_csv_header_only_and_broken_csv(tmp_path):
    with pytest.raises(TextsError, match="contains no texts"):
        read_texts(write(tmp_path, "h.csv", "id,text\r\n"))
    with pytest.raises(TextsError, match="is not valid CSV"):
        parse_texts('text\n"' + "x" * (200 * 1024) + '"\n', ".csv", "big.csv")  # over the csv field limit


def test_decode_bytes_names_the_source():
    with pytest.raises(TextsError, match="^pasted.txt: looks like a binary file"):
        decode_bytes(bytes(64), "pasted.txt")


def test_tokenize_refuses_non_strings_and_surrogates():
    class Tokenizer:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": list(text.encode("utf-8"))}

    with pytest.raises(TextsError, match="text 2 is a NoneType, not a string"):
        tokenize_texts(Tokenizer(), ["a", None])
    with pytest.raises(TextsError, match="text 1 holds an unpaired surrogate U\\+DC00 at character 3"):
        tokenize_texts(Tokenizer(), ["ab\udc00"])


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


def fake_gguf(tmp_path: Path) -> str:
    path = tmp_path / "model.gguf"
    path.write_text("this is not a GGUF file")
    return str(path)


def folder_without_weights(tmp_path: Path) -> str:
    (tmp_path / "config.json").write_text("{}")
    return str(tmp_path)


def vision_model_folder(tmp_path: Path) -> str:
    ViTConfig().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    return str(tmp_path)


def remote_code_folder(tmp_path: Path) -> str:
    marker = tmp_path / "remote-code-ran"
    config = {
        "model_type": "padding_audit_custom",
        "auto_map": {"AutoConfig": "configuration_custom.Config", "AutoModelForCausalLM": "modeling_custom.Model"},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "configuration_custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
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


@pytest.mark.parametrize("name", [n for n in STRATEGIES if n != "single"])
@pytest.mark.parametrize("budget", [64, 300, 1000])
def test_one_huge_text_is_never_padded_together_beyond_the_budget(name, budget):
    lengths = [5, 7, 500, 6, 9, 3, 480, 8, 8, 2]
    groups = get_strategy(name).plan(lengths, batch_size=8, max_batch_tokens=budget)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        if len(group) == 1:
            continue  # a text longer than the budget runs alone
        if name.startswith("packed"):
            assert sum(lengths[i] for i in group) <= min(budget, MAX_PACK_TOKENS)
        else:
            assert len(group) * max(lengths[i] for i in group) <= budget, group
    for huge in (2, 6):
        (group,) = [g for g in groups if huge in g]
        assert len(group) == 1 or budget >= 1000


def test_without_a_budget_the_huge_text_pads_everything():
    lengths = [5, 7, 500, 6]
    assert get_strategy("right").plan(lengths, batch_size=8, max_batch_tokens=None) == [[0, 1, 2, 3]]


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


def test_failed_rename_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "taken"
    (target / "inside").mkdir(parents=True)  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        write_json_atomic(target, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("kind", ["folder", "file-as-folder", "texts-file"])
def test_cli_refuses_an_unwritable_json_path_before_any_work(tmp_path, capsys, monkeypatch, kind):
    texts = write(tmp_path, "t.txt", "a text\n")
    (tmp_path / "plain").write_text("x")
    out = {"folder": tmp_path, "file-as-folder": tmp_path / "plain" / "r.json", "texts-file": texts}[kind]
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["compare", "--model", "tiny-random-llama", "--texts", str(texts), "--json", str(out)]) == 2
    assert one_error_line(capsys).startswith("error: --json ")
    assert texts.read_text() == "a text\n"


# --- safety ---------------------------------------------------------------------------

CODE_DIRS = ["extraction", "pages", "bench"]


def code_files() -> list[Path]:
    files = [path for folder in CODE_DIRS for path in (REPO / folder).rglob("*.py")]
    files += [path for path in (REPO / "app.py", REPO / "ui.py") if path.is_file()]
    assert len(files) > 5
    return files


def calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """Every call in ``tree`` with its dotted name (``torch.load``, ``eval``, ``obj.method``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
            found.append((".".join(reversed(parts)), node))
    return found


def keyword(call: ast.Call, name: str) -> object:
    """The constant value of keyword ``name`` in ``call`` ("absent" if not given, "dynamic" if not a constant)."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "dynamic"
    return "absent"


UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib"}
UNSAFE_CALLS = {
    "eval",
    "exec",
    "compile",
    "__import__",
    "os.system",
    "os.popen",
    "pd.read_pickle",
    "pandas.read_pickle",
}


def test_no_code_runs_from_user_data():
    """No eval/exec, no pickle module, no shell; every torch.load is weights_only=True;
    numpy never allows pickles; nothing turns remote code on by itself."""
    problems = []
    for path in code_files():
        where = path.relative_to(REPO)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                problems += [f"{where}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        for name, call in calls(tree):
            line = f"{where}:{call.lineno} {name}"
            if name in UNSAFE_CALLS:
                problems.append(f"{line}: not allowed")
            if name.endswith("torch.load") and keyword(call, "weights_only") is not True:
                problems.append(f"{line}: weights_only is not True")
            if name.endswith(("np.load", "numpy.load")) and keyword(call, "allow_pickle") not in (False, "absent"):
                problems.append(f"{line}: allow_pickle")
            if keyword(call, "trust_remote_code") is True:
                problems.append(f"{line}: trust_remote_code=True")
            if keyword(call, "shell") is True:
                problems.append(f"{line}: shell=True")
    assert problems == []


def test_the_safety_scan_finds_what_it_looks_for():
    bad = ast.parse(
        "import pickle\nimport torch\neval('1')\ntorch.load(f)\ntorch.load(f, weights_only=False)\n"
        "m.from_pretrained(x, trust_remote_code=True)\n"
    )
    names = [name for name, _ in calls(bad)]
    assert names == ["eval", "torch.load", "torch.load", "m.from_pretrained"]
    loads = [call for name, call in calls(bad) if name == "torch.load"]
    assert [keyword(call, "weights_only") for call in loads] == ["absent", False]


def test_trust_remote_code_defaults_to_off():
    import inspect

    assert inspect.signature(load_model).parameters["trust_remote_code"].default is False
    args = cli.build_parser().parse_args(["compare", "--texts", "t.txt"])
    assert args.trust_remote_code is False


def test_make_run_binds_to_localhost():
    makefile = (REPO / "Makefile").read_text()
    (run_line,) = [line for line in makefile.splitlines() if "streamlit run" in line]
    assert "--server.address 127.0.0.1" in run_line
    assert "0.0.0.0" not in makefile


def test_streamlit_config_keeps_xsrf_on_and_caps_uploads():
    import tomllib

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    server = config.get("server", {})
    assert server.get("enableXsrfProtection", True) is True
    assert server.get("enableCORS", True) is True
    assert 1 <= server["maxUploadSize"] <= 200
    assert config.get("browser", {}).get("gatherUsageStats") is False


# --- stored states: files that must never run code or crash the reader ----------------


class _CreatesFile:
    """Pickled, its ``__reduce__`` makes unpickling call ``open(path, "w")``: if the marker
    file exists afterwards, the reader ran code from the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _malicious_files(folder: Path, marker: Path) -> dict[str, Path]:
    import pickle

    import numpy as np

    payload = _CreatesFile(marker)
    rows = torch.zeros(2, 8)
    files = {
        "pt-zip": folder / "zip.pt",
        "pt-legacy": folder / "legacy.pt",
        "pt-plain-pickle": folder / "plain.pth",
        "npy-object": folder / "objects.npy",
        "npz-object": folder / "objects.npz",
    }
    torch.save({"hidden": rows, "extra": payload}, files["pt-zip"])
    torch.save({"hidden": rows, "extra": payload}, files["pt-legacy"], _use_new_zipfile_serialization=False)
    files["pt-plain-pickle"].write_bytes(pickle.dumps(payload))
    np.save(files["npy-object"], np.array([payload, 1.0], dtype=object), allow_pickle=True)
    np.savez(files["npz-object"], hidden=np.array([payload], dtype=object))
    return files


@pytest.mark.parametrize("kind", ["pt-zip", "pt-legacy", "pt-plain-pickle", "npy-object", "npz-object"])
def test_pickled_code_in_stored_states_never_runs(tmp_path, kind):
    from extraction.stored_states import read_states

    marker = tmp_path / "code-ran"
    path = _malicious_files(tmp_path, marker)[kind]
    assert not marker.exists()
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": (holds|cannot read)"):
        read_states(path)
    with pytest.raises(ValueError):
        read_states(path.read_bytes(), name=path.name)  # the app's upload path
    assert not marker.exists()


def test_the_marker_payload_would_run_if_unpickled(tmp_path):
    # The check above can fail: plain pickle.loads runs the payload.
    import pickle

    marker = tmp_path / "code-ran"
    pickle.loads(pickle.dumps(_CreatesFile(marker)))
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_tiny_file_claiming_a_huge_shape_is_refused(tmp_path, suffix):
    import zipfile

    import numpy.lib.format as npy_format

    from extraction.stored_states import read_states

    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 8)})
    content = header.getvalue() + bytes(64)  # claims 32 TB, holds 64 bytes
    path = tmp_path / f"huge{suffix}"
    if suffix == ".npy":
        path.write_bytes(content)
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("hidden.npy", content)
    assert path.stat().st_size < 1024
    with pytest.raises(ValueError, match=f"huge{re.escape(suffix)}: cannot read it as {re.escape(suffix)}"):
        read_states(path)


@pytest.fixture(scope="module")
def valid_state_files(tmp_path_factory) -> dict[str, bytes]:
    import numpy as np
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("states")
    rows = torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(0))
    save_file({"hidden": rows}, folder / "s.safetensors", metadata={"layers": "[0, 1]"})
    np.save(folder / "s.npy", rows.numpy())
    np.savez(folder / "s.npz", hidden=rows.numpy())
    torch.save(rows, folder / "s.pt")
    return {path.suffix: path.read_bytes() for path in folder.iterdir()}


@settings(max_examples=60, deadline=None)
@given(suffix=st.sampled_from([".safetensors", ".npy", ".npz", ".pt"]), data=st.data())
def test_damaged_state_files_give_a_value_error_or_valid_states(valid_state_files, suffix, data):
    """Any byte damage (cut, flipped bytes, garbage) ends in states or a ValueError, never another error."""
    from extraction.stored_states import read_states

    original = valid_state_files[suffix]
    damage = data.draw(st.sampled_from(["cut", "flip", "garbage"]))
    if damage == "cut":
        content = original[: data.draw(st.integers(0, len(original) - 1))]
    elif damage == "flip":
        content = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8))):
            index = data.draw(st.integers(0, len(content) - 1))
            content[index] = data.draw(st.integers(0, 255))
        content = bytes(content)
    else:
        content = data.draw(st.binary(min_size=0, max_size=512))
    try:
        stored = read_states(content, name=f"damaged{suffix}")
    except ValueError as error:
        assert str(error).startswith(f"damaged{suffix}: ")
    else:
        assert stored.tensor.dtype == torch.float32


# --- the app after failures --------------------------------------------------------------


def test_app_survives_several_failed_loads_then_runs(tmp_path, monkeypatch):
    """Each failed load shows its reason in an error box; nothing is cached or run; then a
    good model works in the same session. The app never turns remote code on."""
    from streamlit.testing.v1 import AppTest

    import ui

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "remote").mkdir()
    bad_models = {
        "padding-audit-tests/no-such-model": "not found locally and the hub is offline",
        fake_gguf(tmp_path): "not a GGUF file",
        remote_code_folder(tmp_path / "remote"): "needs remote code",
    }
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value(ui.OTHER_MODEL).run()
    at.multiselect(key="home.strategies").set_value(["right", "right-naive"])
    at.text_area(key="home.texts").input("a short text\na somewhat longer text than that")
    for name, reason in bad_models.items():
        at.text_input(key=ui.KEY_MODEL_CUSTOM).input(name)
        at.button(key="home.run").click().run()
        assert not at.exception, [e.value for e in at.exception]
        errors = [error.value for error in at.error]
        assert len(errors) == 1 and "Could not load the model" in errors[0] and reason in errors[0], errors
        assert ui.KEY_RUN not in at.session_state
    assert not (tmp_path / "remote" / "remote-code-ran").exists()

    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value("tiny-random-llama")
    at.button(key="home.run").click().run()
    assert not at.exception and not at.error
    report = at.session_state[ui.KEY_RUN].report
    assert report.model == "tiny-random-llama"
    assert report.strategies["right"].verdict == "exact" and report.strategies["right-naive"].verdict == "corrupted"


# --- the served app: upload cap and XSRF (a real server; the cap check in a real browser) --


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """``streamlit run app.py`` on a free 127.0.0.1 port with the repository's config;
    its process group is stopped afterwards."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
        + ["--server.address", "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none"],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start on {url}: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        log.close()


@pytest.mark.browser
def test_served_app_refuses_uploads_without_an_xsrf_token(served_app):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{served_app}/_stcore/upload_file/some-session/some-file", data=b"x" * 100, method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 403


@pytest.mark.browser
def test_upload_over_the_cap_is_refused_and_the_app_stays_usable(served_app, tmp_path):
    import shutil
    import tomllib

    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    cap_mb = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    big = tmp_path / "big.txt"
    line = b"a perfectly ordinary line of text, repeated until the file is over the cap\n"
    with big.open("wb") as handle:
        handle.write(line * ((cap_mb * 1024 * 1024) // len(line) + 2000))
    assert big.stat().st_size > cap_mb * 1024 * 1024
    small = write(tmp_path, "small.txt", "a small text\nanother one\n")

    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run"]
    args += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(served_app, timeout=120_000)
            dropzone = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
            dropzone.wait_for(state="attached", timeout=120_000)
            dropzone.set_input_files(str(big))
            refusal = page.get_by_text(re.compile(rf"File must be {cap_mb}(\.0)?\s*MB or smaller"))
            refusal.first.wait_for(timeout=60_000)
            # The app is still usable: a small file goes through and nothing raised.
            dropzone.set_input_files(str(small))
            page.get_by_text("small.txt").first.wait_for(timeout=60_000)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()


# --- stored states through the command line (audit) and an interrupted extract ---------

STATE_TEXTS = ["a short text", "a somewhat longer text than the first one", "three", "and a fourth text here"]


def _state_file(tmp_path: Path, case: str) -> tuple[Path, list[str]]:
    """(a stored-states file with one defect, extra audit arguments) for tiny-random-llama (hidden 64)."""
    import numpy as np
    from safetensors.torch import save_file

    n, width = len(STATE_TEXTS), 64
    good = torch.randn(n, width, generator=torch.Generator().manual_seed(0))  # (N, d)
    path = tmp_path / f"{case}.safetensors"
    if case == "wrong-rank":
        save_file({"h": good.flatten()}, path)
    elif case == "row-count":
        save_file({"h": torch.randn(n + 1, width)}, path)
    elif case == "hidden-size":
        save_file({"h": torch.randn(n, 32)}, path)
    elif case == "nan":
        bad = good.clone()
        bad[1, 5] = float("nan")
        save_file({"h": bad}, path)
    elif case == "inf":
        bad = good.clone()
        bad[2, 0] = float("inf")
        save_file({"h": bad}, path)
    elif case == "integer":
        save_file({"h": torch.arange(n * width, dtype=torch.int32).reshape(n, width)}, path)
    elif case == "several-no-key":
        save_file({"h": good, "other": good.clone()}, path)
    elif case == "bad-key":
        save_file({"h": good, "other": good.clone()}, path)
        return path, ["--key", "hidden"]
    elif case == "truncated":
        save_file({"h": good}, path)
        path.write_bytes(path.read_bytes()[:-100])
    elif case == "corrupt":
        path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" + bytes(100))
    elif case == "pickled-code":
        path = tmp_path / "evil.pt"
        torch.save({"h": good, "x": _CreatesFile(tmp_path / "code-ran")}, path)
    elif case == "npy-objects":
        path = tmp_path / "evil.npy"
        np.save(path, np.array([_CreatesFile(tmp_path / "code-ran")], dtype=object), allow_pickle=True)
    elif case == "wrong-type":
        path = tmp_path / "states.txt"
        path.write_text("1 2 3\n")
    return path, []


STATE_CASES = {
    "wrong-rank": r"shape \(256,\): expected \(N, d\)",
    "row-count": "5 rows but 4 texts",
    "hidden-size": "width 32 but the model's hidden size is 64",
    "nan": "NaN/inf values in 1 rows",
    "inf": "NaN/inf values in 1 rows",
    "integer": "int32 values; hidden states must be floating point",
    "several-no-key": "holds several tensors .* choose one with --key",
    "bad-key": "no tensor named 'hidden'",
    "truncated": "truncated or corrupt",
    "corrupt": "truncated or corrupt",
    "pickled-code": "refuses to unpickle",
    "npy-objects": "pickled Python objects",
    "wrong-type": r"unsupported file type '\.txt'",
}


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_audit_bad_states_is_one_line_exit_2_and_no_output(tmp_path, capsys, case):
    texts = write(tmp_path, "t.txt", "\n".join(STATE_TEXTS) + "\n")
    states, extra = _state_file(tmp_path, case)
    out = tmp_path / "report.json"
    argv = ["audit", "--model", "tiny-random-llama", "--texts", str(texts), "--states", str(states), *extra]
    assert main([*argv, "--json", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: ") and re.search(STATE_CASES[case], line), line
    assert not out.exists()
    assert not (tmp_path / "code-ran").exists()


@pytest.mark.parametrize("stage", ["extracting", "verifying", "committing"])
def test_ctrl_c_during_extract_leaves_no_output_file(tmp_path, capsys, monkeypatch, stage):
    from extraction import export, safetensors_writer

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


# --- bad uploads in the app: one error box each, then a good run in the same session --------

#: Odd characters for the home page's text box (no character that is a line break to Unicode).
BOX_TEXTS = [*ODD_TEXTS[:5], "control: tab\there, escape \x1b[31mred\x1b[0m, bell \x07, DEL \x7f"]
PAGE_STATE_CASES = ["wrong-rank", "hidden-size", "nan", "integer", "several-no-key", "pickled-code", "npy-objects"]


def test_audit_page_refuses_each_bad_states_upload_then_audits_a_good_one(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import ui
    from extraction.extract import extract_states
    from extraction.texts import tokenize_texts

    page = REPO / "pages" / "4_Audit.py"
    if not page.is_file():
        pytest.skip("the Audit page is not there yet")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(str(page), default_timeout=300).run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value("tiny-random-llama")
    at.file_uploader(key="audit.texts").set_value(("t.txt", ("\n".join(STATE_TEXTS) + "\n").encode(), "text/plain"))
    for case in PAGE_STATE_CASES:
        path, _ = _state_file(tmp_path, case)
        at.file_uploader(key="audit.states").set_value((path.name, path.read_bytes(), "application/octet-stream"))
        at.button(key="audit.run").click().run()
        assert not at.exception, (case, [e.value for e in at.exception])
        errors = [error.value for error in at.error]
        assert len(errors) == 1 and re.search(STATE_CASES[case], errors[0]), (case, errors)
        assert "audit.result" not in at.session_state
    assert not (tmp_path / "code-ran").exists()

    # The same session then audits a correct file: single-sample states of the last layer.
    from safetensors.torch import save

    loaded = load_model("tiny-random-llama", device="cpu")
    tokenized = tokenize_texts(loaded.tokenizer, STATE_TEXTS)
    good = extract_states(loaded, tokenized, "single", layers=[loaded.num_hidden_layers], keep_logits=False)
    at.file_uploader(key="audit.states").set_value(("good.safetensors", save({"h": good.hidden[:, 0]}), "x"))
    at.button(key="audit.run").click().run()
    assert not at.exception and not at.error
    assert at.session_state["audit.result"]["report"].verdict == "exact"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bin.txt", bytes(range(256)), "binary file"),
        ("latin.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8"),
        ("t.jsonl", b'{"text": "a"}\n{"text": }\n', "line 2 is not valid JSON"),
        ("t.csv", b"id,body\n1,x\n", "no 'text' column"),
    ],
)
def test_home_page_bad_texts_upload_is_one_error_then_the_text_box_runs(monkeypatch, name, content, message):
    from streamlit.testing.v1 import AppTest

    import ui

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value("tiny-random-llama")
    at.multiselect(key="home.strategies").set_value(["right"])
    at.text_area(key="home.texts").input("\n".join(BOX_TEXTS))
    at.file_uploader(key="home.upload").set_value((name, content, "application/octet-stream"))
    at.button(key="home.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [error.value for error in at.error]
    assert len(errors) == 1 and message in errors[0], errors
    assert ui.KEY_RUN not in at.session_state

    at.file_uploader(key="home.upload").set_value(None)  # back to the text box, odd characters and all
    at.button(key="home.run").click().run()
    assert not at.exception and not at.error
    report = at.session_state[ui.KEY_RUN].report
    assert report.texts == BOX_TEXTS
    assert report.strategies["right"].verdict == "exact"


def test_text_box_breaks_lines_only_where_files_do():
    import ui

    box = "one text with a line\u2028separator\nanother with a form\x0cfeed\n"
    assert ui.texts_from_inputs(box) == (
        ["one text with a line\u2028separator", "another with a form\x0cfeed"],
        "text box",
    )
