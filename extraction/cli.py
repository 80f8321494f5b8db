"""Command line: ``python -m extraction <command> ...``.

Each command is one module in :mod:`extraction.commands` defining
``add_parser(subparsers)``, which declares its arguments and sets ``run`` to a
function taking the parsed arguments and returning an exit code; modules there are
discovered, so adding a command touches no other file. This module holds what the
commands share. User mistakes (bad files, unknown models or strategies) end in one
line on stderr and exit code 2, never a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
#: The console script the installed package provides (pyproject.toml ``[project.scripts]``).
CONSOLE_SCRIPT = "padding-audit"


class CliError(Exception):
    """A failure to report as one line with a given exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def check_output_path(path: str | Path, option: str = "--json") -> None:
    """Refuse, before any work is done, an output path that cannot be written: an existing
    folder, or a folder part that is a file."""
    path = Path(path)
    if path.is_dir():
        raise CliError(f"{option} {path}: is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CliError(f"{option} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise CliError(f"{option} {path}: cannot write in {parent}")
            break


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --dtype, --device, --attn, --trust-remote-code, --chat-template, --generation-prompt: shared
    by every command."""
    from .models import ATTN_IMPLEMENTATIONS, DEFAULT_MODEL, DTYPES

    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"preset name, tiny-random:<model_type> (any causal-LM architecture, random weights), Hugging Face "
        f"id, local folder or .gguf file (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    parser.add_argument("--attn", default="sdpa", choices=ATTN_IMPLEMENTATIONS, help="attention implementation")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow models that run their own Python code (off by default)"
    )
    parser.add_argument(
        "--chat-template",
        action="store_true",
        help="format each plain text as one user turn with the model's chat template "
        "(a .jsonl line with chat 'messages' is always formatted with it)",
    )
    parser.add_argument(
        "--generation-prompt",
        action="store_true",
        help="end each chat-formatted text in the assistant's header (add_generation_prompt=True), as texts "
        "made for generation are; needs --chat-template or chat 'messages'",
    )


def add_pooling_argument(parser: argparse.ArgumentParser, choices: Sequence[str] | None = None) -> None:
    """--pooling: which states a text gives (:mod:`extraction.pooling`); ``choices`` narrows them."""
    from .pooling import DEFAULT_POOLING, POOLING_SUMMARY, POOLINGS

    choices = list(choices or POOLINGS)
    parser.add_argument(
        "--pooling",
        default=DEFAULT_POOLING,
        choices=choices,
        help="; ".join(f"{name}: {POOLING_SUMMARY[name]}" for name in choices) + f" (default {DEFAULT_POOLING})",
    )


def add_lm_head_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--lm-head/--no-lm-head (``args.lm_head``: True, False or None): run ``what`` (an lm_head
    check, which needs the whole pass); by default only when the last layer is among those asked
    (:func:`extraction.extract.wants_lm_head`), else the pass stops after the deepest one."""
    parser.add_argument(
        "--lm-head",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"run {what} (the whole forward pass); default: only when the last layer is among those asked, "
        "else each pass stops after the deepest layer asked and the output says 'lm_head not run'",
    )


def load_model_from_args(args: argparse.Namespace):
    from .models import load_model

    return load_model(
        args.model,
        dtype=args.dtype,
        device=args.device,
        attn_implementation=args.attn,
        trust_remote_code=args.trust_remote_code,
        device_map=getattr(args, "device_map", None),
    )


def texts_for_model(items, loaded, args: argparse.Namespace) -> list[str]:
    """The texts a command tokenizes: ``items`` (from :func:`~extraction.texts.read_text_items`)
    with chat conversations, and with ``--chat-template`` every plain text, rendered with the
    model's chat template (:func:`~extraction.chat.format_texts`)."""
    from .chat import format_texts

    return format_texts(
        items,
        loaded.tokenizer,
        getattr(args, "chat_template", False),
        loaded.name,
        getattr(args, "generation_prompt", False),
    )


def progress_bar(desc: str, total: int):
    """A tqdm bar on stderr (silent when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, disable=None, leave=False)


@contextlib.contextmanager
def strategy_progress_bars():
    """A progress callback ``(name, number, count, done, total)`` showing one bar per
    strategy in turn on stderr; every bar is closed on leaving the block."""
    bars: dict[str, object] = {}

    def progress(name: str, number: int, count: int, done: int, total: int) -> None:
        if name not in bars:
            for bar in bars.values():
                bar.close()
            bars[name] = progress_bar(f"[{number}/{count}] {name}", total)
        bars[name].n = done
        bars[name].refresh()

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()


@contextlib.contextmanager
def stage_progress_bars(labels: dict[str, str], shown: bool = True):
    """A progress callback ``(stage, done, total)`` for ``extract``: one bar a stage on stderr
    (the previous one closed; none when ``shown`` is False, as on ranks other than 0), every
    bar closed on leaving the block; a failed verification leaves as a :class:`CliError` with
    exit code 1, an existing output without ``--force`` as a usage error."""
    from .storage.export import VerificationError

    bars: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if not shown:
            return
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            bars[stage] = progress_bar(labels.get(stage, stage), total)
            if stage == "choosing":
                bars[stage].unit = "layout"
        bars[stage].n = done
        bars[stage].refresh()

    try:
        yield progress
    except VerificationError as error:
        raise CliError(str(error), EXIT_FAILURE) from None
    except FileExistsError as error:
        raise CliError(str(error)) from None
    finally:
        for bar in bars.values():
            bar.close()


# --- entry point -----------------------------------------------------------------------


def command_modules() -> list:
    """The modules of :mod:`extraction.commands`, ordered by their ``ORDER`` then name."""
    from . import commands

    modules = [
        importlib.import_module(f"{commands.__name__}.{info.name}")
        for info in pkgutil.iter_modules(commands.__path__)
        if not info.name.startswith("_")
    ]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    # Installed, the same CLI is the console script ``padding-audit``.
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    parser = argparse.ArgumentParser(
        prog=CONSOLE_SCRIPT if invoked == CONSOLE_SCRIPT else "python -m extraction",
        description="Check hidden states extracted in padded batches against single-sample extraction.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in command_modules():
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # huggingface_hub logs every retry of an unreachable hub; the error line says it all.
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted: no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CliError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "code", EXIT_USAGE)
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if args.debug:
            raise
        print(f"error: unexpected {type(error).__name__}: {error} (rerun with --debug for details)", file=sys.stderr)
        return EXIT_FAILURE
