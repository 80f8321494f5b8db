"""Memory and time of the audit of a store much larger than its sample (issue 28).

Usage (from the repository root)::

    PYTHONPATH=. python bench/store_audit.py MODEL OUT_DIR [ROWS] [SAMPLE]

Writes OUT_DIR/store.npy, ROWS x d float32 rows at the model's last hidden layer (random values: the
audit finds them corrupted, which is what a wrong store gives; d is the model's width, 576 on SmolLM2),
and OUT_DIR/texts.txt, ROWS lines; then runs ``audit --sample SAMPLE --no-forensics`` through the CLI under
``/usr/bin/time -v`` (peak RSS of the whole process), and, in a second process, the re-extraction alone: the
checked rows' texts (the report's ``checked_rows``) under the layout the audit used, timed around
:func:`~extraction.extract.extract_states`. Prints one JSON line: rows, store bytes, peak RSS, the audit's
wall seconds, the re-extraction's seconds and the share of the audit spent outside re-extraction. The store
and the texts file are deleted at the end (the store is ROWS * d * 4 bytes); the report stays.

The store is written in chunks through ``np.lib.format.open_memmap`` and the texts file line by line, so a
store larger than the machine's memory can be built (13,000,000 rows of SmolLM2's 576 floats: 30 GB).
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _write_store(out: Path, rows: int, width: int) -> tuple[Path, Path]:
    states, texts = out / "store.npy", out / "texts.txt"
    store = np.lib.format.open_memmap(states, mode="w+", dtype=np.float32, shape=(rows, width))
    rng = np.random.default_rng(0)
    step = 50_000
    for start in range(0, rows, step):
        store[start : start + step] = rng.standard_normal((min(step, rows - start), width), dtype=np.float32)
    store.flush()
    del store
    with texts.open("w") as f:
        for k in range(rows):
            f.write(f"Row {k} of the store: a sentence about topic {k % 97} and item {k % 13}.\n")
    return states, texts


def main() -> None:
    model, out = sys.argv[1], Path(sys.argv[2])
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    sample = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    out.mkdir(parents=True, exist_ok=True)
    from extraction.models import load_model

    loaded = load_model(model)
    layer, width = loaded.num_hidden_layers, loaded.hidden_size
    started = time.perf_counter()
    states, texts = _write_store(out, rows, width)
    write_seconds = time.perf_counter() - started
    try:
        print(
            json.dumps(
                _measure(model, loaded, layer, states, texts, out, sample) | {"write_seconds": round(write_seconds, 1)}
            )
        )
    finally:
        states.unlink(missing_ok=True)
        texts.unlink(missing_ok=True)


def _checked_texts(texts: Path, checked: list[int]) -> list[str]:
    """The texts of rows ``checked`` (in that order), read as a stream (the file has no blank lines)."""
    wanted, found = set(checked), {}
    with texts.open(encoding="utf-8") as f:
        for k, line in enumerate(f):
            if k in wanted:
                found[k] = line.rstrip("\n")
                if len(found) == len(wanted):
                    break
    return [found[k] for k in checked]


def _measure(model: str, loaded, layer: int, states: Path, texts: Path, out: Path, sample: int) -> dict:
    rows = np.load(states, mmap_mode="r").shape[0]
    report = out / "audit.json"
    audit = [sys.executable, "-m", "extraction", "audit", "--model", model, "--texts", str(texts)]
    audit += ["--states", str(states), "--layer", str(layer), "--sample", str(sample), "--no-forensics"]
    audit += ["--json", str(report)]
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *audit], capture_output=True, text=True)
    audit_seconds = time.perf_counter() - started
    (out / "audit.stderr").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the audit failed (status {done.returncode}): {done.stderr[-2000:]}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    data = json.loads(report.read_text())
    checked, layout = data["checked_rows"], data["reference"]["layout"]

    from extraction.extract import extract_states
    from extraction.texts import tokenize_texts

    tokenized = tokenize_texts(loaded.tokenizer, _checked_texts(texts, checked))
    started = time.perf_counter()
    extract_states(loaded, tokenized, layout, layers=[layer], keep_logits=False)
    extract_seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "store_bytes": states.stat().st_size,
        "n_checked": data["n_checked"],
        "verdict": data["verdict"],
        "interval": data["fraction_corrupted_interval"],
        "peak_rss_bytes": peak_kib * 1024,
        "audit_seconds": round(audit_seconds, 1),
        "reextraction_seconds": round(extract_seconds, 1),
        "share_outside_reextraction": round(1 - extract_seconds / audit_seconds, 3),
        "layout": layout,
    }


if __name__ == "__main__":
    main()
