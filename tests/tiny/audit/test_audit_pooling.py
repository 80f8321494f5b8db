"""The audit under mean and tokens pooling, one test per pooled defect, on files made the way
people make them: plain transformers calls (tokenizer with padding, ``output_hidden_states``,
a mean over columns) on the tiny random models, never this package's strategies. The audit
must give the verdict, name the defect, reproduce it and say what kind of defect it is."""

from __future__ import annotations

import json

import pytest
import torch

from extraction import check_extractor
from extraction.audit import audit_states
from extraction.cli import main
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.safetensors_writer import write_safetensors_atomic
from extraction.storage.stored_states import StoredStates

TEXTS = SAMPLE_TEXTS  # lengths 2 to about 60 tokens: batches of 4 pad most texts
BATCH = 4


def _batches(texts, size=BATCH):
    return [texts[start : start + size] for start in range(0, len(texts), size)]


def _padded_forward(loaded, texts, side):
    """Plain transformers: one padded batch, every hidden state. Returns (B, S, T, d) and the mask (B, T)."""
    batch = loaded.tokenizer(texts, padding=True, padding_side=side, return_tensors="pt")
    with torch.no_grad():
        output = loaded.model(**batch, output_hidden_states=True)
    return torch.stack(output.hidden_states, 1), batch["attention_mask"]


def pads_counted_means(loaded, texts):
    """The classic bug: right padding, ``hidden.mean`` over every column, pads counted: (N, S, d)."""
    means = []
    for batch in _batches(texts):
        hidden, _ = _padded_forward(loaded, batch, "right")
        means.append(hidden.mean(2))
    return torch.cat(means)


def masked_means(loaded, texts, side="right"):
    """The mean over the real tokens only (mask-weighted), padding on ``side``, default position ids."""
    means = []
    for batch in _batches(texts):
        hidden, mask = _padded_forward(loaded, batch, side)
        weights = mask[:, None, :, None].float()  # (B, 1, T, 1)
        means.append((hidden * weights).sum(2) / weights.sum(2))
    return torch.cat(means)


def packed_unmasked_means(loaded, texts):
    """Texts concatenated per batch, position ids restarting per text, an all-ones mask (texts see
    the ones before them); the mean over each text's own segment: (N, S, d)."""
    means = []
    for batch in _batches(texts):
        ids = [loaded.tokenizer(text)["input_ids"] for text in batch]
        input_ids = torch.tensor([[t for seq in ids for t in seq]])
        positions = torch.tensor([[p for seq in ids for p in range(len(seq))]])
        with torch.no_grad():
            output = loaded.model(
                input_ids=input_ids,
                position_ids=positions,
                attention_mask=torch.ones_like(input_ids),
                output_hidden_states=True,
            )
        hidden = torch.stack(output.hidden_states, 1)[0]  # (S, T, d)
        start = 0
        for seq in ids:
            means.append(hidden[:, start : start + len(seq)].mean(1))
            start += len(seq)
    return torch.stack(means)


def every_column_rows(loaded, texts):
    """Right padding, every column of each row kept as a token row: ``(R, S, d)`` and offsets (N + 1,)."""
    rows, counts = [], []
    for batch in _batches(texts):
        hidden, _ = _padded_forward(loaded, batch, "right")  # (B, S, T, d)
        for k in range(hidden.shape[0]):
            rows.append(hidden[k].transpose(0, 1))  # (T, S, d): pads kept
            counts.append(hidden.shape[2])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(counts).cumsum(0)])
    return torch.cat(rows), offsets


def real_token_rows(loaded, texts):
    """One text a pass, every token's state: ``(R, S, d)`` and offsets (N + 1,)."""
    rows, counts = [], []
    for text in texts:
        batch = loaded.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            output = loaded.model(**batch, output_hidden_states=True)
        rows.append(torch.stack(output.hidden_states, 1)[0].transpose(0, 1))  # (n, S, d)
        counts.append(rows[-1].shape[0])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(counts).cumsum(0)])
    return torch.cat(rows), offsets


