"""Smoke test of the benchmark's code paths on tiny-random-llama: structure, never timings."""

import json

import pytest
import torch

import bench
from bench.__main__ import main
from extraction.strategies import STRATEGIES
from extraction.texts import tokenize_texts

MODEL = "tiny-random-llama"
CORRUPTED_ON_LLAMA = {"right-naive", "packed-naive"}


@pytest.fixture(autouse=True)
def choice_cache(tmp_path, monkeypatch):
    """auto's remembered decisions (the peers' "this project") go to a fresh file, not the user's cache."""
    monkeypatch.setenv("PADDING_AUDIT_CHOICES", str(tmp_path / "strategy-choices.json"))


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    assert tiny_llama.name == MODEL
    return tiny_llama


@pytest.fixture(scope="module")
def tokenized(loaded):
    return tokenize_texts(loaded.tokenizer, bench.benchmark_texts(loaded.tokenizer, 12, 5, 40, seed=3))


def test_texts_are_seeded_and_within_the_token_range(loaded):
    texts = bench.benchmark_texts(loaded.tokenizer, 20, 5, 60, seed=1)
    assert texts == bench.benchmark_texts(loaded.tokenizer, 20, 5, 60, seed=1)
    assert texts != bench.benchmark_texts(loaded.tokenizer, 20, 5, 60, seed=2)
    lengths = tokenize_texts(loaded.tokenizer, texts).lengths
    assert min(lengths) >= 5 and max(lengths) <= 60
    assert len(set(lengths)) > 5  # spread, not one length
    with pytest.raises(ValueError, match="min_tokens"):
        bench.benchmark_texts(loaded.tokenizer, 3, 10, 5)


def test_spread_subset_keeps_the_extremes():
    lengths = [7, 3, 9, 1, 5, 8, 2]
    rows = bench.spread_subset(lengths, 3)
    assert rows == sorted(set(rows)) and len(rows) == 3
    assert lengths.index(1) in rows and lengths.index(9) in rows
    assert bench.spread_subset(lengths, 10) == list(range(7))


