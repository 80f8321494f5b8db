"""The shareable HTML report of a comparison (tiny random GPT-2): one page with a card per
strategy, the figures, the notes and the texts escaped, and plotly.js inlined exactly once.
That its charts draw offline in a browser is ``browser/test_report_html_browser.py``."""

from __future__ import annotations

import html
from html.parser import HTMLParser

import pytest
from plotly.offline import get_plotlyjs

from extraction import compare_strategies, comparison_report_html
from extraction.cli import EXIT_USAGE, main
from extraction.samples import SAMPLE_TEXTS
from extraction.strategies import REFERENCE
from extraction.views.layouts import worst_strategy
from extraction.views.predictions import NOT_APPLICABLE, token_strings

#: A text that would run script if it were not escaped.
HOSTILE = "</li><script>alert('x')</script> & <b>bold</b>"
STRATEGIES = ["right-naive", "right", "left-naive"]
FIGURE_IDS = {"figure-layers", "figure-predictions", "figure-layout"}


class _Page(HTMLParser):
    """The parts of the page the tests look at: cards, figure divs, scripts, external references."""

    def __init__(self):
        super().__init__()
        self.cards: dict[str, str] = {}  # strategy -> verdict
        self.figure_ids: list[str] = []
        self.scripts: list[str] = []
        self.external: list[str] = []  # src/href attributes (none expected)
        self.top1: dict[str, str] = {}  # strategy -> the card's top-1 agreement as shown
        self.settings: dict[str, str] = {}  # the first table: row header -> cell
        self.ids: list[str] = []  # every element id
        self._in_script = False
        self._card: str | None = None
        self._after_top1_label = False
        self._cell: str | None = None  # "th" or "td" while inside one
        self._header = ""
        self._tables = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "div" and attributes.get("class") == "card":
            self.cards[attributes["data-strategy"]] = attributes["data-verdict"]
            self._card = attributes["data-strategy"]
        if attributes.get("id"):
            self.ids.append(attributes["id"])
        if tag == "table":
            self._tables += 1
        if tag in ("th", "td"):
            self._cell = tag
        if tag == "div" and attributes.get("id", "").startswith("figure-"):
            self.figure_ids.append(attributes["id"])
        self.external += [value for name, value in attrs if name in ("src", "href") and value]
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False
        if tag in ("th", "td"):
            self._cell = None

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        if self._card is not None and self._after_top1_label and data.strip():
            self.top1[self._card], self._after_top1_label = data.strip(), False
        elif data.strip() == "top-1 agreement":
            self._after_top1_label = True
        if self._tables == 1 and self._cell == "th":
            self._header = data
        elif self._tables == 1 and self._cell == "td":
            self.settings[self._header] = data


@pytest.fixture(scope="module")
def report(tiny_gpt2):
    return compare_strategies(tiny_gpt2, [*SAMPLE_TEXTS[:6], HOSTILE], STRATEGIES, batch_size=4)


@pytest.fixture(scope="module")
def page(report, tiny_gpt2) -> str:
    return comparison_report_html(report, tiny_gpt2.tokenizer, settings={"texts from": "<the test>"})


def test_one_card_per_strategy_with_its_verdict(report, page):
    parsed = _Page()
    parsed.feed(page)
    expected = {name: comparison.verdict for name, comparison in report.strategies.items() if name != REFERENCE}
    assert parsed.cards == expected
    assert expected["right-naive"] == "corrupted" and expected["right"] == "exact"  # GPT-2: the bug shows
    assert parsed.top1 == {name: f"{report.strategies[name].top1_agreement:.0%}" for name in expected}


def test_plotly_js_inlined_exactly_once_and_nothing_external(page):
    parsed = _Page()
    parsed.feed(page)
    bundle = get_plotlyjs()
    assert page.count(bundle) == 1
    assert sum(len(script) > 1_000_000 for script in parsed.scripts) == 1
    assert parsed.external == []
    assert sorted(parsed.figure_ids) == sorted(FIGURE_IDS)
    assert page.count("Plotly.newPlot") == len(FIGURE_IDS)


