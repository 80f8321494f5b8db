"""``extract --pooling mean|tokens``: the files equal single-text extraction under the same
pooling, the tokens file's offsets, verification under pooling, auto under pooling, the
metadata and reader round trip, the streamed writer's index, and the CLI's refusals."""

import json

import pytest
import torch
from safetensors import safe_open

from extraction.cli import main
from extraction.comparison.choose import _concat_results, _probe_verdict, choose_strategy
from extraction.extract import extract_states
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.distributed import RankInfo
from extraction.storage.export import VerificationError, extract_to_file
from extraction.storage.safetensors_writer import SafetensorsRowWriter
from extraction.storage.sharded_export import extract_to_folder
from extraction.storage.stored_states import read_states
from extraction.texts import tokenize_texts

TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:4]]


@pytest.fixture(autouse=True)
def choice_cache(tmp_path, monkeypatch):
    """auto's remembered decisions go to a fresh file per test, never the user's cache."""
    path = tmp_path / "cache" / "strategy-choices.json"
    monkeypatch.setenv("PADDING_AUDIT_CHOICES", str(path))
    return path


def _single(loaded, layers, pooling):
    tokenized = tokenize_texts(loaded.tokenizer, TEXTS, max_tokens=loaded.context_length)
    return tokenized, extract_states(loaded, tokenized, "single", layers=layers, keep_logits=False, pooling=pooling)


@pytest.mark.parametrize("strategy", ["sorted", "packed", "auto"])
def test_mean_file_equals_single_text_means(tiny_model, tmp_path, strategy):
    path = tmp_path / "mean.safetensors"
    layers = [0, 1, tiny_model.num_hidden_layers]
    result = extract_to_file(
        tiny_model, TEXTS, path, layers=layers, strategy=strategy, batch_size=4, chunk_texts=5, verify=3, pooling="mean"
    )
    _, single = _single(tiny_model, layers, "mean")
    stored = read_states(path)
    assert result.pooling == "mean" and result.shape == (len(TEXTS), 3, tiny_model.hidden_size)
    assert stored.offsets is None and stored.stored_pooling == "mean" and stored.num_texts == len(TEXTS)
    assert torch.allclose(stored.tensor, single.hidden, atol=1e-5, rtol=1e-4)
    assert result.verification.verdict == "exact" and result.verification.top1_same is None
    assert result.verification.pooling == "mean"


@pytest.mark.parametrize("strategy", ["sorted", "bucketed", "left"])
def test_tokens_file_equals_single_text_rows_with_consistent_offsets(tiny_model, tmp_path, strategy):
    path = tmp_path / "tokens.safetensors"
    layers = [1, tiny_model.num_hidden_layers]
    result = extract_to_file(
        tiny_model, TEXTS, path, layers=layers, strategy=strategy, batch_size=3, chunk_texts=4, verify=4,
        pooling="tokens",
    )  # fmt: skip
    tokenized, single = _single(tiny_model, layers, "tokens")
    stored = read_states(path)
    total = sum(tokenized.lengths)
    assert result.shape == (total, 2, tiny_model.hidden_size) == stored.shape
    assert stored.offsets.dtype == torch.int64 and len(stored.offsets) == len(TEXTS) + 1
    assert stored.offsets.diff().tolist() == tokenized.lengths  # text i owns its tokens' rows, in input order
    assert torch.equal(stored.offsets, result.offsets) and stored.num_texts == len(TEXTS)
    assert torch.allclose(stored.tensor, single.hidden, atol=1e-5, rtol=1e-4)
    assert torch.allclose(stored.rows_of(3), single.rows_of(3), atol=1e-5, rtol=1e-4)
    assert result.verification.verdict == "exact" and len(result.verification.rows) == 4


def test_right_naive_tokens_file_keeps_pad_rows_and_fails_verification(tiny_gpt2, tmp_path):
    path = tmp_path / "naive.safetensors"
    with pytest.raises(VerificationError, match="tokens pooling"):
        extract_to_file(
            tiny_gpt2, TEXTS, path, strategy="right-naive", batch_size=4, verify=len(TEXTS), pooling="tokens"
        )
    assert not path.exists()
    extract_to_file(
        tiny_gpt2, TEXTS, path, layers="2", strategy="right-naive", batch_size=4, verify=0, pooling="tokens"
    )
    tokenized = tokenize_texts(tiny_gpt2.tokenizer, TEXTS)
    stored = read_states(path)
    counts = stored.offsets.diff()
    assert stored.shape[0] == int(stored.offsets[-1]) > sum(tokenized.lengths)
    assert bool((counts >= torch.tensor(tokenized.lengths)).all()) and bool(
        (counts > torch.tensor(tokenized.lengths)).any()
    )


def test_mean_right_naive_fails_verification_with_the_relative_l2_rule(tiny_llama, tmp_path):
    path = tmp_path / "naive-mean.safetensors"
    with pytest.raises(VerificationError) as caught:
        extract_to_file(
            tiny_llama, TEXTS, path, strategy="right-naive", batch_size=4, verify=len(TEXTS), pooling="mean"
        )
    assert "corrupted" in str(caught.value) and not path.exists()


