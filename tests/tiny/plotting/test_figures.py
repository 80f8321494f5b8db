"""The plotly figures of extraction.plotting (and what the layout pictures and top-k table
compute, in extraction.views.layouts and extraction.views.predictions): data drawn, colours, labels and layouts.

The report comes from the tiny random GPT-2 (seconds, module-scoped, read-only); layout
pictures use hand-made token ids and need no model.
"""

from __future__ import annotations

import pytest
import torch

from extraction import plotting
from extraction.comparison.compare import VERDICTS, compare_strategies
from extraction.plotting import layouts
from extraction.strategies import STRATEGIES, get_strategy
from extraction.views import layouts as layout_views
from extraction.views import predictions

TEXTS = ["The capital of France is", "Hello", "Once upon a time, in a small village by the sea, there", "2 + 2 ="]
COMPARED = ["right-naive", "right", "packed-naive", "packed"]


@pytest.fixture(scope="module")
def report(tiny_gpt2):
    loaded = tiny_gpt2
    return compare_strategies(loaded, TEXTS, COMPARED, batch_size=4)


def _traces_named(figure, name):
    return [trace for trace in figure.data if trace.name == name]


# --- colours ----------------------------------------------------------------------------------


def test_every_strategy_has_its_own_stable_colour():
    colours = [plotting.strategy_color(name) for name in STRATEGIES]
    assert len(set(colours)) == len(colours)
    assert plotting.strategy_color("right") == plotting.STRATEGY_COLORS["right"]
    # A strategy registered later still gets a colour, the same one every time.
    assert plotting.strategy_color("brand-new") == plotting.strategy_color("brand-new")
    assert plotting.strategy_color("brand-new").startswith("#")


def test_line_styles_tell_naive_from_fixed():
    assert plotting.strategy_dash("right-naive") == "dash"
    assert plotting.strategy_dash("right") == "solid"
    assert plotting.strategy_dash("single") == "dot"


def test_verdict_colours_are_distinct_and_checked():
    assert len({plotting.verdict_color(v) for v in VERDICTS}) == len(VERDICTS)
    with pytest.raises(ValueError, match="exact, drift, corrupted"):
        plotting.verdict_color("fine")


# --- layer figures ------------------------------------------------------------------------------


def test_cosine_lines_draw_mean_and_min_in_the_strategy_colour(report):
    figure = plotting.cosine_by_layer_figure(report)
    assert not _traces_named(figure, "single")  # the reference is left out by default
    for name in COMPARED:
        (mean_trace,) = _traces_named(figure, name)
        (min_trace,) = _traces_named(figure, f"{name} (min)")
        comparison = report.strategies[name]
        assert list(mean_trace.y) == pytest.approx(comparison.cosine.mean(0).tolist())
        assert list(min_trace.y) == pytest.approx(comparison.cosine.min(0).values.tolist())
        assert mean_trace.line.color == plotting.strategy_color(name)
        assert mean_trace.fill == "tonexty"  # the band down to the min
    assert figure.layout.title.text and figure.layout.xaxis.title.text and figure.layout.yaxis.title.text
    with_reference = plotting.cosine_by_layer_figure(report, include_reference=True)
    assert _traces_named(with_reference, "single")


def test_one_minus_cosine_is_log_scaled_and_floored(report):
    figure = plotting.one_minus_cosine_figure(report, ["right-naive", "right"])
    assert figure.layout.yaxis.type == "log"
    assert [trace.name for trace in figure.data] == ["right-naive", "right"]
    for trace in figure.data:
        worst = 1 - report.strategies[trace.name].cosine.double().min(0).values
        assert list(trace.customdata) == pytest.approx(worst.tolist())
        assert list(trace.y) == pytest.approx(worst.clamp(min=plotting.COSINE_LOG_FLOOR).tolist())
    # right padding read at -1 is far off on texts shorter than the longest.
    assert max(_traces_named(figure, "right-naive")[0].y) > 1e-2
    assert "1 - min cosine" in figure.layout.yaxis.title.text