def _stored(tensor, pooling):
    return StoredStates(tensor, "plain transformers", None, "float32", {"pooling": pooling})


def test_pads_counted_mean_is_corrupted_right_naive_reproduced(tiny_model):
    report = audit_states(tiny_model, TEXTS, _stored(pads_counted_means(tiny_model, TEXTS), "mean"))
    assert (report.pooling, report.verdict, report.likely_cause, report.cause_kind) == (
        "mean",
        "corrupted",
        "right-naive",
        "pad-state",
    )
    best = report.best_hypothesis
    assert best.status == "reproduced"
    assert best.evidence["consistent_batch_sizes"]["input order"][0] == BATCH
    assert report.lm_head_accuracy_stored is None  # no lm_head check on means


def test_mask_weighted_mean_is_exact(tiny_model):
    report = audit_states(tiny_model, TEXTS, _stored(masked_means(tiny_model, TEXTS), "mean"))
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("exact", None, "none")


def test_left_padded_mean_without_positions(tiny_gpt2, tiny_llama):
    """Left padding, default position ids: positions shifted on GPT-2 (reproduced), nothing on RoPE."""
    report = audit_states(tiny_gpt2, TEXTS, _stored(masked_means(tiny_gpt2, TEXTS, side="left"), "mean"))
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("corrupted", "left-naive", "position-shift")
    assert report.best_hypothesis.status == "reproduced"
    rope = audit_states(tiny_llama, TEXTS, _stored(masked_means(tiny_llama, TEXTS, side="left"), "mean"))
    assert rope.verdict == "exact"


def test_packed_mean_without_mask_is_cross_text(tiny_model):
    report = audit_states(tiny_model, TEXTS, _stored(packed_unmasked_means(tiny_model, TEXTS), "mean"))
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("corrupted", "packed-naive", "cross-text")
    assert report.best_hypothesis.status == "reproduced"
    assert BATCH in report.best_hypothesis.evidence["consistent_pack_sizes"]


def test_tokens_with_pad_rows_is_corrupted_pad_state(tiny_model):
    rows, offsets = every_column_rows(tiny_model, TEXTS)
    report = audit_states(tiny_model, TEXTS, _stored(rows, "tokens"), offsets=offsets)
    assert (report.pooling, report.verdict, report.cause_kind) == ("tokens", "corrupted", "pad-state")
    assert report.likely_cause == "right-naive"
    assert report.best_hypothesis.status == "reproduced"
    padded = [i for i in range(len(TEXTS)) if bool(report.check.rows_differ[i])]
    assert padded and len(padded) < len(TEXTS)  # the longest text of each batch has no pads
    assert report.to_dict()["rows_differ"] == padded


def test_tokens_of_real_tokens_is_exact(tiny_gpt2):
    rows, offsets = real_token_rows(tiny_gpt2, TEXTS)
    report = audit_states(tiny_gpt2, TEXTS, _stored(rows, "tokens"), offsets=offsets)
    assert (report.verdict, report.cause_kind) == ("exact", "none")


def test_tokens_needs_offsets_that_fit(tiny_gpt2):
    rows, offsets = real_token_rows(tiny_gpt2, TEXTS)
    with pytest.raises(ValueError, match="offsets"):
        audit_states(tiny_gpt2, TEXTS, _stored(rows, "tokens"))
    with pytest.raises(ValueError, match="end at the row count"):
        audit_states(tiny_gpt2, TEXTS, _stored(rows, "tokens"), offsets=offsets + 1)


