"""A probe of middle layers stops each pass after the deepest one (blocks counted with hooks, never
timed), gives the numbers the whole pass gives bit for bit, and says lm_head was not run; ``lm_head=True``
(``probe --lm-head``) adds the last layer and the zero-shot accuracy back."""

import json

import numpy as np
import pytest

from extraction.cli import main
from extraction.extract import lm_head_not_run
from extraction.probing.probe import run_probe
from extraction.probing.sweep import run_probe_sweep
from tests.block_calls import BlockCalls
from tests.tiny.probing.test_probe import ending_word_data

LAYERS = [1, 2]


@pytest.fixture(scope="module")
def swept(tiny_llama):
    data = ending_word_data()
    with BlockCalls(tiny_llama) as counted:
        short = run_probe_sweep(tiny_llama, data, "right-naive,right", layers="1,2", seeds=2, batch_size=4)
    whole = run_probe_sweep(tiny_llama, data, "right-naive,right", layers="1,2", seeds=2, batch_size=4, lm_head=True)
    return short, whole, counted


def test_a_sweep_of_middle_layers_stops_after_the_deepest(tiny_llama, swept):
    short, whole, counted = swept
    assert counted.calls[: max(LAYERS)] == [counted.calls[0]] * max(LAYERS) and counted.calls[0] > 0
    assert not counted.ran_beyond(max(LAYERS)) and counted.lm_head_calls == 0
    assert short.lm_head_accuracy is None and short.lm_head_layer is None
    assert short.lm_head_note == lm_head_not_run(LAYERS) == "lm_head not run: layers up to 2 asked for"
    data = json.loads(json.dumps(short.to_dict()))
    assert data["lm_head_note"] == short.lm_head_note and data["lm_head_layer"] is None


def test_the_shortened_sweep_equals_the_whole_pass_on_the_layers_probed(swept):
    short, whole, _ = swept
    assert whole.lm_head_accuracy is not None and whole.lm_head_note is None
    assert whole.lm_head_layer == 4 and short.layers == whole.layers == LAYERS
    for name in ("accuracy_same", "accuracy_single", "prediction_flips", "corrupted"):
        np.testing.assert_array_equal(getattr(short, name), getattr(whole, name))


def test_run_probe_of_a_middle_layer(tiny_llama):
    data = ending_word_data(16)
    with BlockCalls(tiny_llama) as counted:
        short = run_probe(tiny_llama, data, "right", layer=2, batch_size=4)
    assert not counted.ran_beyond(2) and counted.lm_head_calls == 0
    assert short.lm_head_note == lm_head_not_run([2]) and short.strategies["right"].lm_head_accuracy is None
    whole = run_probe(tiny_llama, data, "right", layer=2, batch_size=4, lm_head=True)
    assert whole.lm_head_note is None and whole.strategies["right"].lm_head_accuracy is not None
    for name in short.strategies:
        np.testing.assert_array_equal(short.strategies[name].features, whole.strategies[name].features)
        assert short.strategies[name].accuracy_same == whole.strategies[name].accuracy_same


def test_probe_cli_lm_head_option(tmp_path, capsys):
    data = ending_word_data(16)
    data_file = tmp_path / "data.csv"
    rows = "".join(f'"{text}","{label}"\n' for text, label in zip(data.texts, data.labels, strict=True))
    data_file.write_text("text,label\n" + rows)
    argv = ["probe", "--model", "tiny-random-llama", "--data", str(data_file), "--strategies", "right", "--layers",
            "1", "--seeds", "2", "--batch-size", "4"]  # fmt: skip
    assert main([*argv, "--json", str(tmp_path / "off.json")]) == 0
    assert "no lm_head accuracy: lm_head not run: layers up to 1 asked for" in capsys.readouterr().out
    assert main([*argv, "--lm-head", "--json", str(tmp_path / "on.json")]) == 0
    on = json.loads((tmp_path / "on.json").read_text())
    assert on["lm_head_layer"] == 4 and "lm_head not run" not in capsys.readouterr().out
