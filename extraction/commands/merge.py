"""``merge``: a folder of shards written by ``extract --out DIR`` into one ``.safetensors`` file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import CliError

ORDER = 12


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "merge", help="merge a folder of shards (extract --out DIR) into one .safetensors file"
    )
    parser.add_argument("folder", help="the folder extract wrote (index.json and shard-*.safetensors)")
    parser.add_argument("out", help="the .safetensors file to write (tensor 'hidden_states', (N, L, d))")
    parser.add_argument("--force", action="store_true", help="replace the output file if it exists")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..storage.shards import merge_shards, read_index

    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        raise CliError(f"{folder}: not a folder")
    if out.suffix != ".safetensors":
        raise CliError(f"{out}: the merged output must end in .safetensors")
    if out.exists() and not args.force:
        raise CliError(f"{out} already exists; pass --force to replace it")
    merge_shards(folder, out, overwrite=args.force)
    index = read_index(folder)
    n, num_layers, width = index["shape"]
    print(
        f"wrote {out}: hidden_states ({n}, {num_layers}, {width}) {index['metadata'].get('stored_dtype', 'float32')} "
        f"from {index['num_shards']} shards"
    )
    return 0