def test_cli_reads_pooling_and_offsets_from_the_file(tiny_gpt2, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    mean_file = tmp_path / "means.safetensors"
    write_safetensors_atomic(
        mean_file, {"hidden_states": pads_counted_means(tiny_gpt2, TEXTS)}, metadata={"pooling": "mean"}
    )
    out = tmp_path / "audit.json"
    args = ["audit", "--model", "tiny-random-gpt2", "--texts", str(texts), "--states", str(mean_file)]
    assert main([*args, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["pooling"], data["verdict"], data["likely_cause"], data["cause_kind"]) == (
        "mean",
        "corrupted",
        "right-naive",
        "pad-state",
    )
    # --pooling overrides the metadata, and the disagreement is said in a note.
    assert main([*args, "--pooling", "last", "--no-forensics", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["pooling"] == "last"
    assert any("metadata says pooling 'mean'" in note for note in data["notes"])
    tokens_file = tmp_path / "tokens.safetensors"
    rows, offsets = every_column_rows(tiny_gpt2, TEXTS)
    write_safetensors_atomic(tokens_file, {"hidden_states": rows, "offsets": offsets}, metadata={"pooling": "tokens"})
    capsys.readouterr()
    assert main([*args[:-1], str(tokens_file), "--no-forensics", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["pooling"], data["verdict"], data["cause_kind"]) == ("tokens", "corrupted", "pad-state")


def test_check_extractor_mean(tiny_gpt2):
    texts = TEXTS[:6]
    report = check_extractor(lambda t: masked_means(tiny_gpt2, t), tiny_gpt2, texts, pooling="mean")
    assert (report.pooling, report.verdict) == ("mean", "exact")
    report = check_extractor(lambda t: pads_counted_means(tiny_gpt2, t), tiny_gpt2, texts, pooling="mean")
    assert (report.verdict, report.likely_cause) == ("corrupted", "right-naive")
    with pytest.raises(ValueError, match="rows"):  # one row short
        check_extractor(lambda t: masked_means(tiny_gpt2, t)[1:], tiny_gpt2, texts, pooling="mean")


def test_check_extractor_tokens(tiny_gpt2):
    texts = TEXTS[:6]
    report = check_extractor(lambda t: real_token_rows(tiny_gpt2, t), tiny_gpt2, texts, pooling="tokens")
    assert (report.pooling, report.verdict) == ("tokens", "exact")
    report = check_extractor(lambda t: every_column_rows(tiny_gpt2, t), tiny_gpt2, texts, pooling="tokens")
    assert (report.verdict, report.cause_kind) == ("corrupted", "pad-state")
    with pytest.raises(ValueError, match="tuple"):  # rows without offsets
        check_extractor(lambda t: real_token_rows(tiny_gpt2, t)[0], tiny_gpt2, texts, pooling="tokens")
    with pytest.raises(ValueError, match="entries for 6 texts"):  # offsets of another text count
        check_extractor(
            lambda t: (real_token_rows(tiny_gpt2, t)[0], torch.tensor([0])), tiny_gpt2, texts, pooling="tokens"
        )
    with pytest.raises(ValueError, match="vector of integers"):
        check_extractor(
            lambda t: (real_token_rows(tiny_gpt2, t)[0], torch.zeros(7)), tiny_gpt2, texts, pooling="tokens"
        )


def test_probe_on_mean_states(tiny_llama, tmp_path):
    """probe --pooling mean: features are the strategies' means; the JSON says mean and has no
    lm_head accuracy; right-naive's means (pads counted) are corrupted, right's are not."""
    from tests.tiny.probing.test_probe import ending_word_data, write_csv

    data_file = write_csv(tmp_path / "data.csv", ending_word_data(24))
    out = tmp_path / "probe.json"
    args = ["probe", "--model", "tiny-random-llama", "--data", str(data_file), "--strategies", "right-naive,right"]
    assert main([*args, "--layers", "0,2", "--seeds", "2", "--pooling", "mean", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["pooling"] == "mean" and data["lm_head_layer"] is None
    layer = data["layers"]["2"]
    assert layer["right"]["corrupted_fraction"] == 0.0
    assert layer["right-naive"]["corrupted_fraction"] > 0.0
    with pytest.raises(SystemExit):  # tokens is not a probe pooling
        main([*args, "--pooling", "tokens"])
