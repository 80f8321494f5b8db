"""A second Python environment with an older transformers, for ``check --python``: built once and
cached in the test cache (``~/.cache/padding-audit-tests``, or ``$PADDING_AUDIT_TEST_CACHE``).

The cheap way that works on this project's machine: ``python -m venv``, a ``.pth`` file that makes
this venv's site-packages visible AFTER the new venv's own (so torch and numpy come from here and
are not downloaded again), then ``pip install transformers==4.57.6 'tokenizers<0.23'
'huggingface-hub<1.0'`` into the new venv, whose own site-packages shadow ours. A test that needs
it skips, saying why, when the wheels cannot be fetched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

#: The older transformers the pipeline pins, and what it needs beside it.
OLDER_TRANSFORMERS = ("transformers==4.57.6", "tokenizers<0.23", "huggingface-hub<1.0")
OLDER_VERSION = "4.57.6"


def test_cache() -> Path:
    return Path(os.environ.get("PADDING_AUDIT_TEST_CACHE", Path.home() / ".cache" / "padding-audit-tests"))


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _versions(python: Path) -> dict:
    code = (
        "import json, torch, transformers; "
        "print(json.dumps({'transformers': transformers.__version__, 'torch_file': torch.__file__}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def venv_with(name: str, requirements: tuple[str, ...], check=None) -> Path:
    """The python of the cached venv ``name`` with ``requirements`` installed beside this venv's
    packages (built once; a half-built one is removed); ``pytest.skip`` when pip cannot install them."""
    venv = test_cache() / name
    stamp = venv / "padding-audit-requirements.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == list(requirements) and _python(venv).is_file():
        return _python(venv)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    own = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (own / "zz-padding-audit-project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(_python(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements]
    result = subprocess.run(pip, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"cannot install {' '.join(requirements)} into a venv of the test cache: {last}")
    if check is not None:
        check(_python(venv))
    stamp.write_text(json.dumps(list(requirements)))
    return _python(venv)


def older_transformers_python() -> Path:
    """The python of ``venv-tf4``: transformers 4.57.6 of its own, torch from this venv."""

    def check(python: Path) -> None:
        found = _versions(python)
        assert found["transformers"] == OLDER_VERSION, found
        assert Path(found["torch_file"]).is_relative_to(sysconfig.get_paths()["purelib"]), found

    return venv_with("venv-tf4", OLDER_TRANSFORMERS, check)


def save_for_transformers4(model, tokenizer, folder: Path) -> Path:
    """``save_pretrained`` of both, with the tokenizer_config that transformers 5 writes made
    readable by 4.x (``TokenizersBackend`` -> ``PreTrainedTokenizerFast``, 5-only keys dropped)."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("backend", "is_local", "local_files_only"):
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2))
    return folder
