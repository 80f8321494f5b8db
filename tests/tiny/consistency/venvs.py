"""Second Python environments with an older transformers, for ``check --python``: built once and
cached in the test cache (``~/.cache/padding-audit-tests``, or ``$PADDING_AUDIT_TEST_CACHE``); and
the tiny Llama folder the recipes and the child-process tests load (``save_tiny_llama``).

The cheap way that works on this project's machine: ``python -m venv``, a ``.pth`` file that makes
this venv's site-packages visible AFTER the new venv's own (so torch and numpy come from here and
are not downloaded again), then ``pip install transformers==4.57.6 'tokenizers<0.23'
'huggingface-hub<1.0'`` into the new venv, whose own site-packages shadow ours. A test that needs
it skips, saying why, when the wheels cannot be fetched. ``venv-tf4`` has transformers 4.57.6 alone;
``venv-tf4-recipes`` adds steering-vectors 0.12.2 (``transformers<5``) and repe 0.1.4 (fails under
transformers 5), whose recipes (examples/steering_vectors_pipeline.py, examples/repe_pipeline.py) run
there.
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
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from extraction.models.embedded import embedded_tokenizer

#: The older transformers the pipeline pins, and what it needs beside it.
OLDER_TRANSFORMERS = ("transformers==4.57.6", "tokenizers<0.23", "huggingface-hub<1.0")
OLDER_VERSION = "4.57.6"
#: The research libraries pinned to transformers 4.x whose recipes run through ``check --python``.
TRANSFORMERS4_RECIPES = (*OLDER_TRANSFORMERS, "steering-vectors==0.12.2", "repe==0.1.4")


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


def _transformers4_with_our_torch(python: Path) -> None:
    found = _versions(python)
    assert found["transformers"] == OLDER_VERSION, found
    assert Path(found["torch_file"]).is_relative_to(sysconfig.get_paths()["purelib"]), found


def older_transformers_python() -> Path:
    """The python of ``venv-tf4``: transformers 4.57.6 of its own, torch from this venv."""
    return venv_with("venv-tf4", OLDER_TRANSFORMERS, _transformers4_with_our_torch)


def transformers4_recipes_python() -> Path:
    """The python of ``venv-tf4-recipes``: transformers 4.57.6, steering-vectors and repe; torch from here."""
    return venv_with("venv-tf4-recipes", TRANSFORMERS4_RECIPES, _transformers4_with_our_torch)


def save_tiny_llama(folder: Path, *, for_transformers4: bool = False) -> Path:
    """A tiny random Llama (seeded; 2 layers, width 64) with the embedded SmolLM2 tokenizer (its chat
    template, no pad token of its own: ``<|im_end|>``), saved in ``folder`` with ``save_pretrained``;
    ``for_transformers4`` makes the tokenizer_config readable by transformers 4.x too."""
    tokenizer = embedded_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=256, initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    if for_transformers4:
        return save_for_transformers4(model, tokenizer, folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_for_transformers4(model, tokenizer, folder: Path) -> Path:
    """``save_pretrained`` of both, with the tokenizer_config that transformers 5 writes made
    readable by 4.x (``TokenizersBackend`` -> ``PreTrainedTokenizerFast``, 5-only keys dropped)."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return readable_by_transformers4(folder)


def readable_by_transformers4(folder: Path) -> Path:
    """The tokenizer_config.json of a folder saved by transformers 5 rewritten in place so that 4.x
    reads it (``TokenizersBackend`` -> ``PreTrainedTokenizerFast``, 5-only keys dropped)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("backend", "is_local", "local_files_only"):
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2))
    return folder
