"""A comparison as one self-contained HTML file, to share with people who will not run anything.

:func:`comparison_report_html` turns a :class:`~extraction.comparison.compare.ComparisonReport` into
one page: the run's settings (the pooling among them), one verdict card per strategy with
its cause, the notes (random weights, the pad token, texts cut to the context, tokens
capped), the per-layer figure, the predictions figure (``last`` pooling only: lm_head
agreement is not defined for a mean or every token, and the page says so), the batch
layout of the worst strategy with its pooled positions marked and a sentence per text,
the summary table, the texts, and the library versions. The figures are the package's own
(:mod:`extraction.plotting`); plotly.js is inlined once, in the page's head, and every
figure calls it, so the file opens offline with working charts and nothing is fetched.
Every text from the run (texts, causes, notes, model names, settings) is HTML-escaped;
plotly escapes what goes into its JSON.

About 4.9 MB for any run of a few texts: plotly.js alone is 4.8 MB (the figures' data
is a few kB per strategy).
"""

from __future__ import annotations

import html
import importlib.metadata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from .. import plotting
from ..plotting.style import VERDICT_COLORS, VERDICT_ICONS, VERDICT_TEXT_COLORS
from ..pooling import POOLING_SUMMARY
from ..storage.export import library_versions
from ..strategies import REFERENCE, STRATEGIES
from ..verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE, EXACT_COSINE
from . import layouts as layout_views
from . import predictions

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..comparison.compare import ComparisonReport
    from ..consistency import SelfCheckReport

