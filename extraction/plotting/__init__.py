"""Plotly figures of the package's results (no UI code here), one module per kind of result.

Every builder takes results and returns a ``plotly.graph_objects.Figure`` with a title,
axis labels and units, so the dashboard only renders what the package draws, and the
same figures can be saved from scripts (:func:`figure_html`). Import the package and call
through it: ``from extraction import plotting; plotting.one_minus_cosine_figure(report)``.

* :mod:`.style`: strategy and verdict colours, log floors, labels, the shared finish;
* :mod:`.comparison`: per-layer cosine and relative L2, heatmap, top-1/KL, logit lens;
* :mod:`.layouts`: batch layout and attention pictures (computed in :mod:`extraction.views.layouts`);
* :mod:`.probe`: probe accuracy, validation vs inference (one layer, or a sweep's layer with error
  bars), the gap across layers with its band, and the probe tables' column labels;
* :mod:`.audit`: the audit histogram of a stored dataset, a picture of the defect found (the tokens fed
  to the model: added, dropped, cut, pads; or where each text's state was stored), and the audit tables'
  column labels.
"""

from __future__ import annotations

from .audit import (
    AUDIT_COSINE_EDGES,
    HYPOTHESES_TABLE_COLUMNS,
    PER_TEXT_TABLE_COLUMNS,
    audit_cosine_histogram,
    defect_figure,
    defect_tokens,
)
from .comparison import (
    cosine_by_layer_figure,
    cosine_heatmap_figure,
    logit_lens_figure,
    one_minus_cosine_figure,
    relative_l2_figure,
    top1_kl_figure,
)
from .conformance import SKIPPED_COLOR, conformance_grid_figure, measured_architectures
from .layouts import ATTENTION_CATEGORIES, MAX_LABELLED_COLUMNS, attention_figure, batch_layout_figure
from .probe import (
    PROBE_LM_HEAD_COLOR,
    PROBE_SAME_COLOR,
    PROBE_SINGLE_COLOR,
    PROBE_TABLE_COLUMNS,
    probe_accuracy_figure,
    probe_layer_figure,
    probe_sweep_figure,
)
from .style import (
    COSINE_LOG_FLOOR,
    LOG_FLOOR,
    STRATEGY_COLORS,
    VERDICT_COLORS,
    VERDICT_ICONS,
    VERDICT_TEXT_COLORS,
    figure_html,
    strategy_color,
    strategy_dash,
    text_label,
    verdict_color,
)

__all__ = [
    "ATTENTION_CATEGORIES",
    "AUDIT_COSINE_EDGES",
    "COSINE_LOG_FLOOR",
    "HYPOTHESES_TABLE_COLUMNS",
    "LOG_FLOOR",
    "MAX_LABELLED_COLUMNS",
    "PER_TEXT_TABLE_COLUMNS",
    "PROBE_LM_HEAD_COLOR",
    "PROBE_SAME_COLOR",
    "PROBE_SINGLE_COLOR",
    "PROBE_TABLE_COLUMNS",
    "SKIPPED_COLOR",
    "STRATEGY_COLORS",
    "VERDICT_COLORS",
    "VERDICT_ICONS",
    "VERDICT_TEXT_COLORS",
    "attention_figure",
    "conformance_grid_figure",
    "audit_cosine_histogram",
    "defect_figure",
    "defect_tokens",
    "batch_layout_figure",
    "cosine_by_layer_figure",
    "cosine_heatmap_figure",
    "figure_html",
    "logit_lens_figure",
    "measured_architectures",
    "one_minus_cosine_figure",
    "probe_accuracy_figure",
    "probe_layer_figure",
    "probe_sweep_figure",
    "relative_l2_figure",
    "strategy_color",
    "strategy_dash",
    "text_label",
    "top1_kl_figure",
    "verdict_color",
]
