"""Probe impact: the pure train/score step on hand-built features, the split, the CSV checks,
the built-in set, run_probe on a tiny model, and the ``probe`` command."""

import json
import random

import numpy as np
import pytest
import torch

import extraction.probing.labelled
from extraction.cli import main
from extraction.extract import extract_states
from extraction.probing.labelled import (
    BUILTIN_DATASETS,
    DEFAULT_DATASET,
    MIN_ROWS_PER_CLASS,
    LabelledTexts,
    builtin_dataset,
    check_labelled,
    parse_labelled_csv,
    read_labelled_csv,
)
from extraction.probing.probe import fit_and_score, label_token_ids, resolve_layer, run_probe, stratified_split
from extraction.texts import tokenize_texts

# --- the pure train/score step -------------------------------------------------------------


def test_fit_and_score_on_hand_built_features():
    # One feature, classes symmetric about 0: the fitted boundary is x = 0 (by symmetry), and
    # every test point sits at |x| >= 1, far from it.
    train = np.array([[-3.0], [-2.0], [-1.5], [1.5], [2.0], [3.0]])
    train_labels = np.array([0, 0, 0, 1, 1, 1])
    test_labels = np.array([0, 1, 0, 1])
    same = np.array([[-2.0], [2.0], [-1.0], [1.0]])  # all on their class's side: 4/4
    single = np.array([[-2.0], [2.0], [1.0], [-1.0]])  # the last two crossed over: 2/4
    scores = fit_and_score(train, train_labels, same, single, test_labels)
    assert scores.predictions_same.tolist() == [0, 1, 0, 1]
    assert scores.predictions_single.tolist() == [0, 1, 1, 0]
    assert scores.accuracy_same == 1.0
    assert scores.accuracy_single == 0.5
    assert scores.gap == 0.5
    assert scores.prediction_flips == 0.5
    assert scores.train_accuracy == 1.0


def test_scores_come_from_the_fitted_probe():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(40, 5))
    train_labels = (train[:, 0] + 0.3 * rng.normal(size=40) > 0).astype(int)
    same, single = rng.normal(size=(20, 5)), rng.normal(size=(20, 5))
    test_labels = (same[:, 0] > 0).astype(int)
    scores = fit_and_score(train, train_labels, same, single, test_labels)
    assert scores.accuracy_same == np.mean(scores.probe.predict(same) == test_labels)
    assert scores.accuracy_single == np.mean(scores.probe.predict(single) == test_labels)
    # standardization is part of the probe: the scaler's mean is the training features' mean
    np.testing.assert_allclose(scores.probe.named_steps["scale"].mean_, train.mean(0))
    again = fit_and_score(train, train_labels, same, single, test_labels)
    assert (again.predictions_single == scores.predictions_single).all()


def test_identical_feature_sets_score_identically():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(30, 4)), rng.normal(size=(12, 4))
    scores = fit_and_score(train, rng.integers(0, 2, 30), test, test.copy(), rng.integers(0, 2, 12))
    assert scores.accuracy_same == scores.accuracy_single and scores.prediction_flips == 0.0


@pytest.mark.parametrize(
    ("same", "single", "message"),
    [
        (np.zeros((2, 1)), np.zeros((3, 1)), "shapes disagree"),
        (np.zeros((2, 2)), np.zeros((2, 2)), "shapes disagree"),
        (np.array([[np.nan], [0.0]]), np.zeros((2, 1)), "NaN or inf"),
    ],
)
def test_fit_and_score_refuses_bad_features(same, single, message):
    with pytest.raises(ValueError, match=message):
        fit_and_score(np.array([[-1.0], [1.0]]), np.array([0, 1]), same, single, np.array([0, 1]))


# --- split and input checks ----------------------------------------------------------------


def test_stratified_split_is_disjoint_stratified_and_seeded():
    labels = np.array([0] * 20 + [1] * 12 + [2] * 8)
    train, test = stratified_split(labels, test_fraction=0.25, seed=7)
    assert len(np.intersect1d(train, test)) == 0
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[test]).tolist() == [5, 3, 2]  # round(n * 0.25) per class
    again_train, again_test = stratified_split(labels, test_fraction=0.25, seed=7)
    assert (again_test == test).all() and (again_train == train).all()
    other = [stratified_split(labels, 0.25, seed)[1] for seed in range(5)]
    assert any(not np.array_equal(test, o) for o in other)