#: Texts laid out in the layout picture (more make it unreadable).
LAYOUT_TEXTS = 3
#: Libraries whose versions the report lists, besides Python and those of
#: :func:`~extraction.storage.export.library_versions`.
_MORE_VERSIONED = ("plotly", "pandas")
#: The plotly figure options of the page (no logo; the download-as-PNG button works offline).
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1.5rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9rem; } td, th { border: 1px solid #ddd; padding: 0.3rem 0.6rem;
  text-align: left; vertical-align: top; } th { background: #f4f4f4; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 1rem; }
.card { border: 1px solid #ccc; border-radius: 0.5rem; padding: 0.8rem 1rem; }
.badge { padding: 0.15em 0.6em; border-radius: 0.4em; font-weight: 600; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 0.2em; margin-right: 0.35em; }
.numbers { display: flex; gap: 1.5rem; font-variant-numeric: tabular-nums; margin: 0.4rem 0; }
.numbers div div:first-child { font-size: 0.8rem; color: #555; } .numbers div div:last-child { font-size: 1.3rem; }
.note { background: #fff8e1; border-left: 4px solid #DDAA33; padding: 0.4rem 0.8rem; margin: 0.4rem 0; }
.muted { color: #555; font-size: 0.9rem; } code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _e(value: object) -> str:
    """``value`` as escaped HTML text."""
    return html.escape(str(value), quote=True)


def report_versions() -> dict[str, str]:
    """Python and the versions of the libraries a result depends on (``"not installed"`` when absent)."""
    from .. import __version__

    versions = {"padding-audit": __version__, **library_versions()}
    for name in _MORE_VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _table(rows: Sequence[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>" for key, value in rows)
    return f"<table>{body}</table>"


def _card(report: ComparisonReport, name: str) -> str:
    comparison = report.strategies[name]
    verdict = comparison.verdict
    badge = (
        f'<span class="badge" style="background:{VERDICT_COLORS[verdict]};color:{VERDICT_TEXT_COLORS[verdict]}">'
        f"{VERDICT_ICONS[verdict]} {_e(verdict)}</span>"
    )
    swatch = f'<span class="swatch" style="background:{plotting.strategy_color(name)}"></span>'
    summary = layout_views.strategy_summary(name, report.pooling) if name in STRATEGIES else ""
    cosine = "NaN" if comparison.min_cosine != comparison.min_cosine else f"{comparison.min_cosine:.6f}"
    top1 = comparison.top1_agreement
    top1_text = predictions.NOT_APPLICABLE if top1 is None else f"{top1:.0%}"
    return (
        f'<div class="card" data-strategy="{_e(name)}" data-verdict="{_e(verdict)}">'
        f"<div>{swatch}<code>{_e(name)}</code> &nbsp; {badge}</div>"
        f'<div class="muted">{_e(summary)}</div>'
        '<div class="numbers">'
        f"<div><div>min cosine</div><div>{cosine}</div></div>"
        f"<div><div>top-1 agreement</div><div>{top1_text}</div></div></div>"
        f'<div class="cause">{_e(comparison.cause)}</div></div>'
    )


def _figure(figure: go.Figure, figure_id: str) -> str:
    """The figure's div and the script drawing it; plotly.js itself is in the page's head."""
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=figure_id, config=_PLOTLY_CONFIG)


def _summary_table(report: ComparisonReport) -> str:
    frame = report.summary_frame().drop(columns=["cause"])
    header = "".join(f"<th>{_e(column)}</th>" for column in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = [
            f"{value:.6g}" if isinstance(value, float) else predictions.NOT_APPLICABLE if value is None else str(value)
            for value in record
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in cells) + "</tr>")
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _layout_section(report: ComparisonReport, token_strings: Sequence[Sequence[str]], pad_token_id: int) -> str:
    """The first forward pass of the worst strategy on a few texts of different lengths, and what each read saw."""
    name = layout_views.worst_strategy(report)
    chosen = layout_views.default_layout_texts(report.tokenized.lengths, LAYOUT_TEXTS)
    token_ids = [report.tokenized.token_ids[i] for i in chosen]
    passes = layout_views.plan_layouts(name, token_ids, pad_token_id, batch_size=len(chosen))
    group, layout = passes[0]
    texts = [chosen[k] for k in group]
    figure = plotting.batch_layout_figure(
        layout,
        token_strings,
        texts,
        title=f"{name}: forward pass 1 of {len(passes)} on texts {', '.join(str(i + 1) for i in texts)}",
        pooling=report.pooling,
    )
    sentences = layout_views.read_descriptions(layout, token_strings, texts, report.pooling)
    strategy = STRATEGIES.get(name)
    about = (
        f"<p><b>What it does.</b> {_e(layout_views.strategy_summary(name, report.pooling))} "
        f"<b>When it breaks.</b> {_e(strategy.breaks_when)}</p>"
        if strategy
        else ""
    )
    return (
        f"<h2>How the worst strategy lays out the texts: <code>{_e(name)}</code></h2>"
        f'<p class="muted">Rows are batch rows, columns positions; each text has its own colour, padding is white '
        f"(<code>pad</code>); the small number in a cell is the position id; "
        f"{_e(layout_views.POOLED_MARKS[report.pooling])}. Texts laid out together as one batch of {len(chosen)} "
        f"(the run used batch size "
        f"{report.batch_size}).</p>{about}"
        + _figure(figure, "figure-layout")
        + "<ul>"
        + "".join(f"<li>{_e(sentence)}</li>" for sentence in sentences)
        + "</ul>"
    )


def comparison_report_html(
    report: ComparisonReport,
    tokens: PreTrainedTokenizerBase | Sequence[Sequence[str]],
    pad_token_id: int | None = None,
    settings: Mapping[str, object] | None = None,
    title: str = "padding-audit report",
) -> str:
    """One self-contained HTML page of ``report`` (see the module docstring).

    The layout picture needs the texts' tokens: ``tokens`` is the run's tokenizer
    (``loaded.tokenizer``), or each text's tokens decoded one by one
    (:func:`extraction.views.predictions.token_strings`) with ``pad_token_id``, the pad token
    the run used (default: the tokenizer's). ``settings`` adds rows to the settings table
    (e.g. the texts' source, ``max_batch_tokens``, the run time).
    """
    if hasattr(tokens, "decode"):
        pad_token_id = tokens.pad_token_id if pad_token_id is None else pad_token_id
        token_strings = predictions.token_strings(tokens.decode, report.tokenized.token_ids)
    else:
        token_strings = [list(strings) for strings in tokens]
    if pad_token_id is None:
        raise ValueError("pad_token_id is needed when tokens are given as strings")
    if len(token_strings) != len(report.tokenized):
        raise ValueError(f"tokens cover {len(token_strings)} texts but the report has {len(report.tokenized)}")
    compared = [name for name in report.strategies if name != REFERENCE]
    run_settings: list[tuple[str, object]] = [
        ("model", report.model_description),
        ("dtype", report.dtype),
        ("attention implementation", report.attn_implementation),
        ("random weights", "yes" if report.is_random else "no"),
        ("absolute position embeddings", "yes" if report.uses_absolute_positions else "no"),
        ("texts", f"{len(report.tokenized)} ({sum(report.tokenized.lengths)} tokens)"),
        ("batch size", report.batch_size),
        ("pooling", f"{report.pooling}: {POOLING_SUMMARY[report.pooling]}"),
        ("strategies", ", ".join(report.strategies)),
        (
            "thresholds",
            f"exact: min cosine >= {EXACT_COSINE}"
            + (" and the same top-1 token" if predictions.has_lm_head(report) else "")
            + f"; drift: >= {DRIFT_COSINE}; corrupted: anything else, relative L2 above {CORRUPTED_RELATIVE_L2}, "
            "or NaN/inf",
        ),
        *(settings or {}).items(),
        ("created", datetime.now(UTC).isoformat(timespec="seconds")),
    ]
    notes = "".join(f'<div class="note">note: {_e(note)}</div>' for note in report.notes)
    sections = [
        f"<h1>{_e(title)}</h1>",
        '<p class="muted">Hidden states extracted in padded batches compared with single-sample extraction (one '
        f"text per forward pass, the ground truth): {_e(POOLING_SUMMARY[report.pooling])} at every layer "
        f"(pooling <code>{_e(report.pooling)}</code>), per padding strategy.</p>",
        "<h2>Settings</h2>",
        _table(run_settings),
        notes,
        "<h2>Verdicts</h2>",
        '<div class="cards">' + "".join(_card(report, name) for name in compared) + "</div>",
        "<h2>Summary</h2>",
        _summary_table(report),
    ]
    if compared:
        sections += [
            "<h2>Per layer</h2>",
            _figure(plotting.one_minus_cosine_figure(report, compared), "figure-layers"),
            "<h2>Predictions</h2>",
            _figure(plotting.top1_kl_figure(report, compared), "figure-predictions")
            if predictions.has_lm_head(report)
            else f'<p class="muted" id="predictions-not-applicable">Not drawn for pooling <code>'
            f"{_e(report.pooling)}</code>: {_e(predictions.LM_HEAD_ONLY_LAST)}</p>",
            _layout_section(report, token_strings, pad_token_id),
        ]
    texts = "".join(f"<li>{_e(text)}</li>" for text in report.texts)
    sections += [
        "<h2>Texts</h2>",
        f"<ol>{texts}</ol>",
        "<h2>Versions</h2>",
        _table(list(report_versions().items())),
    ]
    return _page(title, sections)


def _page(title: str, sections: Sequence[str], plotly: bool = True) -> str:
    script = f'<script type="text/javascript">{get_plotlyjs()}</script>' if plotly else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style>{script}</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


def self_check_report_html(
    report: SelfCheckReport,
    texts: Sequence[str],
    settings: Mapping[str, object] | None = None,
    title: str = "padding-audit check: a pipeline against itself",
) -> str:
    """One self-contained HTML page of a model-less check (:func:`extraction.consistency.self_check`):
    the verdict and cause, the noise floor, the probes, every checked text's distance, the calls
    made, the texts and the versions. Tables only (no figure, no script): a few kB."""
    verdict = report.verdict
    badge = (
        f'<span class="badge" style="background:{VERDICT_COLORS[verdict]};color:{VERDICT_TEXT_COLORS[verdict]}">'
        f"{VERDICT_ICONS[verdict]} {_e(verdict)}</span>"
    )
    run_settings: list[tuple[str, object]] = [
        ("function", report.states_source),
        ("returned", f"shape {tuple(report.states_shape)}, {report.states_dtype}"),
        ("pooling", f"{report.pooling}: {POOLING_SUMMARY[report.pooling]}"),
        ("texts", f"{report.n_texts}, {report.n_checked} checked one at a time"),
        (
            "thresholds",
            f"exact: min cosine >= {EXACT_COSINE} and within the noise floor; drift: >= {DRIFT_COSINE}; corrupted: "
            f"anything else, relative L2 above {CORRUPTED_RELATIVE_L2}, or NaN/inf",
        ),
        *(settings or {}).items(),
        ("created", datetime.now(UTC).isoformat(timespec="seconds")),
    ]
    probes = "".join(
        f"<tr><td><code>{_e(h.name)}</code></td><td>{_e(h.cause_kind)}</td><td>{_e(h.status)}</td>"
        f"<td>{_e(h.detail)}</td></tr>"
        for h in report.hypotheses
    )
    rows = "".join(
        f"<tr><td>{text + 1}</td><td>{cosine:.6f}</td><td>{relative:.3g}</td><td>{'yes' if bad else ''}</td></tr>"
        for text, cosine, relative, bad in zip(
            report.checked,
            report.per_row_min_cosine,
            report.per_row_max_relative_l2,
            report.check.corrupted.tolist(),
            strict=True,
        )
    )
    sections = [
        f"<h1>{_e(title)}</h1>",
        '<p class="muted">The function batched (all the texts in one call, as the pipeline runs) against the same '
        "function on one text at a time (the ground truth); no model is involved.</p>",
        f'<div class="card" data-verdict="{_e(verdict)}"><div>{badge} &nbsp; likely cause '
        f"<code>{_e(report.likely_cause or '-')}</code> (cause kind <code>{_e(report.cause_kind)}</code>)</div>"
        f'<div class="cause">{_e(report.cause)}</div></div>',
        "<h2>Settings</h2>",
        _table(run_settings),
        "".join(f'<div class="note">note: {_e(note)}</div>' for note in report.notes),
        "<h2>Probes</h2>",
        f"<table><tr><th>probe</th><th>cause kind</th><th>status</th><th>evidence</th></tr>{probes}</table>"
        if probes
        else '<p class="muted">None run.</p>',
        "<h2>Texts checked</h2>",
        "<table><tr><th>text</th><th>min cosine</th><th>max relative L2</th><th>corrupted</th></tr>"
        + rows
        + "</table>",
        "<h2>Calls of the function</h2>",
        "<ol>" + "".join(f"<li>{_e(call)}</li>" for call in report.calls) + "</ol>",
        "<h2>Texts</h2>",
        "<ol>" + "".join(f"<li>{_e(text)}</li>" for text in texts) + "</ol>",
        "<h2>Versions</h2>",
        _table(list(report_versions().items())),
    ]
    return _page(title, sections, plotly=False)


__all__ = ["LAYOUT_TEXTS", "comparison_report_html", "report_versions", "self_check_report_html"]
