"""``extract --out FOLDER``, and ``extract`` under ``torchrun`` / ``accelerate launch``: shards.

Not a command of its own (the leading underscore keeps it out of discovery): ``extract``
hands over here when ``--out`` is a folder or a launcher started several ranks. Rank 0
prints what a one-file run prints; the other ranks print nothing.
"""

from __future__ import annotations

import argparse

from ..cli import CliError, load_model_from_args, stage_progress_bars
from ._extract_options import extract_options


def run_sharded(args: argparse.Namespace, info) -> int:
    from ..storage.distributed import launched
    from ..storage.export import describe_layers
    from ..storage.sharded_export import extract_to_folder
    from ..storage.shards import is_folder_output
    from ..storage.text_stream import TextSource
    from ..strategies import get_strategy

    if not is_folder_output(args.out):
        raise CliError(
            f"--out {args.out}: {info.world_size} ranks write shards; give a folder (a name without a suffix)"
        )
    if args.pooling == "tokens":
        raise CliError("--pooling tokens is not supported for sharded runs yet; extract to one .safetensors file")
    if getattr(args, "chat_template", False):
        raise CliError("--chat-template is not applied to streamed shards yet; extract in one process to a file")
    if args.shard_size < 1:
        raise CliError(f"--shard-size must be at least 1, got {args.shard_size}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.verify < 0:
        raise CliError(f"--verify must be 0 (skip) or more, got {args.verify}")
    if args.device_map and info.local_world_size > 1:
        raise CliError(
            "--device-map auto spreads one model over every GPU of the node: start one process per node, "
            f"not {info.local_world_size}"
        )
    if args.strategy != "auto":
        get_strategy(args.strategy)
    source = TextSource(args.texts)
    args.device = info.device(args.device)
    loaded = load_model_from_args(args)
    labels = {"choosing": "auto: layouts checked", "extracting": "shards", "verifying": "verifying"}
    with stage_progress_bars(labels, shown=info.is_main) as progress, launched(info, str(loaded.device)):
        result = extract_to_folder(
            loaded,
            source,
            args.out,
            info,
            resume=args.resume,
            shard_texts=args.shard_size,
            progress=progress,
            **extract_options(args),
        )
    if not info.is_main:
        return 0
    print(f"model: {loaded.description}")
    print(f"ranks: {info.world_size}, device of rank 0: {loaded.device}")
    if result.choice is not None:
        print(f"auto: compared on {result.choice['sample_size']} texts (batch size {args.batch_size}):")
        for c in result.choice["candidates"]:
            mark = "*" if c["name"] == result.strategy else " "
            print(
                f" {mark} {c['name']:<10} {c['verdict']:<10} min cos {c['min_cosine']:.6f} "
                f"{c['tokens_per_second']:>8.0f} tokens/s"
            )
    print(f"strategy: {result.strategy}, pooling: {args.pooling}")
    n, num_layers, width = result.shape
    if result.removed_partials:
        print(f"removed {len(result.removed_partials)} partial file(s) of the interrupted run")
    if result.resumed:
        print(f"resumed: {len(result.resumed)} of {result.num_shards} shards were finished and kept")
    print(
        f"wrote {len(result.written)} shard(s) to {result.folder}: hidden_states ({n}, {num_layers}, {width}) "
        f"{result.store_dtype} in {result.num_shards} shards, {describe_layers(result.layers)}, "
        f"{result.seconds:.1f} s on rank 0"
    )
    if result.verification is not None:
        print(f"verified {len(result.verification.rows)} texts one at a time: {result.verification.describe()}")
    else:
        print("not verified (--verify 0)")
    return 0
