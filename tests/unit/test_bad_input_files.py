"""Bad input and safety without a model: odd characters, encodings and control bytes in
text files, the token budget per batch, the static safety rules (no eval/exec/pickle of
user data, remote code off by default) and stored-states files that must never run code
or crash the reader. Every case gets a clear message, never a traceback.

The basic file errors (empty file, CSV without ``text``, first malformed JSONL lines)
live in ``test_texts.py`` and the model loader's own messages in ``test_models.py``; the
command line on bad input is in ``tiny/test_bad_input_cli.py``, the app in
``app/test_bad_input_app.py`` and the served app in ``browser/test_bad_input_browser.py``.
"""

from __future__ import annotations

import ast
import csv
import io
import logging
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from extraction import cli
from extraction.models import load_model
from extraction.storage.atomic import write_json_atomic
from extraction.strategies import MAX_PACK_TOKENS, STRATEGIES, get_strategy
from extraction.texts import TextsError, decode_bytes, parse_texts, read_texts, split_lines, tokenize_texts
from tests.bad_input_cases import ODD_TEXTS, CreatesFile, jsonl, write

REPO = Path(__file__).resolve().parents[2]


# --- texts: characters, encodings, line endings ---------------------------------------


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


def test_failed_rename_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "taken"
    (target / "inside").mkdir(parents=True)  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        write_json_atomic(target, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


# --- safety ---------------------------------------------------------------------------

CODE_DIRS = ["extraction", "pages", "bench"]


def code_files() -> list[Path]:
    files = [path for folder in CODE_DIRS for path in (REPO / folder).rglob("*.py")]
    files += [REPO / "app.py", *(REPO / "ui").rglob("*.py")]
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


def _malicious_files(folder: Path, marker: Path) -> dict[str, Path]:
    import pickle

    import numpy as np

    payload = CreatesFile(marker)
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
    from extraction.storage.stored_states import read_states

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
    pickle.loads(pickle.dumps(CreatesFile(marker)))
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_a_tiny_file_claiming_a_huge_shape_is_refused(tmp_path, suffix):
    import zipfile

    import numpy.lib.format as npy_format

    from extraction.storage.stored_states import read_states

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
    from extraction.storage.stored_states import read_states

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


# --- the text box ---------------------------------------------------------------------


def test_text_box_breaks_lines_only_where_files_do():
    import ui

    box = "one text with a line\u2028separator\nanother with a form\x0cfeed\n"
    assert ui.texts_from_inputs(box) == (
        ["one text with a line\u2028separator", "another with a form\x0cfeed"],
        "text box",
    )
