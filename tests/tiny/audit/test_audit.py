"""The audit on stored files with each known defect, built on the tiny random models.

Each defect is produced the way a real pipeline would produce it (a defective strategy,
a bf16 load, pre-norm states read by a hook, a neighbouring layer), and the audit must
give the verdict the thresholds imply and name the defect from the vectors alone.
"""

import json

import pytest
import torch

from extraction.audit import (
    CAUSES,
    REPRODUCE_COSINE,
    audit_states,
    consistent_batchings,
    consistent_pack_sizes,
    pre_norm_states,
)
from extraction.cli import main
from extraction.comparison.compare import DRIFT_COSINE, EXACT_COSINE
from extraction.extract import extract_states
from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.safetensors_writer import write_safetensors_atomic
from extraction.storage.stored_states import StoredStates
from extraction.texts import tokenize_texts

# 16 texts of varied lengths, so that batches of 4 pad most of their texts.
TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:6]]
BATCH = 4
ISSUE_KEYS = {
    "verdict",
    "likely_cause",
    "min_cosine",
    "mean_cosine",
    "fraction_corrupted",
    "lm_head_accuracy_stored",
    "lm_head_accuracy_fresh",
    "n_checked",
    "n_rows",
    "n_corrupted",
    "fraction_corrupted_interval",
    "stored_token_ids",
    "sample",
}


@pytest.fixture(scope="module")
def setup(tiny_model):
    loaded = tiny_model
    tokenized = tokenize_texts(loaded.tokenizer, TEXTS)
    single = extract_states(loaded, tokenized, "single", keep_logits=False).hidden  # (N, L, d)
    return loaded, tokenized, single


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2):
    loaded = tiny_gpt2
    tokenized = tokenize_texts(loaded.tokenizer, TEXTS)
    return loaded, tokenized


def _batch_padded_lengths(lengths, batch):
    """Padded length of each text when batched in input order: the longest in its batch."""
    return [max(lengths[start : start + batch]) for start in range(0, len(lengths), batch) for _ in range(batch)][
        : len(lengths)
    ]


def test_a_clean_file_is_judged_clean(setup):
    loaded, tokenized, single = setup
    for stored in (single, extract_states(loaded, tokenized, "sorted", batch_size=BATCH, keep_logits=False).hidden):
        report = audit_states(loaded, tokenized, stored)
        assert report.verdict == "exact", report.cause
        assert report.likely_cause is None and report.hypotheses == []
        assert report.min_cosine >= EXACT_COSINE
        assert report.lm_head_accuracy_stored == report.lm_head_accuracy_fresh == 1.0
        assert report.fraction_corrupted == 0.0
        assert report.n_checked == len(TEXTS)


def test_right_naive_is_named_with_its_padded_lengths_and_batch_size(setup):
    loaded, tokenized, _ = setup
    stored = extract_states(loaded, tokenized, "right-naive", batch_size=BATCH, keep_logits=False).hidden
    report = audit_states(loaded, tokenized, stored)
    assert report.verdict == "corrupted"
    assert report.likely_cause == "right-naive", report.cause
    lengths = tokenized.lengths
    padded = _batch_padded_lengths(lengths, BATCH)
    shorter = [i for i in range(len(lengths)) if lengths[i] < padded[i]]
    assert report.fraction_corrupted == pytest.approx(len(shorter) / len(lengths))
    assert report.lm_head_accuracy_stored < report.lm_head_accuracy_fresh == 1.0
    best = report.best_hypothesis
    assert best.reproduction_cosine >= REPRODUCE_COSINE
    inferred = {int(row): p for row, p in best.evidence["padded_length_by_row"].items()}
    assert inferred and all(padded[row] == p for row, p in inferred.items())
    assert BATCH in best.evidence["consistent_batch_sizes"]["input order"]


def test_packed_naive_is_named_with_its_pack_starts(setup):
    loaded, tokenized, _ = setup
    stored = extract_states(loaded, tokenized, "packed-naive", batch_size=BATCH, keep_logits=False).hidden
    report = audit_states(loaded, tokenized, stored)
    assert report.verdict == "corrupted"
    assert report.likely_cause == "packed-naive", report.cause
    starts = {int(row): s for row, s in report.best_hypothesis.evidence["pack_start_by_row"].items()}
    assert starts and all(s == row - row % BATCH for row, s in starts.items())
    assert BATCH in report.best_hypothesis.evidence["consistent_pack_sizes"]