def test_stratified_split_keeps_one_of_each_class_on_both_sides():
    train, test = stratified_split(np.array([0, 0, 1, 1, 1, 1, 1, 1]), test_fraction=0.05)
    assert len(test) == 2 and len(train) == 6
    train, test = stratified_split(np.array([0, 0, 1, 1]), test_fraction=0.9)
    assert len(test) == 2 and len(train) == 2
    with pytest.raises(ValueError, match="at least 2"):
        stratified_split(np.array([0, 1, 1]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,score\nhello,1\n", "missing column.*label"),
        ("sentence,label\nhello,a\n", "missing column.*text"),
        ("text,label\n", "no rows"),
        ("text,label\nhello,a\n   ,b\n", "row 3 has an empty text"),
        ("text,label\nhello,a\nworld,\n", "row 3 has an empty label"),
    ],
)
def test_parse_labelled_csv_errors(content, message):
    with pytest.raises(ValueError, match=message):
        parse_labelled_csv(content, "upload.csv")


def test_labels_keep_their_leading_space_and_extra_columns_are_ignored():
    data = parse_labelled_csv('id,text,label\n1,"Good, really."," positive"\n2,Bad.,negative\n')
    assert data.texts == ["Good, really.", "Bad."]
    assert data.labels == [" positive", "negative"]
    assert data.classes == [" positive", "negative"]
    assert data.label_indices.tolist() == [0, 1]


def test_check_labelled_needs_two_classes_with_enough_rows():
    with pytest.raises(ValueError, match="only one class"):
        check_labelled(LabelledTexts(["a", "b", "c", "d", "e"], ["x"] * 5))
    small = MIN_ROWS_PER_CLASS - 1
    data = LabelledTexts([f"t{i}" for i in range(10 + small)], ["x"] * 10 + ["y"] * small, "small.csv")
    with pytest.raises(ValueError, match=rf"small.csv: too few rows.*'y': {small}.*at least {MIN_ROWS_PER_CLASS}"):
        check_labelled(data)
    with pytest.raises(ValueError, match="test fraction"):
        check_labelled(LabelledTexts(["a"] * 8, ["x", "y"] * 4), test_fraction=1.0)
    check_labelled(LabelledTexts(["a"] * 8, ["x", "y"] * 4))


def test_read_labelled_csv_file_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_labelled_csv(tmp_path / "missing.csv")
    texts = tmp_path / "data.txt"
    texts.write_text("hello\n")
    with pytest.raises(ValueError, match=r"must be a \.csv"):
        read_labelled_csv(texts)


def test_resolve_layer():
    assert resolve_layer(None, 4) == 4
    assert resolve_layer(-1, 4) == 4
    assert resolve_layer(-5, 4) == 0
    assert resolve_layer(2, 4) == 2
    for bad in (5, -6):
        with pytest.raises(ValueError, match=r"out of range.*0\.\.4"):
            resolve_layer(bad, 4)


