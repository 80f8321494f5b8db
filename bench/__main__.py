"""``python -m bench``: run the benchmark, print the tables, write the JSON (see ``bench``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bench.endtoend import E2E_TEXT_COUNTS
from bench.memory import MEMORY_BASELINE_TEXTS, MEMORY_MAX_TOKENS, MEMORY_TEXT_COUNTS
from bench.peers import DEFAULT_PEER_TEXTS
from bench.report import format_report
from bench.run import BenchmarkSettings, run_benchmark
from bench.texts import DEFAULT_TEXTS
from bench.throughput import (
    BENCH_EXACT_COSINE,
    CHECK_TEXTS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_SINGLE_TEXTS,
)

#: ``--quick``: the same code paths on small sizes, in a couple of minutes.
QUICK = {
    "texts": 48,
    "single_texts": 12,
    "check_texts": 6,
    "memory_counts": (100, 400),
    "memory_baseline_texts": 16,
    "peer_texts": 24,
    "e2e_counts": (16, 48),
}
PARTS = ("throughput", "peers", "end-to-end", "cold-start", "cold-start-no-cache", "memory", "app", "layers")


def _counts(spec: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in spec.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated text counts, got {spec!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive text counts, got {spec!r}")
    return counts


def _parts(spec: str) -> set[str]:
    parts = {part.strip() for part in spec.split(",") if part.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(sorted(unknown))}; valid: {', '.join(PARTS)}")
    return parts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Extraction speed against single-sample extraction and sgemm, cold start, peak memory "
        "and the app's full comparison. Figures depend on the machine and on what else runs on it: the "
        "load average at the start and end is reported with them.",
    )
    parser.add_argument("--model", default="smollm2-135m", help="model to benchmark (default: the embedded one)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--texts", type=int, default=DEFAULT_TEXTS, help=f"benchmark texts (default {DEFAULT_TEXTS})")
    parser.add_argument("--min-tokens", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated texts")
    parser.add_argument("--strategies", default="all", help="comma-separated strategies to consider, or all")
    parser.add_argument(
        "--single-texts",
        type=int,
        default=DEFAULT_SINGLE_TEXTS,
        help=f"texts single is timed on, spread over the lengths (default {DEFAULT_SINGLE_TEXTS}; it is slow)",
    )
    parser.add_argument("--check-texts", type=int, default=CHECK_TEXTS, help="texts of the exactness pre-check")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="texts a pass at most")
    parser.add_argument(
        "--max-batch-tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS, help="positions a pass at most"
    )
    parser.add_argument("--repeats", type=int, default=1, help="time each strategy this many times, keep the best")
    parser.add_argument(
        "--exact-cosine",
        type=float,
        default=BENCH_EXACT_COSINE,
        help="min cosine to single for a strategy to count as exact (default %(default)s, for float32; "
        "bfloat16/float16 runs drift by rounding and need a lower bar, e.g. 0.999)",
    )
    parser.add_argument("--sgemm-size", type=int, default=2048, help="matrix size of the sgemm measurement")
    parser.add_argument(
        "--memory-texts",
        type=_counts,
        default=MEMORY_TEXT_COUNTS,
        help="text counts of the peak-memory runs (default 500,2000)",
    )
    parser.add_argument("--memory-baseline-texts", type=int, default=MEMORY_BASELINE_TEXTS)
    parser.add_argument(
        "--memory-max-tokens", type=int, default=MEMORY_MAX_TOKENS, help="longest text of the memory runs"
    )
    parser.add_argument(
        "--app-batch-size", type=int, default=4, help="batch size of the app comparison (app default 4)"
    )
    parser.add_argument(
        "--peer-texts", type=int, default=DEFAULT_PEER_TEXTS, help="texts of the peers section (default %(default)s)"
    )
    parser.add_argument(
        "--e2e-texts",
        type=_counts,
        default=E2E_TEXT_COUNTS,
        help="text counts of the end-to-end extract runs (default 16,160)",
    )
    parser.add_argument("--e2e-repeats", type=int, default=1, help="end-to-end runs of each kind; the best is kept")
    parser.add_argument(
        "--short-layer", type=int, default=12, help="the layer of the shortened-pass row (part 'layers', default 12)"
    )
    parser.add_argument("--short-texts", type=int, default=160, help="texts of the shortened-pass row (default 160)")
    parser.add_argument("--short-repeats", type=int, default=2, help="runs of each side of that row; the best is kept")
    parser.add_argument("--skip", type=_parts, default=set(), help=f"parts to leave out: {', '.join(PARTS)}")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a fast look (48 texts, single on 12, memory on 100 and 400, no uncached cold start)",
    )
    parser.add_argument("--json", default="bench-results.json", help="where to write the JSON (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def settings_from_args(args: argparse.Namespace) -> BenchmarkSettings:
    values = {
        "model": args.model,
        "dtype": args.dtype,
        "texts": args.texts,
        "min_tokens": args.min_tokens,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "strategies": args.strategies,
        "single_texts": args.single_texts,
        "check_texts": args.check_texts,
        "batch_size": args.batch_size,
        "max_batch_tokens": args.max_batch_tokens,
        "sgemm_size": args.sgemm_size,
        "repeats": args.repeats,
        "exact_cosine": args.exact_cosine,
        "memory_counts": args.memory_texts,
        "memory_baseline_texts": args.memory_baseline_texts,
        "memory_max_tokens": args.memory_max_tokens,
        "app_batch_size": args.app_batch_size,
        "peers": "peers" not in args.skip,
        "peer_texts": args.peer_texts,
        "end_to_end": "end-to-end" not in args.skip,
        "e2e_counts": args.e2e_texts,
        "e2e_repeats": args.e2e_repeats,
        "throughput": "throughput" not in args.skip,
        "cold_start": "cold-start" not in args.skip,
        "cold_start_without_cache": "cold-start-no-cache" not in args.skip and not args.quick,
        "memory": "memory" not in args.skip,
        "app_comparison": "app" not in args.skip,
        "shortened_pass": "layers" not in args.skip,
        "short_layer": args.short_layer,
        "short_texts": args.short_texts,
        "short_repeats": args.short_repeats,
    }
    if args.quick:
        values.update(QUICK)
    for key in (
        "texts", "repeats", "single_texts", "check_texts", "batch_size", "max_batch_tokens", "app_batch_size",
        "peer_texts", "e2e_repeats", "short_texts", "short_repeats",
    ):  # fmt: skip
        if values[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {values[key]}")
    if not 0 < values["exact_cosine"] <= 1:
        raise ValueError(f"--exact-cosine must be in (0, 1], got {values['exact_cosine']}")
    if not 1 <= values["min_tokens"] <= values["max_tokens"]:
        raise ValueError("need 1 <= --min-tokens <= --max-tokens")
    return BenchmarkSettings(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        settings = settings_from_args(args)
        from extraction.storage.atomic import write_json_atomic

        report = run_benchmark(settings, say=lambda line: print(f"... {line}", file=sys.stderr, flush=True))
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        write_json_atomic(args.json, report.to_dict())
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