def test_reduced_precision_is_drift_from_dtype(setup):
    loaded, tokenized, _ = setup
    bf16 = load_model(loaded.name, dtype="bfloat16")
    stored = extract_states(bf16, tokenized, "sorted", batch_size=BATCH, keep_logits=False).hidden
    report = audit_states(loaded, tokenized, stored)
    assert report.verdict == "drift"
    assert DRIFT_COSINE <= report.min_cosine < EXACT_COSINE
    assert report.likely_cause == "dtype", report.cause
    assert report.best_hypothesis.evidence["dtype"] == "bfloat16"
    assert report.best_hypothesis.evidence["representable_fraction"]["bfloat16"] == 1.0


def test_a_neighbouring_layer_is_named(setup):
    loaded, tokenized, single = setup
    last = loaded.num_hidden_layers
    report = audit_states(loaded, tokenized, single[:, last - 1])  # (N, d), taken as the last layer by default
    assert report.layers == [last]
    assert report.verdict == "corrupted"
    assert report.likely_cause == "wrong-layer", report.cause
    assert report.best_hypothesis.evidence["matching_layers"] == [last - 1]


def test_left_padding_without_position_ids_depends_on_the_position_encoding(setup):
    loaded, tokenized, _ = setup
    stored = extract_states(loaded, tokenized, "left-naive", batch_size=BATCH, keep_logits=False).hidden
    report = audit_states(loaded, tokenized, stored)
    if not loaded.uses_absolute_positions:  # RoPE: the shift changes nothing, and the audit must say so
        assert report.verdict == "exact"
        return
    assert report.verdict == "corrupted"
    assert report.likely_cause == "left-naive", report.cause
    padded = _batch_padded_lengths(tokenized.lengths, BATCH)
    inferred = {int(r): p for r, p in report.best_hypothesis.evidence["padded_length_by_row"].items()}
    assert inferred and all(padded[row] == p for row, p in inferred.items())


def test_pre_norm_states(setup):
    loaded, tokenized, single = setup
    stored = single.clone()
    stored[:, -1] = pre_norm_states(loaded, tokenized)
    report = audit_states(loaded, tokenized, stored)
    # On the tiny Llama the RMSNorm weight is all ones: normalizing only rescales each vector, so
    # cosine and top-1 are unchanged, and the lengths alone (relative L2 up to 11) make it corrupted.
    assert report.verdict == "corrupted"
    assert report.likely_cause == "pre-norm", report.cause
    assert report.to_dict()["lm_head_accuracy_stored_after_final_norm"] == 1.0


def test_an_unexplained_defect_is_unknown(gpt2):
    loaded, tokenized = gpt2
    single = extract_states(loaded, tokenized, "single", keep_logits=False).hidden
    stored = single.flip(-1)  # every vector's dimensions reversed: no known defect does that
    report = audit_states(loaded, tokenized, stored)
    assert report.verdict == "corrupted"
    assert report.likely_cause == "unknown"
    assert all(h.status not in ("reproduced", "consistent") for h in report.hypotheses)
    # Every row belonging to the previous text was unexplained before issue 21; it is a reordering.
    report = audit_states(loaded, tokenized, single.roll(1, dims=0))
    assert (report.likely_cause, report.cause_kind) == ("order", "other-row")
    assert report.best_hypothesis.evidence["rows_moved"] == len(tokenized)


def test_sampling_json_and_frames(gpt2, tmp_path):
    loaded, tokenized = gpt2
    stored = extract_states(loaded, tokenized, "right-naive", batch_size=BATCH, keep_logits=False).hidden
    report = audit_states(loaded, tokenized, StoredStates(stored, "x.npy", None, "float32"), sample=6, seed=1)
    assert report.n_checked == 6 and len(set(report.checked)) == 6
    assert report.cosine.shape == (6, loaded.num_hidden_layers + 1)
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) >= ISSUE_KEYS
    assert data["likely_cause"] in CAUSES
    assert data["n_checked"] == 6
    assert len(report.to_frame()) == 6
    assert list(report.hypotheses_frame()["hypothesis"]) == [h.name for h in report.hypotheses]


def test_an_intermediate_layer_goes_through_the_final_norm(gpt2):
    loaded, tokenized = gpt2
    single = extract_states(loaded, tokenized, "single", keep_logits=False).hidden
    report = audit_states(loaded, tokenized, single[:, 2], layer=2, lm_head=True)  # asked: the whole pass
    assert report.verdict == "exact"
    assert report.lm_head_layer == 2 and "final norm then lm_head" in report.lm_head_note
    assert report.lm_head_accuracy_stored == report.lm_head_accuracy_fresh


