"""One benchmark run: what it measures (:class:`BenchmarkSettings`), the machine it ran on
(:func:`environment`), the issue's targets (:func:`check_targets`), and
:func:`run_benchmark`, which measures everything in order: cold start, throughput, the
app's comparison, peak memory."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .comparison import app_comparison
from .memory import MEMORY_BASELINE_TEXTS, MEMORY_MAX_TOKENS, MEMORY_TEXT_COUNTS, memory_report
from .rates import body_parameters, sgemm_gflops
from .report import BenchmarkReport
from .startup import cold_start
from .texts import DEFAULT_MAX_TOKENS, DEFAULT_MIN_TOKENS, DEFAULT_TEXTS, benchmark_texts
from .throughput import (
    BENCH_EXACT_COSINE,
    CHECK_TEXTS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_SINGLE_TEXTS,
    time_strategies,
)

logger = logging.getLogger(__name__)


def environment() -> dict:
    """What the figures depend on: CPU, threads, versions, load."""
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_start": list(os.getloadavg()),
    }


@dataclass
class BenchmarkSettings:
    """What one run measures (``python -m bench --help`` documents each)."""

    model: str = "smollm2-135m"
    dtype: str = "float32"
    texts: int = DEFAULT_TEXTS
    min_tokens: int = DEFAULT_MIN_TOKENS
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = 0
    strategies: str = "all"
    single_texts: int = DEFAULT_SINGLE_TEXTS
    check_texts: int = CHECK_TEXTS
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    sgemm_size: int = 2048
    repeats: int = 1
    exact_cosine: float = BENCH_EXACT_COSINE  # float32; 16-bit dtypes drift by rounding and need a lower bar
    throughput: bool = True
    cold_start: bool = True
    cold_start_without_cache: bool = True
    memory: bool = True
    memory_counts: tuple[int, ...] = MEMORY_TEXT_COUNTS
    memory_baseline_texts: int = MEMORY_BASELINE_TEXTS
    memory_max_tokens: int = MEMORY_MAX_TOKENS
    memory_strategy: str = "sorted"  # used when no strategy was timed; otherwise the fastest exact one
    app_comparison: bool = True
    app_batch_size: int = 4


#: The issue's targets (float32, 2 cores).
TARGETS = {
    "best_ratio_to_single": 10.0,
    "best_sgemm_fraction": 0.6,
    "ready_seconds_with_cache": 2.0,
    "app_comparison_seconds": 20.0,
    "memory_peak_over_estimate": 1.0,
}


def check_targets(report: BenchmarkReport) -> dict:
    """Each target with the figure reached and whether it is met (None where not measured)."""
    best = report.best()
    memory_runs = [r for r in report.memory.get("runs", []) if "peak_over_estimate" in r]
    figures = {
        "best_ratio_to_single": best.ratio_to_single if best else None,
        "best_sgemm_fraction": best.sgemm_fraction if best else None,
        "ready_seconds_with_cache": report.cold_start.get("with_cache", {}).get("load_seconds"),
        "app_comparison_seconds": report.app_comparison.get("seconds"),
        "memory_peak_over_estimate": max(r["peak_over_estimate"] for r in memory_runs) if memory_runs else None,
    }
    at_most = {"ready_seconds_with_cache", "app_comparison_seconds", "memory_peak_over_estimate"}
    out = {}
    for key, target in TARGETS.items():
        value = figures[key]
        met = None if value is None else (value <= target if key in at_most else value >= target)
        out[key] = {"target": target, "reached": value, "met": met}
    return out


def run_benchmark(settings: BenchmarkSettings, say: Callable[[str], None] = logger.info) -> BenchmarkReport:
    """Everything in :class:`BenchmarkSettings`, in one process plus child processes."""
    from extraction.models import load_model
    from extraction.strategies import parse_strategy_names
    from extraction.texts import tokenize_texts

    names = parse_strategy_names(settings.strategies)
    env = environment()
    cold: dict = {}
    if settings.cold_start:
        say("cold start with the cache present (child processes)")
        cold["with_cache"] = cold_start(settings.model, settings.dtype, cache=True)
        if settings.cold_start_without_cache:
            say("cold start with no cache (child process, converts the GGUF)")
            cold["without_cache"] = cold_start(settings.model, settings.dtype, cache=False)

    loaded = load_model(settings.model, dtype=settings.dtype)
    texts = benchmark_texts(loaded.tokenizer, settings.texts, settings.min_tokens, settings.max_tokens, settings.seed)
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    lengths = tokenized.lengths
    say("sgemm")
    sgemm = sgemm_gflops(settings.sgemm_size, device=loaded.device)
    report = BenchmarkReport(
        environment=env,
        settings={**asdict(settings), "memory_counts": list(settings.memory_counts)},
        texts={
            "count": len(lengths),
            "seed": settings.seed,
            "min_tokens": min(lengths),
            "mean_tokens": sum(lengths) / len(lengths),
            "max_tokens": max(lengths),
            "total_tokens": sum(lengths),
        },
        sgemm_gflops=sgemm,
        body_parameters=body_parameters(loaded.model),
        cold_start=cold,
    )
    if settings.throughput:
        report.timings, report.not_timed = time_strategies(
            loaded,
            tokenized,
            names,
            sgemm,
            settings.batch_size,
            settings.max_batch_tokens,
            settings.single_texts,
            settings.check_texts,
            say,
            settings.repeats,
            settings.exact_cosine,
        )
    report.environment["sgemm_gflops_end"] = sgemm_gflops(settings.sgemm_size, device=loaded.device)
    if settings.app_comparison:
        say("the app's full comparison on the sample texts")
        report.app_comparison = app_comparison(loaded, settings.app_batch_size)
    if settings.memory:
        best = report.best()
        strategy = best.name if best else settings.memory_strategy
        say(f"peak memory of extraction with {strategy} (child processes)")
        report.memory = memory_report(
            settings.model,
            loaded.tokenizer,
            loaded.num_hidden_layers,
            loaded.hidden_size,
            strategy,
            settings.batch_size,
            settings.memory_counts,
            settings.memory_baseline_texts,
            settings.dtype,
            settings.seed,
            settings.memory_max_tokens,
        )
    report.environment["load_average_end"] = list(os.getloadavg())
    report.targets = check_targets(report)
    return report
