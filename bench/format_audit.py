"""Memory and time of the audit of a large Parquet store and a large vLLM folder (issue 28).

Usage (from the repository root)::

    PYTHONPATH=. python bench/format_audit.py MODEL OUT_DIR parquet [ROWS] [SAMPLE] [ROW_GROUP]
    PYTHONPATH=. python bench/format_audit.py MODEL OUT_DIR vllm [FILES] [SAMPLE]

``parquet`` writes OUT_DIR/store.parquet with pyarrow: ROWS rows of a ``text`` column and an ``emb``
column of d float32 values (random: the audit finds them corrupted), ROW_GROUP rows per row group
(default 10,000). ``vllm`` writes OUT_DIR/vllm/, FILES ``<i>.safetensors`` files as vLLM's
ExampleHiddenStatesConnector does (``hidden_states`` (seq, 1, d) random, ``token_ids`` (seq,) of a
real sentence's tokenization, seq 12-20). Then runs ``audit --sample SAMPLE --no-forensics`` (no
``--texts``: the store's own text column or ids) through the CLI under ``/usr/bin/time -v`` and prints
one JSON line: the store's bytes, the peak RSS of the audit process, its wall seconds. Delete OUT_DIR
afterwards.
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _write_parquet(path: Path, rows: int, width: int, row_group: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    schema = pa.schema([("text", pa.string()), ("emb", pa.list_(pa.float32(), width))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, row_group):
            n = min(row_group, rows - start)
            values = rng.standard_normal(n * width, dtype=np.float32)
            texts = [f"Row {k} of the store: a sentence about topic {k % 97} and item {k % 13}." for k in range(n)]
            states = pa.FixedSizeListArray.from_arrays(pa.array(values), width)
            writer.write_table(pa.table({"text": texts, "emb": states}, schema=schema))


def _write_vllm(folder: Path, files: int, width: int, tokenizer) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for k in range(files):
        ids = tokenizer(f"Request {k}: a sentence about topic {k % 97} and item {k % 13}.")["input_ids"]
        hidden = torch.randn(len(ids), 1, width, generator=generator)
        save_file({"hidden_states": hidden, "token_ids": torch.tensor(ids)}, folder / f"{k}.safetensors")


def main() -> None:
    model, out, kind = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else (1_000_000 if kind == "parquet" else 20_000)
    sample = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    out.mkdir(parents=True, exist_ok=True)
    from extraction.models import load_model

    loaded = load_model(model)
    layer, width = loaded.num_hidden_layers, loaded.hidden_size
    started = time.perf_counter()
    if kind == "parquet":
        store = out / "store.parquet"
        _write_parquet(store, count, width, int(sys.argv[6]) if len(sys.argv) > 6 else 10_000)
        size = store.stat().st_size
        options = ["--layer", str(layer)]
    else:
        store = out / "vllm"
        _write_vllm(store, count, width, loaded.tokenizer)
        size = sum(p.stat().st_size for p in store.iterdir())
        options = ["--layers", str(layer)]
    write_seconds = time.perf_counter() - started
    report = out / "audit.json"
    audit = [sys.executable, "-m", "extraction", "audit", "--model", model, "--states", str(store), *options]
    audit += ["--sample", str(sample), "--no-forensics", "--json", str(report)]
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *audit], capture_output=True, text=True)
    audit_seconds = time.perf_counter() - started
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    data = json.loads(report.read_text())
    print(
        json.dumps(
            {
                "format": kind,
                "texts_or_files": count,
                "store_bytes": size,
                "write_seconds": round(write_seconds, 1),
                "n_checked": data["n_checked"],
                "rows_read": data["sample"]["rows_read"],
                "verdict": data["verdict"],
                "peak_rss_bytes": peak_kib * 1024,
                "audit_seconds": round(audit_seconds, 1),
                "audit_json_seconds": round(data["seconds"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
