"""``audit``: check stored hidden states against single-sample extraction, and find the defect."""

from __future__ import annotations

import argparse

from ..cli import (
    CliError,
    add_lm_head_argument,
    add_model_arguments,
    load_model_from_args,
    progress_bar,
    texts_for_model,
)
from ..storage.atomic import write_json_atomic
from ..verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE, EXACT_COSINE

ORDER = 10

EXIT_NOT_EXACT = 1


def add_parser(subparsers) -> None:
    from ..audit import FORENSIC_ROWS
    from ..audit.reference import REFERENCE_CHOICES
    from ..pooling import POOLING_SUMMARY, POOLINGS

    parser = subparsers.add_parser(
        "audit", help="check stored hidden states against single-sample extraction and name the likely defect"
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--texts",
        help="the texts, in row order: .txt, .jsonl (text or chat messages field), .csv; optional for a store "
        "that keeps its token ids (input_ids / token_ids) or a text column (then compared with them)",
    )
    parser.add_argument(
        "--states",
        required=True,
        help="stored states: .safetensors, .npy, .npz, .pt (loaded with weights_only), a folder of shards, "
        "a vLLM extract_hidden_states folder, .parquet or a datasets save_to_disk folder; only the sampled "
        "rows are read (except from .npz)",
    )
    parser.add_argument("--key", help="the tensor to read in a file that holds several")
    parser.add_argument(
        "--states-column", help="Parquet / datasets: the column of states (default: the only float-list column)"
    )
    parser.add_argument(
        "--text-column",
        help="Parquet / datasets: the column of texts or of token ids (default: input_ids / token_ids, and the "
        "only string column)",
    )
    parser.add_argument(
        "--layer", type=int, help="hidden_states index of an (N, d) file (default the last; negative from the end)"
    )
    parser.add_argument(
        "--layers", help="hidden_states indices of an (N, L, d) file, comma-separated (default all, or its metadata)"
    )
    parser.add_argument(
        "--pooling",
        choices=list(POOLINGS),
        help="how the file pooled each text's states (default: the file's metadata 'pooling', else last); "
        + "; ".join(f"{name}: {summary}" for name, summary in POOLING_SUMMARY.items())
        + ". A tokens file holds (R, L, d) rows and an 'offsets' tensor (N + 1)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        help="re-extract at most this many random texts (default all; uniform, seeded, stratified by shard for "
        "a folder); with --max-corrupted, the size of the first round (default 64)",
    )
    parser.add_argument(
        "--max-corrupted",
        type=float,
        help="sample in rounds until the 95%% upper bound on the store's corrupted fraction is below this "
        "(e.g. 0.005), or a corrupted row is found",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    parser.add_argument(
        "--forensic-rows", type=int, default=FORENSIC_ROWS, help="worst rows used to test each hypothesis"
    )
    parser.add_argument("--no-forensics", action="store_true", help="skip the search for the cause")
    parser.add_argument(
        "--reference",
        choices=list(REFERENCE_CHOICES),
        default="auto",
        help="the layout that makes the fresh rows: auto (default), the batched layout extract --strategy auto "
        "verified exact against single on this model (else single); single, one text a pass (bit-for-bit "
        "agreement with single-sample extraction is then the question)",
    )
    add_lm_head_argument(parser, "the lm_head top-1 checks on the stored rows")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 unless the verdict is exact")
    parser.add_argument("--json", dest="json_out", help="write the report as JSON to this file")
    parser.set_defaults(run=run)


def format_report(report) -> str:
    """The readable summary ``audit`` prints."""
    from ..storage.export import describe_layers

    layer_text = describe_layers(report.layers)
    lines = [
        f"model: {report.model_description}",
        f"states: {report.states_source}, shape {tuple(report.states_shape)} {report.states_dtype}, {layer_text}",
        f"{report.n_texts} texts, {report.n_checked} re-extracted with {report.reference.describe()}, "
        f"pooling {report.pooling}",
    ]
    if report.stored_ids is not None:
        lines.append(f"token ids: {report.stored_ids.describe()}")
    lines += [f"note: {note}" for note in report.notes]
    lines += [
        "",
        f"verdict: {report.verdict}   (exact: min cosine >= {EXACT_COSINE} and same top-1; drift: >= {DRIFT_COSINE}; "
        f"either way relative L2 <= {CORRUPTED_RELATIVE_L2})",
        f"likely cause: {report.likely_cause or '-'} (cause kind {report.cause_kind})",
        f"  {report.cause}",
        f"min cosine {report.min_cosine:.6f}, mean cosine {report.mean_cosine:.6f}; "
        f"max relative L2 {report.max_relative_l2:.3g}, median {report.median_relative_l2:.3g}; "
        f"rows corrupted: {100 * report.fraction_corrupted:.0f}%",
        f"store: {report.describe_interval()}",
    ]
    if report.sample.max_corrupted is not None:
        shown = "shown" if report.bound_shown else "not shown"
        lines.append(
            f"  asked: at most {100 * report.sample.max_corrupted:.3g}% corrupted: {shown} "
            f"({report.sample.rounds} round(s), {report.n_checked} rows checked)"
        )
    if report.lm_head_accuracy_stored is None:
        lines.append(report.lm_head_note)
    else:
        lines.append(
            f"lm_head top-1 = the model's own prediction: stored {100 * report.lm_head_accuracy_stored:.0f}%, "
            f"fresh {100 * report.lm_head_accuracy_fresh:.0f}%  ({report.lm_head_note})"
        )
    if report.differences is not None and report.verdict != "exact":
        lines.append(f"rows: {report.differences.describe()}")
    if report.hypotheses:
        lines += ["", f"{'hypothesis':<15} {'status':<15} {'repro cos':>10} {'fresh cos':>10} {'rows':>5}  evidence"]
        for h in report.hypotheses:
            repro = f"{h.reproduction_cosine:.6f}" if h.reproduction_cosine is not None else "-"
            fresh = f"{h.fresh_cosine:.6f}" if h.fresh_cosine is not None else "-"
            rows = f"{len(h.rows_reproduced)}/{len(h.rows_tested)}"
            lines.append(f"{h.name:<15} {h.status:<15} {repro:>10} {fresh:>10} {rows:>5}  {h.detail}")
    return "\n".join(lines)


def _streamed_texts(args: argparse.Namespace):
    """A :class:`~extraction.storage.text_stream.TextSource` for a plain ``.txt``/``.jsonl`` texts file
    (read as a stream: only the sampled texts are kept), None where the texts need the chat template
    (``--chat-template``, or a ``.jsonl`` whose first line holds ``messages``) or are read whole anyway."""
    import json
    from pathlib import Path

    from ..storage.text_stream import TextSource
    from ..texts import TextsError

    if args.texts is None:
        return None
    path = Path(args.texts)
    if getattr(args, "chat_template", False) or getattr(args, "generation_prompt", False) or not path.is_file():
        return None
    if path.suffix.lower() == ".jsonl":
        with path.open("rb") as handle:
            first = next((line for line in handle if line.strip()), b"")
        try:
            if "messages" in json.loads(first.decode("utf-8", "replace")):
                return None
        except (json.JSONDecodeError, TypeError):
            return None  # read whole: read_texts gives the error in words
    try:
        source = TextSource(path)
    except TextsError:
        return None
    return source if source.streamed else None


def _progress_bars():
    """``(progress, close)``: an audit's ``progress(stage, done, total)`` shown as one bar on stderr at
    a time (a new stage closes the last bar; the texts scan counts bytes; a sampling round names itself
    in the bars that follow), and the function that closes the last one."""
    import sys

    from tqdm import tqdm

    from ..audit.inputs import READING_TEXTS
    from ..audit.report import SAMPLING_ROUND

    state: dict[str, object] = {"bar": None, "stage": None, "round": ""}

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()
        state["bar"] = state["stage"] = None

    def progress(stage: str, done: int, total: int) -> None:
        if stage == SAMPLING_ROUND:
            close()
            state["round"] = f" (round {done} of at most {total})"
            return
        if stage != state["stage"]:
            close()
            if stage == READING_TEXTS:
                state["bar"] = tqdm(
                    total=total, desc=stage, unit="B", unit_scale=True, file=sys.stderr, disable=None, leave=False
                )
            else:
                state["bar"] = progress_bar(stage + state["round"], total)
            state["stage"] = stage
        state["bar"].n = done
        state["bar"].refresh()

    return progress, close


def run(args: argparse.Namespace) -> int:
    from ..audit import audit_states
    from ..storage.export import parse_layers
    from ..storage.lazy_states import open_states
    from ..texts import read_text_items

    if args.sample is not None and args.sample < 1:
        raise CliError(f"--sample must be at least 1, got {args.sample}")
    if args.max_corrupted is not None and not 0 < args.max_corrupted < 1:
        raise CliError(f"--max-corrupted must be a fraction between 0 and 1 (e.g. 0.005), got {args.max_corrupted}")
    if args.forensic_rows < 1:
        raise CliError(f"--forensic-rows must be at least 1, got {args.forensic_rows}")
    if args.layer is not None and args.layers:
        raise CliError("give --layer (an (N, d) file) or --layers (an (N, L, d) file), not both")
    if args.key and args.states_column:
        raise CliError("give --key (a tensor) or --states-column (a column), not both")
    streamed = _streamed_texts(args)
    items = None if streamed is not None or args.texts is None else read_text_items(args.texts)
    states = open_states(args.states, key=args.key or args.states_column, text_column=args.text_column)
    if args.texts is None and states.token_ids is None and states.texts is None:
        raise CliError(
            f"{args.states} keeps no token ids (input_ids / token_ids) nor a text column: give --texts, "
            "the texts its rows were extracted from, in row order"
        )
    loaded = load_model_from_args(args)
    if streamed is not None:
        texts = streamed
    elif items is not None:
        texts = texts_for_model(items, loaded, args)
    else:
        texts = None  # the store's own ids or texts
    layers = parse_layers(args.layers, loaded.num_hidden_layers + 1) if args.layers else None
    progress, close_bars = _progress_bars()
    try:
        report = audit_states(
            loaded,
            texts,
            states,
            layer=args.layer,
            layers=layers,
            sample=args.sample,
            seed=args.seed,
            forensics=not args.no_forensics,
            forensic_rows=args.forensic_rows,
            progress=progress,
            pooling=args.pooling,
            reference=args.reference,
            max_corrupted=args.max_corrupted,
            lm_head=args.lm_head,
        )
    finally:
        close_bars()
    print(format_report(report))
    if args.json_out:
        write_json_atomic(args.json_out, report.to_dict())
        print(f"wrote {args.json_out}")
    return EXIT_NOT_EXACT if args.strict and report.verdict != "exact" else 0
