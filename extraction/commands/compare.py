"""``compare``: every padding strategy against single-sample extraction, with verdicts."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import (
    CliError,
    add_model_arguments,
    add_pooling_argument,
    check_output_path,
    load_model_from_args,
    strategy_progress_bars,
    texts_for_model,
)
from ..storage.atomic import write_bytes_atomic, write_json_atomic
from ..verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE, EXACT_COSINE

ORDER = 0


def add_parser(subparsers) -> None:
    from ..strategies import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, STRATEGIES

    parser = subparsers.add_parser("compare", help="compare every padding strategy with single-sample extraction")
    add_model_arguments(parser)
    parser.add_argument(
        "--texts",
        required=True,
        help="texts file: .txt (one a line), .jsonl (text or chat messages field), .csv (text column)",
    )
    add_pooling_argument(parser)
    parser.add_argument("--strategies", default="all", help=f"comma-separated, or all: {','.join(STRATEGIES)}")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=DEFAULT_MAX_BATCH_TOKENS,
        help="at most this many positions (texts x longest, padding included) in one forward pass; "
        f"a longer text runs alone (default {DEFAULT_MAX_BATCH_TOKENS})",
    )
    parser.add_argument("--json", dest="json_out", help="write the results as JSON to this file")
    parser.add_argument(
        "--html", dest="html_out", help="write a self-contained HTML report (charts work offline) to this file"
    )
    parser.set_defaults(run=run)


def format_compare_table(report) -> str:
    """The readable table ``compare`` prints."""
    columns = f"{'min cos':>10} {'mean cos':>10} {'max rel L2':>10} {'top-1':>6} {'pad %':>6} {'tok/s':>8}"
    header = f"{'strategy':<13} {'verdict':<10} {columns}  {'cause kind':<14} cause"
    lines = [header, "-" * len(header)]
    for name, comp in report.strategies.items():
        ext = comp.extraction
        top1 = "n/a" if comp.top1_agreement is None else f"{100 * comp.top1_agreement:.0f}%"
        lines.append(
            f"{name:<13} {comp.verdict:<10} {comp.min_cosine:>10.6f} {comp.mean_cosine:>10.6f} "
            f"{comp.max_relative_l2:>10.4f} {top1:>6} {100 * ext.pad_fraction:>5.0f}% "
            f"{ext.tokens_per_second:>8.0f}  {comp.cause_kind:<14} {comp.cause}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..comparison.compare import compare_strategies
    from ..pooling import POOLING_SUMMARY
    from ..strategies import parse_strategy_names
    from ..texts import read_text_items, tokenize_texts

    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_batch_tokens < 1:
        raise CliError(f"--max-batch-tokens must be at least 1, got {args.max_batch_tokens}")
    names = parse_strategy_names(args.strategies)
    items = read_text_items(args.texts)
    for option, out in (("--json", args.json_out), ("--html", args.html_out)):
        if out:
            check_output_path(out, option)
            if Path(out).resolve() == Path(args.texts).resolve():
                raise CliError(f"{option} {out}: is the texts file; give another file name")
    if args.json_out and args.html_out and Path(args.json_out).resolve() == Path(args.html_out).resolve():
        raise CliError("--json and --html name the same file; give two file names")
    loaded = load_model_from_args(args)
    texts = texts_for_model(items, loaded, args)
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    with strategy_progress_bars() as progress:
        report = compare_strategies(
            loaded,
            tokenized,
            names,
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            progress=progress,
            pooling=args.pooling,
        )
    print(f"model: {loaded.description}")
    for note in report.notes:
        print(f"note: {note}")
    top1_rule = " and same top-1" if args.pooling == "last" else ""
    print(
        f"pooling {args.pooling}: {POOLING_SUMMARY[args.pooling]}"
        + ("" if args.pooling == "last" else " (top-1 agreement is defined for the last token only: n/a)")
    )
    print(
        f"{len(tokenized)} texts, {sum(tokenized.lengths)} tokens, batch size {args.batch_size} "
        f"(at most {args.max_batch_tokens} positions a pass); "
        f"thresholds: exact >= {EXACT_COSINE} min cosine{top1_rule}, drift >= {DRIFT_COSINE}; "
        f"corrupted whenever max relative L2 > {CORRUPTED_RELATIVE_L2}"
    )
    print(format_compare_table(report))
    if args.json_out:
        payload = report.to_json_dict()
        payload["max_batch_tokens"] = args.max_batch_tokens
        write_json_atomic(args.json_out, payload)
        print(f"wrote {args.json_out}")
    if args.html_out:
        from ..views.report_html import comparison_report_html

        page = comparison_report_html(
            report,
            loaded.tokenizer,
            loaded.pad_token_id,
            settings={"texts file": args.texts, "max batch tokens": args.max_batch_tokens},
        )
        write_bytes_atomic(args.html_out, page.encode())
        print(f"wrote {args.html_out} ({len(page.encode()) / 1e6:.1f} MB)")
    return 0