# --- the built-in set ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suffix", "classes", "minimum"),
    [("sentiment", " Sentiment:", [" negative", " positive"], 200), ("tense", " Tense:", [" future", " past"], 300)],
)
def test_builtin_sets_are_balanced_labelled_texts_of_varied_length(tiny_llama, name, suffix, classes, minimum):
    assert set(BUILTIN_DATASETS) == {"sentiment", "tense"} and DEFAULT_DATASET == "sentiment"
    data = builtin_dataset(name)
    assert data.source == f"built-in {BUILTIN_DATASETS[name].file}"
    assert len(data) >= minimum
    assert data.class_counts() == dict.fromkeys(classes, len(data) // 2)
    assert len(set(data.texts)) == len(data)
    assert all(text.endswith(suffix) for text in data.texts)
    lengths = tokenize_texts(tiny_llama.tokenizer, data.texts).lengths
    assert max(lengths) >= 4 * min(lengths)  # padding matters: lengths vary widely
    ids, note = label_token_ids(tiny_llama.tokenizer, data.classes)
    assert note is None and len(ids) == 2


def test_builtin_dataset_errors(monkeypatch):

    with pytest.raises(ValueError, match=r"unknown built-in data set 'topic'; valid: sentiment, tense"):
        builtin_dataset("topic")
    missing = extraction.probing.labelled.BuiltinDataset("nowhere.csv", "make_nowhere.py", "absent")
    monkeypatch.setitem(extraction.probing.labelled.BUILTIN_DATASETS, "nowhere", missing)
    with pytest.raises(ValueError, match=r"'nowhere' is not installed: extraction/data/nowhere.csv is missing"):
        builtin_dataset("nowhere")


def test_builtin_csv_is_what_its_generator_writes():
    import importlib.util
    from importlib import resources

    folder = resources.files("extraction").joinpath("data")
    spec = importlib.util.spec_from_file_location("generate_sentiment_demo", folder / "generate_sentiment_demo.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    shipped = (folder / "sentiment_demo.csv").read_text(encoding="utf-8")
    assert shipped == generator.to_csv(generator.generate())


def test_label_token_ids_explains_multi_token_labels(tiny_llama):
    ids, note = label_token_ids(tiny_llama.tokenizer, [" positive", " negative"])
    assert note is None
    assert ids == [
        tiny_llama.tokenizer(" positive", add_special_tokens=False)["input_ids"][0],
        tiny_llama.tokenizer(" negative", add_special_tokens=False)["input_ids"][0],
    ]
    ids, note = label_token_ids(tiny_llama.tokenizer, [" positive", "very negative"])
    assert ids is None and "'very negative' is 2 tokens" in note


# --- run_probe on a tiny model -------------------------------------------------------------

WORDS = "the a cat dog sat ran over under blue green quickly slowly house river song light".split()


def ending_word_data(count: int = 40, endings=(" apple", " stone"), seed: int = 0) -> LabelledTexts:
    """Texts of 1 to 24 random words ending in one of ``endings``; the label is the ending."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(count):
        ending = endings[i % 2]
        texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 24))) + ending)
        labels.append(ending)
    return LabelledTexts(texts, labels, "ending words")


@pytest.fixture(scope="module")
def tiny_report(tiny_llama):
    # Layer 0 (the embeddings): the last token's embedding is the label, so the features separate
    # the classes. (On this random model the blocks scramble it: deeper layers score 0.6-0.8.)
    # lm_head=True: the zero-shot accuracy on the last layer too (by default only a probe of the last runs it).
    return run_probe(tiny_llama, ending_word_data(), "right-naive,right", layer=0, batch_size=4, lm_head=True)


def test_single_probe_scores_the_same_on_both_test_sets(tiny_report):
    single = tiny_report.strategies["single"]
    assert single.accuracy_same == single.accuracy_single
    assert (single.scores.predictions_same == single.scores.predictions_single).all()
    assert single.gap == 0.0 and single.corrupted_test_fraction == 0.0
    assert single.accuracy_single == 1.0  # two distinct embedding vectors, one per class


def test_report_numbers_come_from_the_trained_probes(tiny_report):
    test, train = tiny_report.test_indices, tiny_report.train_indices
    labels = tiny_report.test_labels
    single_test = tiny_report.strategies["single"].features[test]
    all_labels = ending_word_data().label_indices
    for result in tiny_report.strategies.values():
        own_test = result.features[test]
        assert result.accuracy_same == np.mean(result.scores.probe.predict(own_test) == labels)
        assert result.accuracy_single == np.mean(result.scores.probe.predict(single_test) == labels)
        refit = fit_and_score(result.features[train], all_labels[train], own_test, single_test, labels)
        assert (refit.accuracy_same, refit.accuracy_single) == (result.accuracy_same, result.accuracy_single)
    frame = tiny_report.to_frame()
    assert list(frame["strategy"]) == ["single", "right-naive", "right"]
    np.testing.assert_allclose(frame["gap"], frame["accuracy_same"] - frame["accuracy_single"])


def test_corruption_is_measured_on_the_test_features(tiny_report):
    assert tiny_report.strategies["right"].corrupted_test_fraction == 0.0
    # right-naive reads a pad token for every text shorter than its batch's longest
    assert tiny_report.strategies["right-naive"].corrupted_test_fraction > 0.0
    # The corrupted rows hold the pad token's embedding: some of their predictions flip, and
    # only they can flip (at layer 0 an uncorrupted row is the very same embedding).
    naive = tiny_report.strategies["right-naive"]
    assert 0.0 < naive.scores.prediction_flips <= naive.corrupted_test_fraction


def test_lm_head_accuracy_matches_the_models_own_logits(tiny_llama, tiny_report):
    data = ending_word_data()
    tokenized = tokenize_texts(tiny_llama.tokenizer, data.texts)
    own = extract_states(tiny_llama, tokenized, "single", layers=[0, tiny_llama.num_hidden_layers])
    ids, _ = label_token_ids(tiny_llama.tokenizer, tiny_report.classes)
    test = tiny_report.test_indices
    expected = float((own.logits[test][:, ids].argmax(-1).numpy() == tiny_report.test_labels).mean())
    assert tiny_report.strategies["single"].lm_head_accuracy == pytest.approx(expected)
    assert tiny_report.lm_head_note is None
    for result in tiny_report.strategies.values():
        assert result.lm_head_predictions.shape == test.shape
    # the probed layer's features are the extracted states
    torch.testing.assert_close(torch.from_numpy(tiny_report.strategies["single"].features), own.hidden[:, 0])


def test_report_to_dict(tiny_report):
    data = tiny_report.to_dict()
    assert (data["layer"], data["num_layers"]) == (0, 4)
    assert data["num_train"] + data["num_test"] == data["num_texts"] == 40
    assert data["classes"] == [" apple", " stone"]
    for record in data["strategies"].values():
        assert {"accuracy_same", "accuracy_single", "gap", "lm_head_accuracy"} <= set(record)
    json.dumps(data, allow_nan=False)


def test_probe_at_the_default_last_layer_without_lm_head(tiny_llama):
    data = ending_word_data(16, endings=(" red fox", " blue whale"))
    report = run_probe(tiny_llama, data, "single", batch_size=4)
    assert list(report.strategies) == ["single"] and report.layer == tiny_llama.num_hidden_layers
    tokenized = tokenize_texts(tiny_llama.tokenizer, data.texts)
    own = extract_states(tiny_llama, tokenized, "single", layers=[report.layer], keep_logits=False)
    np.testing.assert_array_equal(report.strategies["single"].features, own.hidden[:, 0].numpy())
    assert report.strategies["single"].lm_head_accuracy is None
    assert "' blue whale' is 2 tokens" in report.lm_head_note
    assert "lm_head_accuracy" not in report.to_dict()["strategies"]["single"]
    from extraction.plotting import probe_accuracy_figure

    traces = probe_accuracy_figure(report).data
    assert [trace.type for trace in traces if trace.type == "bar"] == ["bar", "bar"]
    assert not any("lm_head" in trace.name for trace in traces)  # no diamonds without single-token labels


def test_summaries_follow_the_numbers(tiny_report):
    assert "reference" in tiny_report.strategies["single"].summary()
    assert "match single-sample extraction" in tiny_report.strategies["right"].summary()
    naive = tiny_report.strategies["right-naive"]
    assert f"{naive.corrupted_test_fraction:.0%} of its test states differ" in naive.summary()
    assert f"gap {100 * naive.gap:+.1f} points" in naive.summary()


def test_feature_cache_extracts_each_strategy_once(tiny_llama, monkeypatch):
    import extraction.probing.features as probe_module

    calls = []
    real_extract = probe_module.extract_states

    def counting_extract(loaded, tokenized, strategy, *args, **kwargs):
        calls.append(strategy)
        return real_extract(loaded, tokenized, strategy, *args, **kwargs)

    monkeypatch.setattr(probe_module, "extract_states", counting_extract)
    data, cache = ending_word_data(16), {}
    first = run_probe(tiny_llama, data, "right-naive", layer=0, batch_size=4, feature_cache=cache)
    assert calls == ["single", "right-naive"]
    second = run_probe(tiny_llama, data, "right-naive,packed-naive", layer=0, batch_size=4, feature_cache=cache)
    assert calls == ["single", "right-naive", "packed-naive"]
    assert second.strategies["right-naive"].accuracy_same == first.strategies["right-naive"].accuracy_same
    assert second.strategies["right-naive"].from_cache and not second.strategies["packed-naive"].from_cache
    assert not first.strategies["right-naive"].from_cache
    run_probe(tiny_llama, data, "right-naive", layer=0, batch_size=2, feature_cache=cache)
    assert calls[3:] == ["single", "right-naive"]  # another batch size is another extraction


def test_probe_figure_draws_the_report(tiny_report):
    from extraction.plotting import probe_accuracy_figure

    figure = probe_accuracy_figure(tiny_report)
    bars = [trace for trace in figure.data if trace.type == "bar"]
    assert len(bars) == 2 and figure.layout.barmode == "group"
    frame = tiny_report.to_frame()
    assert list(bars[0].x) == list(bars[1].x) == list(frame["strategy"])
    np.testing.assert_allclose(bars[0].y, frame["accuracy_same"])
    np.testing.assert_allclose(bars[1].y, frame["accuracy_single"])
    (diamonds,) = [trace for trace in figure.data if trace.type == "scatter" and trace.mode == "markers"]
    np.testing.assert_allclose(diamonds.y, frame["lm_head_accuracy"])
    assert "validation" in bars[0].name and "inference" in bars[1].name


# --- the command ---------------------------------------------------------------------------


def write_csv(path, data: LabelledTexts):
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(data.texts, data.labels, strict=True))
    return path


def test_probe_command_prints_table_and_writes_json(tmp_path, capsys):
    data_file = write_csv(tmp_path / "data.csv", ending_word_data(24))
    out = tmp_path / "out" / "probe.json"
    code = main(
        [
            "probe",
            "--model",
            "tiny-random-llama",
            "--data",
            str(data_file),
            "--strategies",
            "right-naive",
            "--layers",
            "0,-1",
            "--seeds",
            "3",
            "--batch-size",
            "4",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in printed and "single acc" in printed
    assert [line.split()[0] for line in printed.splitlines() if line[:5].strip() in ("0", "4")] == ["0", "4"]
    report = json.loads(out.read_text())
    assert report["seeds"] == 3 and report["seed_values"] == [0, 1, 2]
    assert set(report["layers"]) == {"0", "4"}
    for layer in report["layers"].values():
        assert set(layer) == {"single", "right-naive"}
        for record in layer.values():
            assert 0.0 <= record["accuracy_same"] <= 1.0 and 0.0 <= record["accuracy_single"] <= 1.0
            assert record["gap_low"] <= record["gap"] <= record["gap_high"]
            assert record["gap"] == pytest.approx(record["accuracy_same"] - record["accuracy_single"])
    assert "lm_head_accuracy" in report["layers"]["4"]["right-naive"]
    assert "lm_head_accuracy" not in report["layers"]["0"]["right-naive"]
    assert "seconds" in report and set(report["extraction_seconds"]) == {"single", "right-naive"}


def test_probe_command_on_a_builtin_set_by_name(capsys, monkeypatch):

    calls = []
    real = extraction.probing.labelled.builtin_dataset

    def first_rows(name="sentiment"):
        calls.append(name)
        full = real(name)
        return LabelledTexts(full.texts[:12] + full.texts[-12:], full.labels[:12] + full.labels[-12:], full.source)

    monkeypatch.setattr(extraction.probing.labelled, "builtin_dataset", first_rows)
    argv = ["probe", "--model", "tiny-random-llama", "--strategies", "right", "--layers", "-1", "--seeds", "2"]
    assert main([*argv, "--dataset", "sentiment"]) == 0
    assert calls == ["sentiment"] and "sentiment_demo.csv" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:  # argparse's choices
        main(["probe", "--dataset", "nonsense"])
    assert exited.value.code == 2 and "invalid choice: 'nonsense'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label\n" + "".join(f"t{i},same\n" for i in range(8)), "only one class"),
        ("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(4)), "too few rows"),
        ("words,label\nhello,a\n", "missing column"),
    ],
)
def test_probe_command_input_errors(tmp_path, capsys, content, message):
    data_file = tmp_path / "bad.csv"
    data_file.write_text(content)
    out = tmp_path / "probe.json"
    code = main(["probe", "--model", "tiny-random-llama", "--data", str(data_file), "--json", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_probe_command_bad_layer(tmp_path, capsys):
    data_file = write_csv(tmp_path / "data.csv", ending_word_data(16))
    assert main(["probe", "--model", "tiny-random-llama", "--data", str(data_file), "--layers", "9"]) == 2
    assert "layer 9 out of range" in capsys.readouterr().err
    assert main(["probe", "--model", "tiny-random-llama", "--data", str(data_file), "--layers", "3,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["probe", "--data", str(data_file), "--seeds", "0"]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