def test_every_text_is_escaped(report, page):
    assert HOSTILE not in page and "<script>alert" not in page
    assert "&lt;/li&gt;&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "&lt;the test&gt;" in page
    for note in report.notes:  # random weights, pad token
        assert html.escape(note) in page


def test_the_layout_picture_is_the_worst_strategy(report, page):
    name = worst_strategy(report)
    assert f"How the worst strategy lays out the texts: <code>{name}</code>" in page


def test_token_strings_give_the_same_page_as_the_tokenizer(report, tiny_gpt2, page):
    strings = token_strings(tiny_gpt2.tokenizer.decode, report.tokenized.token_ids)
    again = comparison_report_html(report, strings, tiny_gpt2.pad_token_id, settings={"texts from": "<the test>"})
    created = "created</th><td>"
    # Equal except the creation time.
    assert again.split(created)[0] == page.split(created)[0]
    with pytest.raises(ValueError, match="pad_token_id"):
        comparison_report_html(report, strings)
    with pytest.raises(ValueError, match="cover 2 texts"):
        comparison_report_html(report, strings[:2], tiny_gpt2.pad_token_id)


def test_compare_writes_the_report(tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SAMPLE_TEXTS[:4]), encoding="utf-8")
    out = tmp_path / "report.html"
    arguments = ["compare", "--model", "tiny-random-gpt2", "--texts", str(texts), "--strategies", "right-naive"]
    assert main([*arguments, "--html", str(out)]) == 0
    parsed = _Page()
    parsed.feed(out.read_text(encoding="utf-8"))
    assert parsed.cards == {"right-naive": "corrupted"}
    assert sorted(parsed.figure_ids) == sorted(FIGURE_IDS)


def test_mean_pooling_report_states_it_and_draws_no_lm_head_chart(tiny_gpt2):
    report = compare_strategies(tiny_gpt2, SAMPLE_TEXTS[:6], ["right-naive", "right"], batch_size=4, pooling="mean")
    parsed = _Page()
    parsed.feed(comparison_report_html(report, tiny_gpt2.tokenizer))
    assert parsed.settings["pooling"].startswith("mean")
    # Pads counted in the mean corrupt right-naive; right's mask-weighted mean is exact.
    assert parsed.cards == {"right-naive": "corrupted", "right": "exact"}
    assert parsed.top1 == {"right-naive": NOT_APPLICABLE, "right": NOT_APPLICABLE}
    assert sorted(parsed.figure_ids) == sorted(FIGURE_IDS - {"figure-predictions"})
    assert "predictions-not-applicable" in parsed.ids


def test_compare_html_under_tokens_pooling(tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SAMPLE_TEXTS[:4]), encoding="utf-8")
    out = tmp_path / "report.html"
    arguments = ["compare", "--model", "tiny-random-gpt2", "--texts", str(texts), "--strategies", "right-naive"]
    assert main([*arguments, "--pooling", "tokens", "--html", str(out)]) == 0
    parsed = _Page()
    parsed.feed(out.read_text(encoding="utf-8"))
    assert parsed.settings["pooling"].startswith("tokens")
    assert parsed.cards == {"right-naive": "corrupted"}  # pad positions kept as rows
    assert parsed.top1 == {"right-naive": NOT_APPLICABLE}
    assert "figure-predictions" not in parsed.figure_ids


@pytest.mark.parametrize("clash", ["texts", "json"])
def test_compare_refuses_an_html_path_that_clashes(tmp_path, clash, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("Hello\n", encoding="utf-8")
    html_out = texts if clash == "texts" else tmp_path / "out"
    arguments = ["compare", "--model", "tiny-random-gpt2", "--texts", str(texts), "--html", str(html_out)]
    if clash == "json":
        arguments += ["--json", str(html_out)]
    assert main(arguments) == EXIT_USAGE
    assert texts.read_text(encoding="utf-8") == "Hello\n"
    assert not (tmp_path / "out").exists()
