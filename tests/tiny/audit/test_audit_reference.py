"""The layout of the audit's fresh rows (extraction/audit/reference.py): by default a batched layout
that auto's probe verified exact against single on this model, else single; ``single`` when asked.
The verdict, the rows that differ and the cause do not depend on it."""

import json

import pytest

from extraction.audit import audit_states
from extraction.audit.reference import REFERENCE_CHOICES, parse_reference
from extraction.cli import main
from extraction.extract import extract_states
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.safetensors_writer import write_safetensors_atomic
from extraction.strategies import STRATEGIES
from extraction.texts import tokenize_texts

# 16 texts of varied lengths: batches of 4 pad most of them.
TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:6]]


@pytest.fixture
def choices(tmp_path, monkeypatch):
    """A fresh file of remembered strategy choices, so that the probe runs."""
    path = tmp_path / "strategy-choices.json"
    monkeypatch.setenv("PADDING_AUDIT_CHOICES", str(path))
    return path


def test_the_default_reference_is_a_layout_the_probe_found_exact(tiny_llama, choices):
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    clean = extract_states(tiny_llama, tokenized, "single", keep_logits=False).hidden  # (N, S, d)
    report = audit_states(tiny_llama, tokenized, clean)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("exact", None, "none")
    layout = report.reference.layout
    assert layout in STRATEGIES and not STRATEGIES[layout].naive
    if layout != "single":  # the cost model priced a batched layout below one text a pass, and the probe checked it
        remembered = next(iter(json.loads(choices.read_text()).values()))["exactness"]
        assert remembered[layout]["verdict"] == "exact"
        assert "exact against single on" in report.reference.how and "auto's probe" in report.reference.how
    data = json.loads(json.dumps(report.to_dict()))
    assert data["reference"] == {"layout": layout, "how": report.reference.how}
    forced = audit_states(tiny_llama, tokenized, clean, reference="single")
    assert forced.reference.layout == "single" and forced.to_dict()["n_bit_exact"] == len(TEXTS)
    assert forced.verdict == "exact"


def test_a_defect_gets_the_same_rows_and_cause_from_either_reference(tiny_gpt2, choices):
    tokenized = tokenize_texts(tiny_gpt2.tokenizer, TEXTS)
    stored = extract_states(tiny_gpt2, tokenized, "right-naive", batch_size=4, keep_logits=False).hidden[:, -1]
    batched = audit_states(tiny_gpt2, tokenized, stored)
    single = audit_states(tiny_gpt2, tokenized, stored, reference="single")
    assert (
        (batched.verdict, batched.likely_cause)
        == (single.verdict, single.likely_cause)
        == (
            "corrupted",
            "right-naive",
        )
    )
    # Rows come back in the order of the texts whatever order the layout ran them in.
    assert batched.differences.differing == single.differences.differing
    assert batched.cosine.sub(single.cosine).abs().max() < 1e-5
    assert batched.best_hypothesis.evidence == single.best_hypothesis.evidence


def test_an_unknown_reference_names_the_valid_ones(tmp_path, capsys):
    with pytest.raises(ValueError, match="valid: auto, single"):
        parse_reference("sorted")
    assert REFERENCE_CHOICES == ("auto", "single")
    texts = tmp_path / "texts.txt"
    texts.write_text("one\ntwo\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "--model", "tiny-random-gpt2", "--texts", str(texts), "--states", "x.npy", "--reference", "x"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_audit_command_says_which_layout_made_the_fresh_rows(tiny_gpt2, tmp_path, capsys):
    tokenized = tokenize_texts(tiny_gpt2.tokenizer, TEXTS[:6])
    stored = extract_states(tiny_gpt2, tokenized, "single", keep_logits=False).hidden[:, -1]
    texts, states, out = tmp_path / "texts.txt", tmp_path / "states.safetensors", tmp_path / "audit.json"
    texts.write_text("\n".join(TEXTS[:6]) + "\n")
    write_safetensors_atomic(states, {"states": stored.contiguous()})
    args = ["audit", "--model", "tiny-random-gpt2", "--texts", str(texts), "--states", str(states)]
    assert main(args + ["--reference", "single", "--json", str(out)]) == 0
    assert "6 re-extracted with single (one text a pass, as asked)" in capsys.readouterr().out
    assert json.loads(out.read_text())["reference"]["layout"] == "single"
