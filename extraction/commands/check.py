"""``check``: your own extraction function, batched against itself one text at a time, with no model,
or against single-sample extraction of ``--model``.

``padding-audit check FILE.py:FUNCTION --texts T`` imports ``FILE.py`` (your code, run here as
``python FILE.py`` would run it) and checks ``FUNCTION(texts)`` with
:func:`extraction.consistency.self_check`; it prints the same report as ``audit``. With
``--python PATH`` the function runs in that interpreter instead, in one child process for the
whole check (:mod:`extraction.consistency.remote`), so a pipeline pinned to other packages (an
older transformers) is checked from its own environment; ``--model`` checks its rows against
this package's single-sample extraction of that model (:func:`extraction.check_extractor`).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ..cli import CliError, add_pooling_argument, check_output_path, stage_progress_bars
from ..storage.atomic import write_bytes_atomic, write_json_atomic

ORDER = 12

EXIT_NOT_EXACT = 1


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check your own extraction function against itself one text at a time (no model needed)",
        description="Import FILE.py and check FUNCTION: FUNCTION(texts) as your pipeline runs it, against "
        "FUNCTION([text]) for each text, with the function's own noise floor and the cause from its behaviour "
        "(with --model: against single-sample extraction of that model). "
        "This imports and runs YOUR OWN CODE on this machine, as 'python FILE.py' would: check only files you trust. "
        "With --python PATH it runs your code with YOUR INTERPRETER (PATH, e.g. the venv your pipeline is pinned "
        "in), in one child process that needs only your packages, torch and numpy.",
    )
    parser.add_argument(
        "target",
        metavar="FILE.py:FUNCTION",
        help="your file and the function in it: FUNCTION(list of str) returns (N, d) or (N, L, d) states "
        "(pooling tokens: (rows, offsets)); the file is imported (its top-level code runs)",
    )
    parser.add_argument("--texts", required=True, help="the texts, at least 2: .txt, .jsonl (text field), .csv")
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="run FUNCTION with this interpreter (your pipeline's environment) in a child process: it runs your "
        "code with your interpreter; texts go in and rows come back through .npy files in a temporary folder",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="with --python: seconds the import and each call may take before the child is killed (default 600)",
    )
    parser.add_argument(
        "--model",
        help="check against single-sample extraction of this model (a preset, a folder, a .gguf) instead of the "
        "function against itself; the function must return that model's hidden states",
    )
    add_pooling_argument(parser)
    parser.add_argument(
        "--layers", help="label the layers of an (N, L, d) return with these hidden_states indices, comma-separated"
    )
    parser.add_argument(
        "--tokenizer", help="a local tokenizer folder (save_pretrained): orders texts by tokens and names pad reads"
    )
    parser.add_argument("--sample", type=int, help="check at most this many random texts one at a time (default all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    parser.add_argument("--no-probes", action="store_true", help="skip the calls that find the cause")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 unless the verdict is exact")
    parser.add_argument("--json", dest="json_out", help="write the report as JSON to this file")
    parser.add_argument("--html", dest="html_out", help="write the report as one self-contained HTML page")
    parser.set_defaults(run=run)


def load_function(target: str):
    """``FILE.py:FUNCTION`` -> the function, importing the file (its folder first on ``sys.path``,
    so its own imports resolve); a :class:`CliError` naming what is wrong."""
    file_part, sep, name = target.rpartition(":")
    if not sep or not file_part or not name:
        raise CliError(f"{target}: expected FILE.py:FUNCTION, e.g. my_pipeline.py:extract")
    path = Path(file_part).expanduser()
    if path.suffix != ".py":
        raise CliError(f"{path}: not a .py file")
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"padding_audit_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - the user's code: one line (--debug shows the traceback)
        raise CliError(f"importing {path} raised {type(error).__name__}: {error}") from error
    function = getattr(module, name, None)
    if function is None:
        found = sorted(key for key, value in vars(module).items() if callable(value) and not key.startswith("_"))
        raise CliError(f"{path} has no {name!r}; its functions: {', '.join(found) or 'none'}")
    if not callable(function):
        raise CliError(f"{path}: {name} is a {type(function).__name__}, not a function")
    return function


def run(args: argparse.Namespace) -> int:
    from ..texts import read_texts
    from .audit import format_report

    if args.sample is not None and args.sample < 1:
        raise CliError(f"--sample must be at least 1, got {args.sample}")
    if args.timeout <= 0:
        raise CliError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    if args.model and (args.tokenizer or args.html_out):
        raise CliError("--tokenizer and --html are for the check without --model (a model brings its own tokenizer)")
    for path, option in ((args.json_out, "--json"), (args.html_out, "--html")):
        if path:
            check_output_path(path, option)
    texts = read_texts(args.texts)
    layers = [int(part) for part in args.layers.split(",")] if args.layers else None
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        except Exception as error:  # noqa: BLE001 - one line, whatever transformers raised
            raise CliError(f"--tokenizer {args.tokenizer}: cannot load it ({type(error).__name__})") from error
    report = _checked(args, texts, layers, tokenizer)
    print(format_report(report))
    if args.json_out:
        write_json_atomic(args.json_out, report.to_dict())
        print(f"wrote {args.json_out}")
    if args.html_out:
        from ..views.report_html import self_check_report_html

        write_bytes_atomic(args.html_out, self_check_report_html(report, texts, {"file": args.target}).encode())
        print(f"wrote {args.html_out}")
    return EXIT_NOT_EXACT if args.strict and report.verdict != "exact" else 0


def _checked(args: argparse.Namespace, texts: list[str], layers: list[int] | None, tokenizer):
    """The report: the function here or in ``--python``'s child, against itself or ``--model``."""
    from ..check_extractor import check_extractor
    from ..consistency.remote import ChildFunction, parse_target

    if args.python:
        try:
            parse_target(args.target)
        except ValueError as error:
            raise CliError(str(error)) from None
        function = ChildFunction(args.python, args.target, timeout=args.timeout)
    else:
        function = load_function(args.target)
    model = None
    if args.model:
        from ..models import load_model

        model = load_model(args.model)
    stages = {"re-extracting": "texts alone", "forensics": "probes"}
    with stage_progress_bars(stages) as progress:
        if args.python:
            function.start()
        try:
            return check_extractor(
                function, model, texts, pooling=args.pooling, layers=layers, tokenizer=tokenizer,
                sample=args.sample, seed=args.seed, forensics=not args.no_probes, progress=progress,
            )  # fmt: skip
        finally:
            if args.python:
                function.close()
