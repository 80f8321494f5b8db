"""Child process: the ``extract`` command's work on a texts file, with memory marks.

``python -m bench.children.extract extract --model M --texts FILE --out OUT.safetensors
--strategy S --batch-size B --verify 0`` takes the arguments of ``python -m extraction``
and parses them with its parser (so the process imports what the command's does, and
every default is the command's), then does the command's work through the same calls in
the same order: :func:`~extraction.texts.read_texts`,
:func:`~extraction.cli.load_model_from_args`, :func:`~extraction.texts.tokenize_texts`,
:func:`~extraction.storage.export.extract_to_file`. Only its argument checks, progress bars and
summary lines are left out. The memory is marked once the model is loaded
(:mod:`bench.children.marks`); the marks are the last line of stdout. A bad model or file
is one ``error:`` line on stderr and exit 2, as from the command.
"""

from __future__ import annotations

import logging
import sys

from bench.children.marks import mark_loaded, print_marks


def extract(argv: list[str] | None, marks: dict) -> int:
    """The command's work on ``argv``, marking ``marks`` once the model is loaded; returns
    the exit status."""
    from extraction.cli import build_parser, load_model_from_args
    from extraction.commands._extract_options import extract_options
    from extraction.storage.export import extract_to_file
    from extraction.texts import read_texts, tokenize_texts

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "extract":
        parser.error(f"this child runs the extract command only, not {args.command!r}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        texts = read_texts(args.texts)
        loaded = load_model_from_args(args)
        mark_loaded(marks)
        tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
        extract_to_file(loaded, tokenized, args.out, **extract_options(args))
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    marks: dict = {}
    code = extract(argv, marks)
    # Read the peak once the work has returned and released its memory, as the child did
    # when it wrapped the command: read while the memory is still held, VmHWM came out
    # ~170 KiB above the ru_maxrss that wait4 gives for the same process (the kernel
    # brings its high-water mark up to date lazily).
    print_marks(marks)
    return code


if __name__ == "__main__":
    sys.exit(main())
