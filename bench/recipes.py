"""Seconds a check of 32 texts takes per library recipe (issue 30): ``check_extractor`` of each
recipe in examples/ against itself, the clock around the check only (the model loaded before it).

Usage (from the repository root, with an interpreter that has the in-process recipes' packages,
requirements-dev.txt, and one with steering-vectors 0.12.2 and repe 0.1.4 on transformers 4.57.6)::

    HF_HUB_OFFLINE=1 PYTHONPATH=. python bench/recipes.py MODEL_FOLDER TF4_PYTHON [COUNT]

MODEL_FOLDER is a Hugging Face folder (the embedded SmolLM2's converted cache,
``~/.cache/padding-audit/smollm2-135m-model-*``); a copy readable by transformers 4 is made in a
temporary folder (``$PADDING_AUDIT_MODEL``) for the ``--python`` recipes, whose child process
(start, imports, model load) is timed apart (``start_seconds``). The texts are
``bench.texts.benchmark_texts(tokenizer, COUNT, 5, 60)`` (COUNT 32). Prints one JSON line per
recipe: library, version, function, verdict, likely_cause, seconds, start_seconds.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer

from bench.texts import benchmark_texts
from extraction import check_extractor
from extraction.consistency.remote import ChildFunction
from tests.tiny.consistency.venvs import readable_by_transformers4

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _in_process(folder: str):
    """``(library, function, extract, tokenizer or None)`` of each recipe run in this interpreter."""
    nnsight = _example("nnsight_check")
    yield "nnsight", "last_token_extractor", nnsight.last_token_extractor(nnsight.load(folder)), None
    lens = _example("transformerlens_check")
    bridge = lens.load(folder)
    yield "transformer-lens", "resid_post_extractor", lens.resid_post_extractor(bridge), bridge.tokenizer
    yield "transformer-lens", "resid_post_extractor(left)", lens.resid_post_extractor(bridge, padding_side="left"), None
    st = _example("sentence_transformers_check")
    for pooling in ("mean", "lasttoken"):
        yield "sentence-transformers", f"encode ({pooling})", st.encoder(st.load(folder, pooling)), None
    pyvene = _example("pyvene_check")
    intervenable, tokenizer = pyvene.load(folder)
    yield "pyvene", "collect (last-real)", pyvene.collector(intervenable, tokenizer), None
    yield "pyvene", "collect (padded-length)", pyvene.collector(intervenable, tokenizer, "padded-length"), tokenizer


def _readable_by_transformers4(folder: str, into: Path) -> Path:
    shutil.copytree(folder, into)
    return readable_by_transformers4(into)


def _line(library: str, function: str, report, seconds: float, start: float | None = None, version=None) -> None:
    version = version or importlib.metadata.version(library)
    row = {"library": library, "version": version, "function": function, "verdict": report.verdict}
    row |= {"likely_cause": report.likely_cause, "seconds": round(seconds, 2)}
    row |= {"start_seconds": None if start is None else round(start, 2)}
    print(json.dumps(row), flush=True)


def main() -> None:
    folder, tf4_python = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = benchmark_texts(tokenizer, count, 5, 60)
    for library, function, extract, pad_tokenizer in _in_process(folder):
        started = time.perf_counter()
        report = check_extractor(extract, texts=texts, tokenizer=pad_tokenizer)
        _line(library, function, report, time.perf_counter() - started)
    versions = {"steering-vectors": "0.12.2", "repe": "0.1.4"}
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["PADDING_AUDIT_MODEL"] = str(_readable_by_transformers4(folder, Path(scratch) / "model"))
        targets = [("steering-vectors", "steering_vectors_pipeline.py:extract"),
                   ("repe", "repe_pipeline.py:extract_as_loaded"), ("repe", "repe_pipeline.py:extract")]  # fmt: skip
        for library, target in targets:
            started = time.perf_counter()
            with ChildFunction(tf4_python, f"{EXAMPLES}/{target}") as child:
                child(texts[:1])  # the import and the model load, timed apart
                start = time.perf_counter() - started
                started = time.perf_counter()
                report = check_extractor(child, texts=texts, tokenizer=tokenizer)
            _line(library, target.split(":")[1], report, time.perf_counter() - started, start, versions[library])


if __name__ == "__main__":
    main()