def test_body_parameters_match_the_llama_formula(loaded):
    c = loaded.config
    d, inner, kv = (
        c.hidden_size,
        c.intermediate_size,
        c.num_key_value_heads * (d_head := c.hidden_size // c.num_attention_heads),
    )
    attention = d * c.num_attention_heads * d_head * 2 + d * kv * 2  # q, o and k, v projections (no bias)
    per_layer = attention + 3 * d * inner + 2 * d  # gate, up, down, two norms
    assert bench.body_parameters(loaded.model) == c.num_hidden_layers * per_layer + d  # + the final norm
    flops = bench.useful_flops(10, 4, 100, real_tokens=7, num_texts=2)
    assert flops == 2 * 10 * 7 + 2 * 4 * 100 * 2


def test_sgemm_rate_is_positive():
    assert bench.sgemm_gflops(size=64, repeats=2) > 0


def test_time_strategies_times_the_exact_ones_only(loaded, tokenized):
    timings, not_timed = bench.time_strategies(
        loaded, tokenized, list(STRATEGIES), sgemm=100.0, batch_size=4, single_texts=5, check_texts=4
    )
    names = [t.name for t in timings]
    assert names[0] == "single" and timings[0].texts == 5 and timings[0].ratio_to_single == 1.0
    assert set(not_timed) == CORRUPTED_ON_LLAMA
    assert set(names) == set(STRATEGIES) - CORRUPTED_ON_LLAMA
    for timing in timings[1:]:
        assert timing.texts == len(tokenized) and timing.real_tokens == sum(tokenized.lengths)
        assert timing.exact and timing.min_cosine_vs_single >= bench.BENCH_EXACT_COSINE
        assert 0 <= timing.pad_fraction < 1 and timing.computed_positions >= timing.real_tokens
        assert timing.sgemm_fraction == pytest.approx(timing.useful_gflops / 100.0)
    by_name = {t.name: t for t in timings}
    assert by_name["bucketed"].pad_fraction == 0 and by_name["packed"].pad_fraction == 0
    assert by_name["sorted"].pad_fraction <= by_name["right"].pad_fraction


def test_child_processes_report_time_and_memory(loaded, tmp_path):
    cold = bench.cold_start(MODEL, cache=True, repeats=1)
    assert "error" not in cold, cold
    assert len(cold["runs"]) == 1  # the figures are timings: present, never compared here
    assert all(isinstance(cold[key], float) for key in ("load_seconds", "process_seconds", "ready_seconds"))
    memory = bench.memory_report(
        MODEL, loaded.tokenizer, loaded.num_hidden_layers, loaded.hidden_size, "sorted", batch_size=4,
        counts=(8,), baseline_texts=4, max_tokens=30, baseline_repeats=1,
    )  # fmt: skip
    assert "error" not in memory, memory
    (run,) = memory["runs"]
    assert run["texts"] == 8 and run["how"] in ("extract command", "extract_states")
    assert run["rows_bytes"] == 8 * (loaded.num_hidden_layers + 1) * loaded.hidden_size * 4
    assert 0 < run["peak_bytes"] <= run["peak_rss_bytes"]
    assert run["estimate_bytes"] == memory["model_and_batch_bytes"] + run["rows_bytes"]
    texts = bench.benchmark_texts(loaded.tokenizer, 2, 5, 10)
    failed = bench.measure_extract_memory("no-such-model-here", texts, "sorted", batch_size=4, workdir=tmp_path)
    assert "failed" in failed["error"]


def test_run_benchmark_report_and_cli_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "--model", MODEL, "--texts", "10", "--max-tokens", "40", "--single-texts", "4", "--check-texts", "3",
            "--batch-size", "4", "--sgemm-size", "64", "--skip", "cold-start,memory,end-to-end", "--peer-texts", "6",
            "--short-layer", "2", "--short-texts", "8", "--short-repeats", "1",
            "--json", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "targets:" in printed and "app comparison" in printed
    data = json.loads(out.read_text())
    assert data["texts"]["count"] == 10 and data["texts"]["max_tokens"] <= 40
    assert [t["name"] for t in data["timings"]][0] == "single"
    assert data["best"] in {t["name"] for t in data["timings"]} - {"single"}
    assert set(data["app_comparison"]["verdicts"]) == set(STRATEGIES)
    assert {"extraction_seconds", "seconds"} <= set(data["app_comparison"])
    assert data["targets"]["app_comparison_seconds"]["met"] in (True, False)
    assert data["targets"]["ready_seconds_with_cache"]["met"] is None  # skipped: not measured
    assert data["cold_start"] == {} and data["memory"] == {} and data["end_to_end"] == {}
    assert [p["name"] for p in data["peers"]] == ["this project", *bench.PEERS]
    assert data["targets"]["ratio_to_fastest_peer"]["met"] in (True, False)
    assert data["targets"]["auto_speedup_160_texts"]["met"] is None  # skipped: not measured
    short = data["shortened_pass"]
    assert short["texts"] == 8 and short["layer"] == 2 and short["layer_rows_identical"] is True
    assert short["forward_pass_layer"]["blocks_run"] == 2 and not short["forward_pass_layer"]["lm_head_run"]
    assert short["forward_pass_all"]["blocks_run"] == short["num_layers"] and "shortened pass" in printed
    assert data["targets"]["shortened_pass_speedup"]["met"] in (True, False)


def test_cli_rejects_bad_options_in_one_line(capsys):
    assert main(["--model", MODEL, "--texts", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--texts" in err[0]
    with pytest.raises(SystemExit):
        main(["--skip", "everything"])


def test_min_cosine_is_over_texts_and_layers():
    reference = torch.ones(2, 3, 4)
    rows = reference.clone()
    rows[1, 2] = torch.tensor([1.0, -1.0, 1.0, -1.0])
    assert bench.min_cosine(rows, reference) == pytest.approx(0.0)
    assert bench.min_cosine(reference, reference) == pytest.approx(1.0)


def test_peers_give_last_token_states_of_every_layer(loaded):
    texts = bench.benchmark_texts(loaded.tokenizer, 6, 3, 30, seed=4)
    timings = bench.time_peers(loaded, texts, sgemm=100.0)
    assert [t.name for t in timings] == ["this project", *bench.PEERS]
    ours = timings[0]
    assert ours.strategy in STRATEGIES and ours.slower_than_ours == 1.0
    by_name = {t.name: t for t in timings}
    # On a RoPE model every peer reads the right rows (left padding only shifts positions).
    for timing in timings:
        assert timing.texts == 6 and timing.min_cosine_vs_single > 0.9999, timing.name
        assert timing.slower_than_ours == pytest.approx(timing.ms_per_text / ours.ms_per_text)
    assert set(by_name) == {"this project", *bench.PEERS}


def test_peers_that_read_the_wrong_row_show_it(tiny_gpt2):
    texts = bench.benchmark_texts(tiny_gpt2.tokenizer, 6, 3, 30, seed=4)
    timings = {t.name: t for t in bench.time_peers(tiny_gpt2, texts, sgemm=100.0, peers=["left-padding"])}
    # Left padding without position ids shifts GPT-2's absolute positions: the rows differ.
    assert timings["left-padding"].min_cosine_vs_single < 0.99
    assert timings["this project"].min_cosine_vs_single > 0.9999


def test_end_to_end_runs_the_command_both_ways(loaded):
    texts = bench.benchmark_texts(loaded.tokenizer, 6, 3, 20, seed=5)
    result = bench.end_to_end(MODEL, texts, counts=[6], extra_args=["--verify", "2"])
    assert "error" not in result, result
    (run,) = result["runs"]
    assert run["texts"] == 6
    assert run["speedup_cold"] == pytest.approx(run["single_seconds"] / run["auto_cold_seconds"])
    assert isinstance(run["choice_seconds_cold"], float) and isinstance(run["auto_cold_seconds"], float)
    failed = bench.end_to_end("no-such-model-here", texts, counts=[6])
    assert "failed" in failed["error"]


def test_gpu_suite_runs_without_gguf_plotly_or_streamlit(loaded, tmp_path):
    """The GPU suite's whole path on CPU with --tiny, in a process where gguf, plotly and
    streamlit cannot be imported (the lent GPU machine has none of them)."""
    import subprocess
    import sys

    assets = tmp_path / "assets"
    loaded.config.save_pretrained(assets)
    loaded.tokenizer.save_pretrained(assets)
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "for name in ('gguf', 'plotly', 'streamlit'): sys.modules[name] = None\n"
        "from bench.gpu import main\n"
        f"sys.exit(main(['--device', 'cpu', '--tiny', '--assets', {str(assets)!r}, '--out', {str(out)!r}, "
        f"'--workdir', {str(tmp_path / 'work')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=bench.child_env(),
                          cwd=bench.REPO_ROOT, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "gpu-bench.json").read_text())
    assert results["tiny"] and [(r["model"], r["dtype"]) for r in results["runs"]] == [
        ("smollm2-135m-config", "float32"),
        ("smollm2-135m-config", "bfloat16"),
    ]
    for run in results["runs"]:
        assert "error" not in run, run["error"]
        assert run["throughput"][0]["name"] == "single"
        assert [p["name"] for p in run["peers"]] == ["this project", *bench.PEERS]
