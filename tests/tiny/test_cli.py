"""The command line: output, JSON schema, and one-line errors with non-zero exit codes."""

import json
import subprocess
import sys

import pytest

from extraction.cli import main
from extraction.samples import SAMPLE_TEXTS


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(SAMPLE_TEXTS[:6]) + "\n", encoding="utf-8")
    return path


def test_compare_prints_table_and_writes_json(texts_file, tmp_path, capsys):
    out = tmp_path / "out" / "report.json"
    code = main(
        ["compare", "--model", "tiny-random-gpt2", "--texts", str(texts_file), "--batch-size", "3", "--json", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in printed and "left-naive" in printed and "corrupted" in printed
    data = json.loads(out.read_text())
    assert data["model"] == "tiny-random-gpt2" and data["dtype"] == "float32"
    assert set(data["strategies"]) == {
        "single",
        "right-naive",
        "right",
        "left-naive",
        "left",
        "bucketed",
        "sorted",
        "packed",
        "packed-naive",
    }
    for record in data["strategies"].values():
        assert record["verdict"] in ("exact", "drift", "corrupted")
        assert isinstance(record["cause"], str) and record["cause"]
        assert len(record["per_layer_min_cosine"]) == data["num_layers"]
        assert 0.0 <= record["top1_agreement"] <= 1.0
    assert data["strategies"]["left-naive"]["verdict"] == "corrupted"
    assert data["strategies"]["left"]["verdict"] == "exact"
    assert data["strategies"]["left-naive"]["cause_kind"] == "position-shift"
    assert data["strategies"]["right-naive"]["cause_kind"] == "pad-state"
    assert data["strategies"]["left"]["cause_kind"] == "none"


def test_compare_subset_of_strategies(texts_file, capsys):
    assert (
        main(["compare", "--model", "tiny-random-llama", "--texts", str(texts_file), "--strategies", "left-naive"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("left-naive") and " exact " in line for line in lines)
    assert not any(line.startswith("right ") for line in lines)


def test_compare_mean_pooling_json(texts_file, tmp_path, capsys):
    out = tmp_path / "mean.json"
    argv = ["compare", "--model", "tiny-random-gpt2", "--texts", str(texts_file), "--batch-size", "3"]
    assert main([*argv, "--pooling", "mean", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pooling mean" in printed
    data = json.loads(out.read_text())
    assert data["pooling"] == "mean"
    assert data["strategies"]["right-naive"]["cause_kind"] == "pad-state"
    assert data["strategies"]["left-naive"]["verdict"] == "corrupted"
    assert data["strategies"]["right"]["verdict"] == "exact"
    assert all(record["top1_agreement"] is None for record in data["strategies"].values())


def test_an_unknown_pooling_is_a_usage_error(texts_file, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--model", "tiny-random-llama", "--texts", str(texts_file), "--pooling", "max"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'max'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--texts", "missing.txt"], "no such file"),
        (["--strategies", "left,sideways"], "unknown strategy 'sideways'"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--model", "no-such-org/no-such-model"], "could not load"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(texts_file, capsys, args, message):
    argv = ["compare", "--model", "tiny-random-llama", "--texts", str(texts_file), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_module_entry_point_has_no_traceback(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("body\nx\n")
    proc = subprocess.run(
        [sys.executable, "-m", "extraction", "compare", "--model", "tiny-random-llama", "--texts", str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no 'text' column" in proc.stderr


def test_json_output_gets_a_normal_files_mode(tmp_path):
    import os

    from extraction.storage.atomic import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