def test_unknown_strategy_is_refused(report):
    with pytest.raises(ValueError, match="available: single"):
        plotting.relative_l2_figure(report, ["left"])


def test_heatmap_is_texts_by_layers(report):
    comparison = report.strategies["packed-naive"]
    figure = plotting.cosine_heatmap_figure(comparison, report.texts)
    (heatmap,) = figure.data
    assert torch.tensor(heatmap.z).shape == comparison.cosine.shape
    assert list(heatmap.y) == list(range(len(TEXTS)))
    assert figure.layout.yaxis.ticktext[1] == "2: Hello"
    log_figure = plotting.cosine_heatmap_figure(comparison, report.texts, log_scale=True)
    expected = torch.log10((1 - comparison.cosine.double()).clamp(min=plotting.COSINE_LOG_FLOOR))
    assert torch.tensor(log_figure.data[0].z).double() == pytest.approx(expected)
    with pytest.raises(ValueError, match="3 texts given for a comparison of 4"):
        plotting.cosine_heatmap_figure(comparison, report.texts[:3])


def test_relative_l2_shows_the_worst_text(report):
    figure = plotting.relative_l2_figure(report, ["packed-naive"])
    (trace,) = figure.data
    assert list(trace.customdata) == pytest.approx(report.strategies["packed-naive"].relative_l2.max(0).values.tolist())
    assert figure.layout.yaxis.type == "log"


# --- prediction figures ---------------------------------------------------------------------------


def test_top1_and_kl_bars(report):
    figure = plotting.top1_kl_figure(report)
    agreement, kl = figure.data
    assert list(agreement.x) == COMPARED
    assert list(agreement.y) == pytest.approx([100 * report.strategies[n].top1_agreement for n in COMPARED])
    assert list(kl.customdata) == pytest.approx([float(report.strategies[n].kl.mean()) for n in COMPARED])
    assert list(agreement.marker.color) == [plotting.strategy_color(n) for n in COMPARED]


def test_logit_lens_lines(report):
    figure = plotting.logit_lens_figure(report, ["right"])
    (trace,) = figure.data
    assert list(trace.y) == pytest.approx((100 * report.strategies["right"].logit_lens_agreement).tolist())


def test_top_k_frame_matches_softmax(report):
    decoded = []

    def decode(token: int) -> str:
        decoded.append(token)
        return f"<{token}>"

    frame = predictions.top_k_frame(report, decode, k=3)
    assert len(frame) == len(report.strategies) * len(TEXTS) * 3
    rows = frame[(frame["strategy"] == "right-naive") & (frame["text"] == 1)].sort_values("rank")
    probabilities = torch.softmax(report.strategies["right-naive"].extraction.logits[1].double(), -1)
    top = probabilities.topk(3)
    assert rows["token_id"].tolist() == top.indices.tolist()
    assert rows["probability"].tolist() == pytest.approx(top.values.tolist())
    assert rows["token"].tolist() == [f"<{t}>" for t in top.indices.tolist()]
    assert decoded
    with pytest.raises(ValueError, match="at least 1"):
        predictions.top_k_frame(report, decode, k=0)


def test_figure_html_is_standalone(report):
    page = plotting.figure_html(plotting.logit_lens_figure(report))
    assert page.lstrip().lower().startswith(("<!doctype html>", "<html>")) and "Logit lens" in page
    # plotly.js is embedded, not loaded from a CDN: the page opens offline.
    assert '<script src="http' not in page and len(page) > 1_000_000


# --- batch layout pictures -------------------------------------------------------------------------

TOKENS = [[11, 12], [21, 22, 23, 24], [31]]  # three texts of lengths 2, 4, 1
STRINGS = [["a", "b"], ["c", "d", "e", "f"], ["g"]]
PAD = 0


