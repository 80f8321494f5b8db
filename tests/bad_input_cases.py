"""Bad inputs shared by the bad-input tests of several tiers: odd texts, broken model
folders, stored-states files with one defect each, and a pickle payload that leaves a
marker file behind if anything ever unpickles it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

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


def jsonl(texts: list[str]) -> str:
    return "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)


def fake_gguf(tmp_path: Path) -> str:
    path = tmp_path / "model.gguf"
    path.write_text("this is not a GGUF file")
    return str(path)


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


class CreatesFile:
    """Pickled, its ``__reduce__`` makes unpickling call ``open(path, "w")``: if the marker
    file exists afterwards, the reader ran code from the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


STATE_TEXTS = ["a short text", "a somewhat longer text than the first one", "three", "and a fourth text here"]


def state_file(tmp_path: Path, case: str) -> tuple[Path, list[str]]:
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
        torch.save({"h": good, "x": CreatesFile(tmp_path / "code-ran")}, path)
    elif case == "npy-objects":
        path = tmp_path / "evil.npy"
        np.save(path, np.array([CreatesFile(tmp_path / "code-ran")], dtype=object), allow_pickle=True)
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