def test_shape_mismatches_are_value_errors(gpt2):
    loaded, tokenized = gpt2
    with pytest.raises(ValueError, match="15 rows but 16 texts"):
        audit_states(loaded, tokenized, torch.zeros(15, loaded.hidden_size))
    with pytest.raises(ValueError, match="hidden size is 64"):
        audit_states(loaded, tokenized, torch.zeros(16, 32))


# --- the pure consistency searches -----------------------------------------------------


def test_consistent_batchings_by_hand():
    lengths = [3, 5, 2, 2, 7, 1]
    # Input order, batches of 2: (3, 5) (2, 2) (7, 1) -> padded 5 5 2 2 7 7.
    found = consistent_batchings(lengths, padded={0: 5, 5: 7, 3: 2})
    assert 2 in found["input order"]
    assert 3 not in found["input order"]  # (3, 5, 2) pads text 0 to 5 but text 3 to 7
    # Ascending length order 1 2 2 3 5 7 in batches of 2: (1, 2) (2, 3) (5, 7): text 0 (3) -> 3.
    assert 2 in consistent_batchings(lengths, padded={0: 3, 5: 2})["ascending length"]
    assert consistent_batchings(lengths, padded={0: 4})["input order"] == []  # no batch pads to 4
    # Text 4 (the longest) can never be padded beyond itself.
    assert all(sizes == [] for sizes in consistent_batchings(lengths, {}, padded_longer=[4]).values())


def test_consistent_pack_sizes_by_hand():
    # Packs of 3 in input order start at 0, 3, 6: text 4 starts at 3, text 6 is a start.
    assert 3 in consistent_pack_sizes(9, {4: 3, 6: 6})
    assert consistent_pack_sizes(9, {4: 3, 6: 6}) == [3]
    assert 1 not in consistent_pack_sizes(9, {}, not_start=[2])


# --- the command line ------------------------------------------------------------------


def test_audit_command(gpt2, tmp_path, capsys):
    loaded, tokenized = gpt2
    texts_file = tmp_path / "texts.jsonl"
    texts_file.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n")
    stored = extract_states(loaded, tokenized, "right-naive", batch_size=BATCH, keep_logits=False).hidden
    states_file = tmp_path / "states.safetensors"
    write_safetensors_atomic(states_file, {"h": stored[:, -1].contiguous(), "labels": torch.zeros(16)})
    args = ["audit", "--model", "tiny-random-gpt2", "--texts", str(texts_file), "--states", str(states_file)]
    assert main(args) == 2
    assert "--key" in capsys.readouterr().err.strip()
    out_json = tmp_path / "report.json"
    assert main(args + ["--key", "h", "--json", str(out_json), "--strict"]) == 1
    capsys.readouterr()
    data = json.loads(out_json.read_text())
    assert set(data) >= ISSUE_KEYS
    assert data["verdict"] == "corrupted" and data["likely_cause"] == "right-naive"
    assert data["n_checked"] == len(TEXTS)


def test_audit_command_errors_are_one_line(tmp_path, capsys):
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("one\ntwo\n")
    states_file = tmp_path / "s.npy"
    states_file.write_bytes(b"\x93NUMPY garbage")
    code = main(["audit", "--model", "tiny-random-gpt2", "--texts", str(texts_file), "--states", str(states_file)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and "\n" not in err and "truncated or corrupt" in err


def test_histogram_figure_counts_every_checked_text(gpt2):
    from extraction.plotting import AUDIT_COSINE_EDGES, VERDICT_COLORS, audit_cosine_histogram

    loaded, tokenized = gpt2
    stored = extract_states(loaded, tokenized, "right-naive", batch_size=BATCH, keep_logits=False).hidden
    report = audit_states(loaded, tokenized, stored, forensics=False)
    (bars,) = audit_cosine_histogram(report).data
    assert len(bars.y) == len(AUDIT_COSINE_EDGES) - 1
    assert sum(bars.y) == report.n_checked
    per_row = torch.tensor(report.per_row_min_cosine)
    assert bars.y[-1] == int((per_row >= AUDIT_COSINE_EDGES[-2]).sum())  # the clean texts: longest of their batch
    assert bars.y[0] == int((per_row < 0).sum())
    assert bars.marker.color[0] == VERDICT_COLORS["corrupted"]
    assert bars.marker.color[-1] == VERDICT_COLORS["exact"]