def test_plan_layouts_follows_the_strategy():
    passes = layout_views.plan_layouts("right-naive", TOKENS, PAD, batch_size=3)
    assert len(passes) == 1
    group, layout = passes[0]
    assert group == [0, 1, 2]
    assert layout.shape == (3, 4)
    assert len(layout_views.plan_layouts("single", TOKENS, PAD, batch_size=3)) == 3
    with pytest.raises(ValueError, match="unknown strategy"):
        layout_views.plan_layouts("nope", TOKENS, PAD, batch_size=3)


def test_batch_layout_marks_padding_tokens_and_read_positions():
    (group, layout), *_ = layout_views.plan_layouts("right-naive", TOKENS, PAD, batch_size=3)
    figure = plotting.batch_layout_figure(layout, STRINGS, group, title="right-naive")
    heatmap, *markers = figure.data
    z = torch.tensor(heatmap.z)
    assert (z == 0).tolist() == layout.is_pad.tolist()  # padding is category 0
    assert heatmap.text[0][0].startswith("a") and heatmap.text[0][2].startswith("pad")
    assert heatmap.text[1][3].startswith("f")
    frames = {marker.name: list(zip(marker.y, marker.x, strict=True)) for marker in markers}
    # Position -1 of every row: a pad for texts 1 and 3 (red frame), the last token of text 2.
    assert frames == {"position read": [(1, 3)], "pad position read": [(0, 3), (2, 3)]}
    (group, layout), *_ = layout_views.plan_layouts("left", TOKENS, PAD, batch_size=3)
    figure = plotting.batch_layout_figure(layout, STRINGS, group, title="left")
    # Left padding with position ids from the mask: the real tokens of text 1 sit at 0 and 1.
    assert figure.data[0].text[0][2].endswith(">0</span>") and figure.data[0].text[0][3].endswith(">1</span>")


def _frames(figure) -> dict[str, list[tuple[int, int]]]:
    """The pooled-cell outlines of a layout figure: legend name -> sorted (row, column) cells
    (each outline is 5 corners and a None; its first corner is the cell's top left)."""
    return {
        trace.name: sorted(
            (round(row + layouts.FRAME_INSET), round(col + layouts.FRAME_INSET))
            for row, col in zip(trace.y[0::6], trace.x[0::6], strict=True)
        )
        for trace in figure.data[1:]
    }


def test_layout_marks_the_pooled_cells_under_mean_and_tokens():
    (group, naive), *_ = layout_views.plan_layouts("right-naive", TOKENS, PAD, batch_size=3)
    (_, right), *_ = layout_views.plan_layouts("right", TOKENS, PAD, batch_size=3)
    every_cell = sorted((row, col) for row in range(3) for col in range(4))
    pad_cells = sorted(map(tuple, naive.is_pad.nonzero().tolist()))
    # right-naive's hidden.mean(1) averages every column of its row: the pad cells are framed in red.
    naive_mean = _frames(plotting.batch_layout_figure(naive, STRINGS, group, title="mean", pooling="mean"))
    assert naive_mean["pad counted in the mean"] == pad_cells and len(pad_cells) == 5
    assert sorted(naive_mean["averaged (mean)"] + pad_cells) == every_cell
    # right pools only the real tokens: nothing framed in red, every real cell framed.
    right_mean = _frames(plotting.batch_layout_figure(right, STRINGS, group, title="mean", pooling="mean"))
    real_cells = sorted(map(tuple, (~right.is_pad).nonzero().tolist()))
    assert right_mean == {"averaged (mean)": real_cells} and len(real_cells) == sum(map(len, TOKENS))
    right_tokens = _frames(plotting.batch_layout_figure(right, STRINGS, group, title="tokens", pooling="tokens"))
    assert right_tokens == {"kept as a row (tokens)": real_cells}
    cells = layout_views.pooled_cells(naive, "tokens")
    assert cells["owner"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]  # every column kept, pads too
    assert int(cells["is_pad"].sum()) == 5
    # The attention picture of row 0 marks the query positions pooled there.
    attention = plotting.attention_figure(naive, 0, STRINGS, group, title="right-naive", pooling="mean")
    marked = [trace for trace in attention.data if trace.name == "averaged (mean)"]
    assert len(marked) == 1 and sorted(marked[0].y) == [0, 1, 2, 3]


