"""``probe``: what a probe trained on each strategy's states scores at inference time."""

from __future__ import annotations

import argparse

from ..atomic import write_json_atomic
from ..cli import CliError, add_model_arguments, load_model_from_args, strategy_progress_bars, texts_for_model
from ..verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE

ORDER = 20


def add_parser(subparsers) -> None:
    from ..labelled import BUILTIN_DATASET, DEFAULT_TEST_FRACTION
    from ..probe import DEFAULT_SEED
    from ..strategies import DEFAULT_BATCH_SIZE, STRATEGIES

    parser = subparsers.add_parser(
        "probe",
        help="train a probe on each strategy's states; score it on the same strategy and on single-sample states",
        description=(
            "For each strategy, train a standardized logistic-regression probe on its train-split states and score "
            "it on its own test-split states (what validation shows) and on single-sample test states (what "
            "inference sees)."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--data", help=f"labelled .csv with text and label columns (default: the built-in {BUILTIN_DATASET})"
    )
    parser.add_argument(
        "--layer",
        type=int,
        default=None,
        help="hidden_states index to probe: 0 = embeddings, N = last block (default); negative counts from the end",
    )
    parser.add_argument("--strategies", default="all", help=f"comma-separated, or all: {','.join(STRATEGIES)}")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--test-fraction", type=float, default=DEFAULT_TEST_FRACTION, help="share of each class held out for testing"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the stratified train/test split")
    parser.add_argument("--json", dest="json_out", help="write the results as JSON to this file")
    parser.set_defaults(run=run)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_probe_table(report) -> str:
    """The readable table ``probe`` prints."""
    header = (
        f"{'strategy':<13} {'acc same':>9} {'acc single':>11} {'gap':>7} {'lm_head':>8} {'flips':>7} {'corrupted':>10}"
    )
    lines = [header, "-" * len(header)]
    for name, result in report.strategies.items():
        lines.append(
            f"{name:<13} {_percent(result.accuracy_same):>9} {_percent(result.accuracy_single):>11} "
            f"{100 * result.gap:>+7.1f} {_percent(result.lm_head_accuracy):>8} "
            f"{_percent(result.scores.prediction_flips):>7} {_percent(result.corrupted_test_fraction):>10}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..labelled import LabelledTexts, builtin_dataset, check_labelled, read_labelled_csv
    from ..probe import run_probe
    from ..strategies import parse_strategy_names

    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    names = parse_strategy_names(args.strategies)
    data = read_labelled_csv(args.data) if args.data else builtin_dataset()
    check_labelled(data, args.test_fraction)  # before the model load: input mistakes fail fast
    loaded = load_model_from_args(args)
    if args.chat_template:
        data = LabelledTexts(texts_for_model(data.texts, loaded, args), data.labels, data.source)
    with strategy_progress_bars() as progress:
        report = run_probe(
            loaded,
            data,
            names,
            layer=args.layer,
            test_fraction=args.test_fraction,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=progress,
        )
    print(f"model: {loaded.description}")
    for note in report.notes:
        print(f"note: {note}")
    counts = ", ".join(f"{label!r}: {n}" for label, n in data.class_counts().items())
    print(
        f"data: {report.data_source} ({report.num_texts} texts; {counts}); layer {report.layer} of "
        f"0..{report.num_layers}; {len(report.train_indices)} train / {len(report.test_indices)} test "
        f"(stratified, seed {report.seed})"
    )
    if report.lm_head_note:
        print(f"no lm_head accuracy: {report.lm_head_note}")
    print(format_probe_table(report))
    print(
        "acc same: probe scored on test states extracted like its training states (what validation shows); "
        "acc single: on single-sample test states (what inference sees); gap = same - single; flips: test "
        f"predictions that change between the two; corrupted: test states with cosine < {DRIFT_COSINE} or relative "
        f"L2 > {CORRUPTED_RELATIVE_L2} to single's; "
        "lm_head: zero-shot, argmax over the label tokens on final-layer test states."
    )
    if args.json_out:
        write_json_atomic(args.json_out, report.to_dict())
        print(f"wrote {args.json_out}")
    return 0
