"""``probe``: what a probe trained on each strategy's states scores at inference time, across
layers and seeded splits, with a 95% interval on the gap."""

from __future__ import annotations

import argparse

from ..cli import (
    CliError,
    add_lm_head_argument,
    add_model_arguments,
    add_pooling_argument,
    check_output_path,
    load_model_from_args,
    strategy_progress_bars,
    texts_for_model,
)
from ..storage.atomic import write_json_atomic

ORDER = 20


def add_parser(subparsers) -> None:
    from ..pooling import PER_TEXT_POOLINGS
    from ..probing.labelled import BUILTIN_DATASETS, DEFAULT_DATASET, DEFAULT_TEST_FRACTION
    from ..probing.probe import DEFAULT_SEED
    from ..probing.sweep import DEFAULT_SEEDS
    from ..strategies import DEFAULT_BATCH_SIZE, STRATEGIES

    parser = subparsers.add_parser(
        "probe",
        help="train a probe on each strategy's states at every layer; score it on the same strategy and on "
        "single-sample states",
        description=(
            "For each strategy, layer and seeded split, train a standardized logistic-regression probe on the "
            "strategy's train-split states and score it on its own test-split states (what validation shows) and "
            "on single-sample test states (what inference sees). Reports the mean gap per layer and strategy with "
            "a 95%% t-interval over the splits."
        ),
    )
    add_model_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        choices=list(BUILTIN_DATASETS),
        default=DEFAULT_DATASET,
        help=f"built-in labelled set (default {DEFAULT_DATASET}): "
        + "; ".join(f"{name}: {dataset.description}" for name, dataset in BUILTIN_DATASETS.items()).replace("%", "%%"),
    )
    source.add_argument("--data", help="your own labelled .csv with text and label columns (instead of --dataset)")
    parser.add_argument(
        "--layers",
        default="all",
        help="hidden_states indices to probe: all (default) or comma-separated, e.g. 3,9,-1 "
        "(0 = embeddings, -1 = the last layer, after the final norm)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=DEFAULT_SEEDS,
        help=f"seeded train/test splits per layer (default {DEFAULT_SEEDS}; 2 or more for an interval)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="first split seed: the splits use seed .. seed + seeds - 1"
    )
    parser.add_argument("--strategies", default="all", help=f"comma-separated, or all: {','.join(STRATEGIES)}")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    add_pooling_argument(parser, choices=PER_TEXT_POOLINGS)
    parser.add_argument(
        "--test-fraction", type=float, default=DEFAULT_TEST_FRACTION, help="share of each class held out for testing"
    )
    add_lm_head_argument(parser, "the zero-shot lm_head accuracy on the last layer")
    parser.add_argument("--json", dest="json_out", help="write the results as JSON to this file")
    parser.set_defaults(run=run)


def _gap_cell(interval, significant_mark: str = "*") -> str:
    from ..probing.findings import points

    if interval.low is None:
        return points(interval.mean)
    mark = significant_mark if interval.significant else " "
    return f"{points(interval.mean)} [{points(interval.low)},{points(interval.high)}]{mark}"


def format_sweep_table(sweep) -> str:
    """The readable table ``probe`` prints: a row per layer, the reference probe's accuracy, then
    each strategy's mean gap in points with its 95% interval (``*``: the interval excludes 0)."""
    from ..strategies import REFERENCE

    others = [name for name in sweep.strategies if name != REFERENCE]
    width = 24
    header = f"{'layer':>5} {'single acc':>10}  " + "".join(f"{name:<{width}}" for name in others)
    lines = [header.rstrip(), "-" * len(header.rstrip())]
    reference = sweep.strategies.index(REFERENCE)
    for i, layer in enumerate(sweep.layers):
        cells = "".join(f"{_gap_cell(sweep.gap(layer, name)):<{width}}" for name in others)
        accuracy = f"{100 * sweep.accuracy_single[i, reference].mean():.1f}%"
        lines.append(f"{layer:>5} {accuracy:>10}  {cells}".rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..pooling import POOLING_SUMMARY
    from ..probing.labelled import LabelledTexts, builtin_dataset, check_labelled, read_labelled_csv
    from ..probing.sweep import run_probe_sweep
    from ..strategies import parse_strategy_names

    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.seeds < 1:
        raise CliError(f"--seeds must be at least 1 (2 or more for an interval), got {args.seeds}")
    if args.json_out:
        check_output_path(args.json_out)
    names = parse_strategy_names(args.strategies)
    data = read_labelled_csv(args.data) if args.data else builtin_dataset(args.dataset)
    check_labelled(data, args.test_fraction)  # before the model load: input mistakes fail fast
    loaded = load_model_from_args(args)
    if args.chat_template:
        data = LabelledTexts(texts_for_model(data.texts, loaded, args), data.labels, data.source)
    with strategy_progress_bars() as progress:
        sweep = run_probe_sweep(
            loaded,
            data,
            names,
            layers=args.layers,
            seeds=args.seeds,
            first_seed=args.seed,
            test_fraction=args.test_fraction,
            batch_size=args.batch_size,
            progress=progress,
            pooling=args.pooling,
            lm_head=args.lm_head,
        )
    print(f"model: {loaded.description}")
    for note in sweep.notes:
        print(f"note: {note}")
    print(f"data: {sweep.describe()}")
    print(f"pooling: {sweep.pooling} ({POOLING_SUMMARY[sweep.pooling]})")
    print(format_sweep_table(sweep))
    print(
        "single acc: the reference probe (trained and tested on single-sample states), mean over the splits. "
        "Per strategy: gap = accuracy on its own test states (validation) - on single-sample test states "
        "(inference), mean in points [95% t-interval over the splits]; * = the interval excludes 0."
    )
    for finding in sweep.findings():
        print(f"- {finding}")
    if sweep.lm_head_note:
        print(f"no lm_head accuracy: {sweep.lm_head_note}")
    extraction = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in sweep.extraction_seconds.items())
    print(f"extraction per strategy: {extraction}")
    if args.json_out:
        write_json_atomic(args.json_out, sweep.to_dict())
        print(f"wrote {args.json_out}")
    return 0
