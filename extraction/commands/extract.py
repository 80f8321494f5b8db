"""``extract``: hidden states extracted correctly, to a safetensors file with metadata."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import (
    CliError,
    add_lm_head_argument,
    add_model_arguments,
    add_pooling_argument,
    load_model_from_args,
    stage_progress_bars,
    texts_for_model,
)
from ._extract_options import extract_options

ORDER = 11


def add_parser(subparsers) -> None:
    from ..storage.export import AUTO_SAMPLE, DEFAULT_VERIFY
    from ..storage.safetensors_writer import STORE_DTYPES
    from ..storage.sharded_export import DEFAULT_SHARD_TEXTS
    from ..strategies import DEFAULT_BATCH_SIZE, STRATEGIES

    parser = subparsers.add_parser(
        "extract", help="extract hidden states (last token, mean or every token) with an exact strategy to a file"
    )
    add_model_arguments(parser)
    add_pooling_argument(parser)
    parser.add_argument(
        "--texts", required=True, help="texts file: .txt (one a line), .jsonl (text or chat messages field), .csv"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output .safetensors file (tensor 'hidden_states', (N, L, d); under --pooling tokens (R, L, d) rows "
        "and 'offsets' (N+1,): text i owns rows offsets[i]:offsets[i+1]), or a folder for shards "
        "(always under torchrun / accelerate launch with several ranks)",
    )
    parser.add_argument("--layers", default="all", help="hidden_states indices, comma-separated, or all (default)")
    parser.add_argument(
        "--strategy",
        default="auto",
        help=f"auto (the cheapest layout, by a cost model, that is exact on this model: checked on a few probe "
        f"texts, then remembered in the cache folder) or one of: {', '.join(STRATEGIES)}",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--store-dtype", default="float32", choices=list(STORE_DTYPES), help="dtype of the stored tensor"
    )
    parser.add_argument(
        "--verify",
        type=int,
        default=DEFAULT_VERIFY,
        help=f"re-extract this many random texts one at a time and fail if they differ (default {DEFAULT_VERIFY}; "
        "0 skips)",
    )
    parser.add_argument(
        "--auto-sample",
        type=int,
        default=AUTO_SAMPLE,
        help=f"texts of different lengths in auto's exactness probe (default {AUTO_SAMPLE}; a copy of one is added)",
    )
    add_lm_head_argument(parser, "--verify's lm_head top-1 check")
    parser.add_argument("--seed", type=int, default=0, help="seed of the auto sample and the verified texts")
    parser.add_argument("--force", action="store_true", help="replace the output file if it exists")
    parser.add_argument(
        "--resume", action="store_true", help="folder output: keep the finished shards of an interrupted run"
    )
    parser.add_argument(
        "--shard-size", type=int, default=DEFAULT_SHARD_TEXTS, help=f"texts per shard (default {DEFAULT_SHARD_TEXTS})"
    )
    parser.add_argument(
        "--device-map",
        choices=["auto"],
        help="spread one model over the GPUs and CPU (accelerate's big-model loading)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..storage.distributed import rank_from_environment
    from ..storage.export import describe_layers, extract_to_file
    from ..storage.shards import is_folder_output
    from ..strategies import get_strategy
    from ..texts import read_text_items, tokenize_texts

    info = rank_from_environment()
    if is_folder_output(args.out) or info.is_distributed:
        from ._sharded import run_sharded

        return run_sharded(args, info)
    if args.resume:
        raise CliError("--resume continues a folder of shards; --out is a file")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise CliError(f"--out must end in .safetensors, got {out.name}")
    if out.exists() and not args.force:
        raise CliError(f"{out} already exists; pass --force to replace it")
    if out.is_dir():
        raise CliError(f"{out} is a folder")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.verify < 0:
        raise CliError(f"--verify must be 0 (skip) or more, got {args.verify}")
    if args.auto_sample < 1:
        raise CliError(f"--auto-sample must be at least 1, got {args.auto_sample}")
    if args.strategy != "auto":
        get_strategy(args.strategy)
    items = read_text_items(args.texts)
    loaded = load_model_from_args(args)
    texts = texts_for_model(items, loaded, args)
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    labels = {"choosing": "auto: layouts checked", "extracting": "extracting", "verifying": "verifying"}
    with stage_progress_bars(labels) as progress:
        result = extract_to_file(loaded, tokenized, out, progress=progress, **extract_options(args))
    print(f"model: {loaded.description}")
    if result.choice is not None:
        print(f"auto ({result.choice.seconds:.1f} s): {result.choice.why}")
        for c in result.choice.candidates:
            mark = "*" if c["name"] == result.strategy else " "
            verdict = c["verdict"] or "not needed"
            print(
                f" {mark} {c['name']:<10} about {c['estimated_seconds']:>7.1f} s, {c['passes']:>5} passes, "
                f"{100 * c['pad_fraction']:>5.1f}% padding: {verdict}" + (f" ({c['checked']})" if c["checked"] else "")
            )
    print(f"strategy: {result.strategy}, pooling: {result.pooling}")
    rows, num_layers, width = result.shape
    offsets = (
        f" and offsets ({result.num_texts + 1},) for {result.num_texts} texts" if result.pooling == "tokens" else ""
    )
    print(
        f"wrote {result.path}: hidden_states ({rows}, {num_layers}, {width}) {result.store_dtype}{offsets}, "
        f"{describe_layers(result.layers)}, {result.seconds:.1f} s, {result.texts_per_second:.1f} texts/s"
    )
    if result.forward_pass is not None:
        print(f"forward pass: {result.forward_pass.note}")
    if result.verification is not None:
        print(f"verified {len(result.verification.rows)} texts one at a time: {result.verification.describe()}")
    else:
        print("not verified (--verify 0)")
    return 0
