"""Peak memory of extraction against ``model + one batch + rows``, measured in child
processes (:mod:`bench.children.extract`) on growing numbers of texts."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.processes import child_failure, run_child
from bench.texts import DEFAULT_MIN_TOKENS, benchmark_texts

EXTRACT_CHILD = "bench.children.extract"
#: What the memory child runs, as the report names it: ``python -m extraction extract
#: --verify 0``, with the memory marked once the model is loaded (:mod:`bench.children.extract`).
HOW = "extract command"
MEMORY_TEXT_COUNTS = (500, 2000)
#: Texts in the memory run that stands for "the model plus one batch".
MEMORY_BASELINE_TEXTS = 64
#: Longest text of the memory runs: the rows, not the text lengths, grow with N; shorter
#: texts keep the 2,000-text run to minutes.
MEMORY_MAX_TOKENS = 64


def measure_extract_memory(
    model: str,
    texts: Sequence[str],
    strategy: str,
    batch_size: int,
    dtype: str = "float32",
    workdir: Path | None = None,
) -> dict:
    """Memory of one child extracting ``texts`` with ``strategy`` and no verification:
    the ``extract`` command's work (:mod:`bench.children.extract`).

    Returns ``peak_rss_bytes`` (the whole process, loading included, from ``wait4``) and,
    on Linux, ``rss_after_load_bytes`` and ``peak_after_load_bytes`` (the extraction's own
    peak, see :mod:`bench.children.marks`)."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-", dir=workdir) as folder:
        path = Path(folder) / "texts.txt"
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        args = [
            "-m", EXTRACT_CHILD, "extract", "--model", model, "--dtype", dtype, "--texts", str(path),
            "--out", str(Path(folder) / "out.safetensors"), "--strategy", strategy,
            "--batch-size", str(batch_size), "--verify", "0",
        ]  # fmt: skip
        run = run_child(args)
    if run.returncode != 0:
        return {"texts": len(texts), "how": HOW, "error": child_failure(run, HOW)}
    marks = run.last_json()
    return {
        "texts": len(texts),
        "how": HOW,
        "peak_rss_bytes": run.peak_rss_bytes,
        "rss_after_load_bytes": marks.get("rss_after_load_bytes"),
        "peak_after_load_bytes": marks.get("peak_after_load_bytes"),
        "wall_seconds": run.wall_seconds,
    }


def memory_report(
    model: str,
    tokenizer,
    num_layers: int,
    hidden_size: int,
    strategy: str,
    batch_size: int,
    counts: Sequence[int] = MEMORY_TEXT_COUNTS,
    baseline_texts: int = MEMORY_BASELINE_TEXTS,
    dtype: str = "float32",
    seed: int = 0,
    max_tokens: int = MEMORY_MAX_TOKENS,
    baseline_repeats: int = 3,
) -> dict:
    """Peak memory of extraction on ``counts`` texts against ``model + one batch + rows``.

    ``peak`` is the extraction's peak (after the model is loaded; the whole process where
    that cannot be measured). ``model + one batch`` is measured: the largest peak, less
    its rows, of ``baseline_repeats`` runs on ``baseline_texts`` texts (one full batch);
    the glibc allocator makes it vary from run to run by a few hundred MiB. Rows are
    ``(L+1) d`` float32 values a text. ``estimate(N) = model_and_batch + rows(N)`` and
    ``peak_over_estimate = peak(N) / estimate(N)``.
    """
    texts = benchmark_texts(tokenizer, max((*counts, baseline_texts)), DEFAULT_MIN_TOKENS, max_tokens, seed=seed + 1)
    row_bytes = (num_layers + 1) * hidden_size * 4

    def peak(run: dict) -> int:
        return run["peak_after_load_bytes"] or run["peak_rss_bytes"]

    baselines = [
        measure_extract_memory(model, texts[:baseline_texts], strategy, batch_size, dtype)
        for _ in range(baseline_repeats)
    ]
    report = {
        "strategy": strategy,
        "batch_size": batch_size,
        "text_tokens": [DEFAULT_MIN_TOKENS, max_tokens],
        "row_bytes": row_bytes,
        "baseline": baselines,
    }
    failed = [run for run in baselines if "error" in run]
    if failed:
        report["error"] = failed[0]["error"]
        return report
    model_and_batch = max(peak(run) for run in baselines) - row_bytes * baseline_texts
    report["model_and_batch_bytes"] = model_and_batch
    report["model_and_batch_range_bytes"] = [
        min(peak(run) for run in baselines) - row_bytes * baseline_texts,
        model_and_batch,
    ]
    report["rss_after_load_bytes"] = baselines[0]["rss_after_load_bytes"]
    runs = []
    for count in counts:
        run = measure_extract_memory(model, texts[:count], strategy, batch_size, dtype)
        if "error" not in run:
            run["peak_bytes"] = peak(run)
            run["rows_bytes"] = row_bytes * count
            run["estimate_bytes"] = model_and_batch + row_bytes * count
            run["peak_over_estimate"] = run["peak_bytes"] / run["estimate_bytes"]
        runs.append(run)
    report["runs"] = runs
    return report
