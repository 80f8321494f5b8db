"""``matrix``: every padding strategy on every causal-LM architecture transformers registers."""

from __future__ import annotations

import argparse
import shlex

from ..cli import CliError, check_output_path
from ..storage.atomic import write_bytes_atomic, write_json_atomic

ORDER = 60


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "matrix",
        help="the conformance matrix: every strategy on a tiny random model of every causal-LM architecture",
        description="Build tiny-random:<model_type> for every causal-LM type transformers registers (or those "
        "given), compare every strategy with single-sample extraction under last and mean pooling, and print the "
        "verdict grid. The full matrix takes minutes.",
    )
    parser.add_argument(
        "--architectures",
        default="all",
        help="comma-separated model types (e.g. gpt2,llama,mamba), or all (default)",
    )
    parser.add_argument(
        "--json",
        dest="json_out",
        help="write the matrix as JSON (its keys: the extraction.conformance.matrix docstring)",
    )
    parser.add_argument("--markdown", dest="markdown_out", help="write the matrix as a Markdown document")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import progress_bar
    from ..conformance.matrix import parse_architectures, run_matrix
    from ..conformance.report import matrix_markdown, matrix_table

    names = parse_architectures(args.architectures)
    outputs = [(option, out) for option, out in (("--json", args.json_out), ("--markdown", args.markdown_out)) if out]
    for option, out in outputs:
        check_output_path(out, option)
    if len(outputs) == 2 and args.json_out == args.markdown_out:
        raise CliError("--json and --markdown name the same file; give two file names")
    bar = progress_bar("matrix", len(names))
    bar.unit = "architecture"

    def progress(model_type: str, done: int, total: int) -> None:
        bar.set_postfix_str(model_type)
        bar.n = done
        bar.refresh()

    try:
        matrix = run_matrix(names, progress=progress)
    finally:
        bar.close()
    print(matrix_table(matrix))
    print(f"{len(matrix.measured)} of {len(matrix.rows)} architectures measured in {matrix.seconds:.0f} s")
    if args.json_out:
        write_json_atomic(args.json_out, matrix.to_dict())
        print(f"wrote {args.json_out}")
    if args.markdown_out:
        options = [] if args.architectures == "all" else ["--architectures", args.architectures]
        for option, out in outputs:
            options += [option, out]
        command = shlex.join(["python", "-m", "extraction", "matrix", *options])
        write_bytes_atomic(args.markdown_out, matrix_markdown(matrix, command).encode())
        print(f"wrote {args.markdown_out}")
    return 0