def test_pooled_descriptions_name_pads_and_shifts():
    (group, naive), *_ = layout_views.plan_layouts("right-naive", TOKENS, PAD, batch_size=3)
    sentences = layout_views.read_descriptions(naive, STRINGS, group, pooling="mean")
    assert len(sentences) == 3
    assert "2 pad positions" in sentences[0] and "counted in the mean" in sentences[0]
    assert "pad" not in sentences[1].split(":")[0] and "only its own tokens" in sentences[1]  # the longest text
    kept = layout_views.read_descriptions(naive, STRINGS, group, pooling="tokens")
    assert "4 rows for 2 tokens" in kept[0]
    (group, shifted), *_ = layout_views.plan_layouts("left-naive", TOKENS, PAD, batch_size=3)
    assert (
        "position ids run 2-3 where they would be 0-1"
        in (layout_views.read_descriptions(shifted, STRINGS, group, pooling="mean")[0])
    )
    (group, fixed), *_ = layout_views.plan_layouts("left", TOKENS, PAD, batch_size=3)
    assert all(
        "only its own tokens" in sentence
        for sentence in layout_views.read_descriptions(fixed, STRINGS, group, pooling="tokens")
    )


def test_attention_categories_by_hand():
    (_, naive), *_ = layout_views.plan_layouts("packed-naive", [[1, 2], [3]], PAD, batch_size=2)
    (_, packed), *_ = layout_views.plan_layouts("packed", [[1, 2], [3]], PAD, batch_size=2)
    # Query 2 (the second text) attends to both tokens of the first text without the block mask.
    assert layout_views.attention_categories(naive, 0).tolist() == [[1, 0, 0], [1, 1, 0], [2, 2, 1]]
    assert layout_views.attention_categories(packed, 0).tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    (_, right), *_ = layout_views.plan_layouts("right", [[1, 2], [3]], PAD, batch_size=2)
    # Row 1 is [3, pad]: the pad query sees text 3 only (pads are masked as keys).
    assert layout_views.attention_categories(right, 1).tolist() == [[1, 0], [1, 0]]
    with pytest.raises(ValueError, match="rows 0..1"):
        layout_views.attention_categories(right, 2)


def test_attention_figure_draws_every_category_in_the_legend():
    (group, layout), *_ = layout_views.plan_layouts("packed-naive", TOKENS, PAD, batch_size=3)
    figure = plotting.attention_figure(layout, 0, STRINGS, group, title="packed-naive")
    legend = [trace.name for trace in figure.data if trace.showlegend is not False and trace.name]
    assert "sees ANOTHER text" in legend and "position read" in legend
    assert torch.tensor(figure.data[0].z).eq(2).any()
    assert get_strategy("packed-naive").name in figure.layout.title.text


def test_read_descriptions_name_what_went_wrong():
    (group, naive), *_ = layout_views.plan_layouts("right-naive", TOKENS, PAD, batch_size=3)
    sentences = layout_views.read_descriptions(naive, STRINGS, group)
    assert len(sentences) == 3
    assert "a pad token" in sentences[0] and "not its last real token (column 1)" in sentences[0]
    assert "'f'" in sentences[1] and "only its own tokens" in sentences[1]  # the longest text is fine
    (group, shifted), *_ = layout_views.plan_layouts("left-naive", TOKENS, PAD, batch_size=3)
    assert "position id is 3 where it would be 1 alone" in layout_views.read_descriptions(shifted, STRINGS, group)[0]
    (group, packed), *_ = layout_views.plan_layouts("packed-naive", TOKENS, PAD, batch_size=3)
    sentences = layout_views.read_descriptions(packed, STRINGS, group)
    assert "only its own tokens" in sentences[0] and "another text" in sentences[1]
    (group, fixed), *_ = layout_views.plan_layouts("left", TOKENS, PAD, batch_size=3)
    assert all("only its own tokens" in sentence for sentence in layout_views.read_descriptions(fixed, STRINGS, group))
