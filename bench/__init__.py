"""Benchmark: extraction speed, useful FLOPs, cold start, peak memory and the app's comparison.

``python -m bench`` runs everything in one process (plus a few child processes for the
cold-start and memory figures) and prints a table; ``--json`` writes the figures. What
is measured, on the embedded model in float32 unless told otherwise:

* **throughput**: a seeded set of texts of 5-200 tokens (:func:`benchmark_texts`) is
  extracted with ``single`` and with every other strategy that is exact on this model
  (checked first on a small sample; the corrupted ones are listed, not timed). For each:
  real tokens per second, the ratio to ``single`` and the fraction of padded positions.
  ``single`` is timed on an evenly spread subset of the texts (every k-th by length,
  ``--single-texts``) because it is slow; its tokens/s is a rate, comparable as long
  as the subset has the same length spread.
* **useful FLOPs**: ``(2 P_body T_real + 2 d V N) / seconds`` with ``P_body`` the
  parameters outside the embeddings and ``lm_head`` (:func:`body_parameters`),
  ``T_real`` the real tokens, ``d`` the width, ``V`` the vocabulary and ``N`` the texts
  (``lm_head`` for the last token of each text). Attention scores and padding are not
  counted: they are work the result does not need. Reported as GFLOP/s and as a
  fraction of the sgemm rate measured in the same run (:func:`sgemm_gflops`).
* **exactness**: the rows of each timed run, on the texts ``single`` was timed on,
  against ``single``'s rows: the minimum cosine over texts and layers must be at least
  :data:`BENCH_EXACT_COSINE`. No speed is bought with wrong answers.
* **cold start** (child processes): ``import extraction`` and ``load_model`` with the
  converted cache present, and with it absent (an empty temporary ``XDG_CACHE_HOME``).
* **peak memory** (child processes, ``ru_maxrss`` from ``wait4``): the ``extract``
  command on 500 and 2,000 texts against the model plus one batch (a run on a few texts)
  plus the result rows.
* **the app's comparison**: ``compare_strategies`` over every strategy on
  :data:`~extraction.samples.SAMPLE_TEXTS`, split into extraction and metrics time.
* **peers** (:mod:`bench.peers`): the code researchers write instead (plain transformers,
  ``output_hidden_states``), timed on the same texts in the same run, in ms per text.
* **end to end** (:mod:`bench.endtoend`): ``python -m extraction extract`` as a user runs
  it, ``--strategy auto`` (with and without a remembered choice) against ``single``.
* **GPU** (:mod:`bench.gpu`, ``python -m bench.gpu``): random-weight models built from
  configs, for a lent GPU machine without model files.

One concern a module: :mod:`bench.texts`, :mod:`bench.rates`, :mod:`bench.throughput`,
:mod:`bench.startup` (cold start), :mod:`bench.memory`, :mod:`bench.comparison` (the
app's), :mod:`bench.peers`, :mod:`bench.endtoend`, :mod:`bench.gpu`,
:mod:`bench.processes` (running a child), :mod:`bench.children` (the children
themselves), :mod:`bench.run` (one run) and :mod:`bench.report` (table and JSON);
``python -m bench`` is :mod:`bench.__main__`.

The public names below are importable from ``bench`` itself, loaded on first use: the
child processes (``python -m bench.children.<name>``) import this package first, and it
must not import torch or ``extraction`` for them before their clocks start.
"""

from __future__ import annotations

import importlib

#: Public name -> the module of this package that defines it.
EXPORTS = {
    "benchmark_texts": "texts",
    "spread_subset": "texts",
    "DEFAULT_TEXTS": "texts",
    "DEFAULT_MIN_TOKENS": "texts",
    "DEFAULT_MAX_TOKENS": "texts",
    "sgemm_gflops": "rates",
    "body_parameters": "rates",
    "useful_flops": "rates",
    "BENCH_EXACT_COSINE": "throughput",
    "CHECK_TEXTS": "throughput",
    "DEFAULT_BATCH_SIZE": "throughput",
    "DEFAULT_MAX_BATCH_TOKENS": "throughput",
    "DEFAULT_SINGLE_TEXTS": "throughput",
    "StrategyTiming": "throughput",
    "min_cosine": "throughput",
    "time_strategies": "throughput",
    "REPO_ROOT": "processes",
    "ChildRun": "processes",
    "child_env": "processes",
    "run_child": "processes",
    "cold_start": "startup",
    "MEMORY_TEXT_COUNTS": "memory",
    "MEMORY_BASELINE_TEXTS": "memory",
    "MEMORY_MAX_TOKENS": "memory",
    "measure_extract_memory": "memory",
    "memory_report": "memory",
    "app_comparison": "comparison",
    "PEERS": "peers",
    "PeerTiming": "peers",
    "time_peers": "peers",
    "E2E_TEXT_COUNTS": "endtoend",
    "end_to_end": "endtoend",
    "BenchmarkSettings": "run",
    "TARGETS": "run",
    "check_targets": "run",
    "environment": "run",
    "run_benchmark": "run",
    "BenchmarkReport": "report",
    "format_report": "report",
}

__all__ = sorted(EXPORTS)


def __getattr__(name: str):
    module = EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *EXPORTS})
