"""The options of ``extract``, from its parsed arguments, in one mapping: read by the command,
its sharded run (:mod:`._sharded`) and the benchmark's child process. Not a command (the leading
underscore keeps it out of discovery); below both modules that use it."""

from __future__ import annotations

import argparse


def extract_options(args: argparse.Namespace) -> dict:
    """The options :func:`~extraction.storage.export.extract_to_file` and
    :func:`~extraction.storage.sharded_export.extract_to_folder` both take, from this command's
    arguments: one mapping for the command, its sharded run and the benchmark's child process."""
    return {
        "layers": args.layers,
        "strategy": args.strategy,
        "batch_size": args.batch_size,
        "store_dtype": args.store_dtype,
        "verify": args.verify,
        "verify_lm_head": args.lm_head,
        "overwrite": args.force,
        "seed": args.seed,
        "auto_sample": args.auto_sample,
        "pooling": args.pooling,
    }
