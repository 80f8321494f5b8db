"""The audit's re-extraction of stored middle layers: the pass stops after the deepest stored layer
(blocks counted with hooks, never timed), the rows measured equal the whole pass's bit for bit,
lm_head is not run and one note says so; ``lm_head=True`` (``--lm-head``) runs the whole pass again."""

import json

import pytest
import torch

from extraction.audit import audit_states
from extraction.audit.check import check_rows
from extraction.cli import main
from extraction.extract import extract_states, lm_head_not_run
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.safetensors_writer import write_safetensors_atomic
from extraction.texts import tokenize_texts
from tests.block_calls import BlockCalls

LAYERS = [1, 2]  # hidden_states 1 and 2 of a 4-block model: blocks 0 and 1 give them


@pytest.fixture(scope="module")
def stored(tiny_model):
    tokenized = tokenize_texts(tiny_model.tokenizer, SAMPLE_TEXTS)
    full = extract_states(tiny_model, tokenized, "single", keep_logits=False)  # every layer: the whole pass
    return tiny_model, tokenized, full


def test_check_rows_of_middle_layers_stops_after_the_deepest_and_equals_the_whole_pass(stored):
    loaded, tokenized, full = stored
    rows = full.hidden[:, LAYERS]  # (N, 2, d)
    with BlockCalls(loaded) as counted:
        short = check_rows(loaded, tokenized, rows, LAYERS)
    assert counted.calls[: max(LAYERS)] == [len(tokenized)] * max(LAYERS)  # one pass a text, blocks 0 and 1
    assert not counted.ran_beyond(max(LAYERS)) and counted.lm_head_calls == 0
    assert short.top1_same is None and short.top1_stored is None and short.top1_fresh is None
    assert torch.equal(short.fresh, rows) and bool(short.bit_exact.all()) and short.verdict == "exact"
    with BlockCalls(loaded) as counted:
        whole = check_rows(loaded, tokenized, rows, LAYERS, lm_head=True)
    assert counted.calls == [len(tokenized)] * loaded.num_hidden_layers and counted.lm_head_calls > 0
    assert whole.top1_same is not None and torch.equal(whole.fresh, short.fresh)
    assert torch.equal(whole.cosine, short.cosine) and torch.equal(whole.relative_l2, short.relative_l2)


def test_check_rows_runs_lm_head_by_default_when_the_last_layer_is_stored(stored):
    loaded, tokenized, full = stored
    layers = [1, loaded.num_hidden_layers]
    with BlockCalls(loaded) as counted:
        check = check_rows(loaded, tokenized, full.hidden[:, layers], layers)
    assert counted.calls[-1] == len(tokenized) and counted.lm_head_calls > 0
    assert bool(check.top1_same.all()) and bool(check.top1_stored.all())
    off = check_rows(loaded, tokenized, full.hidden[:, layers], layers, lm_head=False)
    # No top-1 checks; the pass still runs whole, since the last state stored is lm_head's input.
    assert off.top1_same is None and off.top1_stored is None and torch.equal(off.fresh, check.fresh)


def test_audit_of_middle_layers_says_lm_head_was_not_run(stored):
    loaded, tokenized, full = stored
    with BlockCalls(loaded) as counted:
        report = audit_states(loaded, tokenized, full.hidden[:, LAYERS], layers=LAYERS, reference="single")
    assert not counted.ran_beyond(max(LAYERS)) and counted.lm_head_calls == 0
    assert report.verdict == "exact" and report.check.bit_exact.all()
    assert report.lm_head_note == lm_head_not_run(LAYERS) == "lm_head not run: layers up to 2 asked for"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["lm_head_note"] == report.lm_head_note and data["lm_head_accuracy_stored"] is None
    assert data["lm_head_accuracy_fresh"] is None
    asked = audit_states(loaded, tokenized, full.hidden[:, LAYERS], layers=LAYERS, reference="single", lm_head=True)
    assert "final norm then lm_head on the stored layer 2" in asked.lm_head_note
    assert asked.lm_head_accuracy_stored == asked.lm_head_accuracy_fresh is not None
    assert torch.equal(asked.check.cosine, report.check.cosine)


@pytest.mark.parametrize(("flag", "ran"), [([], False), (["--lm-head"], True)])
def test_audit_cli_lm_head_option(tiny_llama, tmp_path, capsys, flag, ran):
    tokenized = tokenize_texts(tiny_llama.tokenizer, SAMPLE_TEXTS)
    rows = extract_states(tiny_llama, tokenized, "single", layers=LAYERS, keep_logits=False).hidden
    states, texts, out = tmp_path / "mid.safetensors", tmp_path / "texts.txt", tmp_path / "audit.json"
    write_safetensors_atomic(states, {"hidden_states": rows}, {"layers": json.dumps(LAYERS)})
    texts.write_text("\n".join(SAMPLE_TEXTS) + "\n")
    argv = ["audit", "--model", "tiny-random-llama", "--texts", str(texts), "--states", str(states)]
    assert main([*argv, "--reference", "single", "--json", str(out), *flag]) == 0
    printed, data = capsys.readouterr().out, json.loads(out.read_text())
    assert data["verdict"] == "exact" and data["states"]["layers"] == LAYERS
    assert (data["lm_head_accuracy_stored"] is not None) == ran
    assert ("lm_head not run: layers up to 2 asked for" in printed) == (not ran)


def test_the_audit_page_says_lm_head_was_not_run(stored):
    from extraction.views.audit import headline_metrics

    loaded, tokenized, full = stored
    report = audit_states(loaded, tokenized, full.hidden[:, LAYERS], layers=LAYERS, reference="single")
    shown = {label: (value, help_text) for label, value, help_text in headline_metrics(report)}
    value, help_text = shown["lm_head top-1, stored"]
    assert value == "not run" and "lm_head not run: layers up to 2 asked for" in help_text


def test_the_audit_reference_is_priced_for_the_pass_it_runs(stored, monkeypatch):
    import extraction.comparison.choose as choose_module

    loaded, tokenized, full = stored
    priced = []
    real = choose_module.choose_strategy

    def recording(*args, **kwargs):
        priced.append(kwargs.get("blocks_run"))
        return real(*args, **kwargs)

    monkeypatch.setattr(choose_module, "choose_strategy", recording)
    report = audit_states(loaded, tokenized, full.hidden[:, LAYERS], layers=LAYERS)  # reference auto
    audit_states(loaded, tokenized, full.hidden[:, LAYERS], layers=LAYERS, lm_head=True)
    assert priced == [max(LAYERS), loaded.num_hidden_layers] and report.verdict == "exact"