def test_metadata_round_trip(tiny_gpt2, tmp_path):
    path = tmp_path / "tokens.safetensors"
    extract_to_file(
        tiny_gpt2, TEXTS, path, layers="0,4", strategy="sorted", verify=2, pooling="tokens", store_dtype="bfloat16"
    )
    with safe_open(path, "pt") as handle:
        assert sorted(handle.keys()) == ["hidden_states", "offsets"]
        meta = handle.metadata()
        offsets = handle.get_tensor("offsets")
    assert meta["pooling"] == "tokens" and "offsets" in meta["row_order"]
    assert json.loads(meta["layers"]) == [0, 4] and json.loads(meta["verification"])["pooling"] == "tokens"
    stored = read_states(path)
    assert stored.key == "hidden_states" and stored.stored_dtype == "bfloat16" and stored.stored_layers == [0, 4]
    assert torch.equal(stored.offsets, offsets)
    # a file without pooling metadata but with offsets still reads as tokens; without either, unknown
    torch.save({"hidden_states": stored.tensor, "offsets": offsets}, tmp_path / "plain.pt")
    plain = read_states(tmp_path / "plain.pt")
    assert plain.stored_pooling == "tokens" and torch.equal(plain.offsets, offsets)
    torch.save({"hidden_states": stored.tensor}, tmp_path / "bare.pt")
    assert read_states(tmp_path / "bare.pt").stored_pooling is None
    torch.save({"hidden_states": stored.tensor, "offsets": offsets + 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="must start at 0"):
        read_states(tmp_path / "bad.pt")


def test_auto_checks_exactness_under_the_pooling(tiny_gpt2):
    tokenized = tokenize_texts(tiny_gpt2.tokenizer, TEXTS)
    for pooling in ("mean", "tokens"):
        choice = choose_strategy(tiny_gpt2, tokenized, batch_size=4, remember=False, pooling=pooling)
        chosen = next(c for c in choice.candidates if c["name"] == choice.name)
        assert chosen["verdict"] == "exact" and choice.probe_rows
        assert (choice.reference_rows is None) == (pooling == "tokens")
    # The probe's rule under pooling: a layout that stores pad rows (tokens) or counts pads
    # in the mean is not exact, however close the rows they share are.
    probe = tokenized.subset([0, 1, 5, 0])
    for pooling in ("mean", "tokens"):
        single = _concat_results(
            [extract_states(tiny_gpt2, probe.subset([k]), "single", pooling=pooling) for k in range(4)]
        )
        for name, expected in (("sorted", "exact"), ("right-naive", "corrupted")):
            result = extract_states(tiny_gpt2, probe, name, batch_size=4, pooling=pooling)
            offsets = (result.offsets, single.offsets) if pooling == "tokens" else None
            verdict = _probe_verdict(result.hidden, None, (single.hidden, None), tiny_gpt2.dtype, offsets)[0]
            assert verdict == expected, (pooling, name)


def test_auto_remembers_exactness_per_pooling(tiny_gpt2, choice_cache):
    tokenized = tokenize_texts(tiny_gpt2.tokenizer, TEXTS)
    rate = (0.005, 50e9)  # the cost model's constants, fixed: every call ranks the layouts the same way
    choose_strategy(tiny_gpt2, tokenized, batch_size=4, pooling="last", rate=rate)
    again = choose_strategy(tiny_gpt2, tokenized, batch_size=4, pooling="mean", rate=rate)
    assert not again.from_cache  # a decision under last says nothing about mean
    assert len(json.loads(choice_cache.read_text())) == 2
    assert choose_strategy(tiny_gpt2, tokenized, batch_size=4, pooling="mean", rate=rate).from_cache


def test_writer_grows_rows_and_stores_an_index_first(tmp_path):
    path = tmp_path / "grow.safetensors"
    rows = torch.arange(5 * 2 * 3, dtype=torch.float32).reshape(5, 2, 3)
    with SafetensorsRowWriter(path, "hidden_states", (0, 2, 3), grow=True, index=("offsets", 3)) as writer:
        writer.write(rows[:2])
        writer.write(rows[2:])
        assert torch.equal(writer.read_rows([4, 0]), rows[[4, 0]])
        with pytest.raises(ValueError, match="index values"):
            writer.commit()
        writer.commit(index_values=torch.tensor([0, 2, 5]))
    with safe_open(path, "pt") as handle:
        assert torch.equal(handle.get_tensor("hidden_states"), rows)
        assert handle.get_tensor("offsets").tolist() == [0, 2, 5]


def test_sharded_mean_equals_one_file_and_tokens_is_refused(tiny_llama, tmp_path):
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(TEXTS) + "\n")
    single_rank = RankInfo(rank=0, world_size=1, local_rank=0, local_world_size=1)
    result = extract_to_folder(
        tiny_llama, texts_file, tmp_path / "shards", single_rank, layers="1,2", strategy="sorted", verify=2,
        shard_texts=5, pooling="mean",
    )  # fmt: skip
    assert result.verification.verdict == "exact" and result.verification.pooling == "mean"
    folder = read_states(tmp_path / "shards")
    assert folder.stored_pooling == "mean"
    _, single = _single(tiny_llama, [1, 2], "mean")
    assert torch.allclose(folder.tensor, single.hidden, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="not supported for sharded runs"):
        extract_to_folder(tiny_llama, texts_file, tmp_path / "tok", single_rank, pooling="tokens")


def test_cli_pooling(tmp_path, capsys):
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.safetensors"
    args = ["extract", "--model", "tiny-random-gpt2", "--texts", str(texts_file), "--out", str(out), "--layers", "3"]
    assert main([*args, "--pooling", "tokens", "--strategy", "packed", "--verify", "2"]) == 0
    printed = capsys.readouterr().out
    assert "pooling: tokens" in printed and "offsets" in printed
    stored = read_states(out)
    assert stored.stored_pooling == "tokens" and stored.num_texts == len(TEXTS)
    with pytest.raises(SystemExit) as exited:
        main([*args, "--force", "--pooling", "max"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "invalid choice: 'max'" in err[-1] and "mean" in err[-1]
    assert main([*args[:-4], "--out", str(tmp_path / "folder"), "--pooling", "tokens"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "sharded" in err and "\n" not in err
