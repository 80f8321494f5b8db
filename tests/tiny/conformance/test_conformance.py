"""The conformance matrix on a handful of architectures, each cell checked against plain transformers.

One architecture a kind: learned absolute positions (gpt2), rotary (llama), ALiBi (bloom),
a sliding window (mistral), a state-space model (mamba), mixture of experts (mixtral). The
independent computation below uses only the tokenizer and the model: padded batches built
with the tokenizer's own padding, run with plain calls, read where each strategy reads,
and compared with one text at a time. It shares no code with extraction's strategies,
extraction or comparison.
"""

from __future__ import annotations

import json

import pytest
import torch

from extraction.comparison.choose import choose_strategy
from extraction.conformance.matrix import MATRIX_STRATEGIES, run_architecture
from extraction.models import load_model
from extraction.texts import tokenize_texts
from extraction.verdicts import CAUSE_KINDS, FLOAT32_ROUNDING_RELATIVE_L2, VERDICTS

KINDS = ["gpt2", "llama", "bloom", "mistral", "mamba", "mixtral"]
# 2, 11 and 14 tokens: the longest two are longer than the tiny sliding window (8).
TEXTS = [
    "Hi there.",
    "The cat sat quietly on the warm mat by the door.",
    "Padding is harmless only when every position.",
]


@pytest.fixture(scope="module", params=KINDS)
def measured(request):
    model_type = request.param
    row = run_architecture(model_type, TEXTS, poolings=("last", "mean"))
    assert row.error is None, row.error
    loaded = load_model(f"tiny-random:{model_type}", attn_implementation=row.attn_implementation)
    return model_type, row, loaded


def _states(model, **inputs) -> torch.Tensor:
    """(L, B, T, d) every hidden state of a plain forward call."""
    with torch.no_grad():
        return torch.stack(model(**inputs, output_hidden_states=True).hidden_states)


def _relative_l2(got: torch.Tensor, want: torch.Tensor) -> float:
    """max over texts and layers of |got - want| / |want|; got, want: (N, L, d)."""
    return float(((got - want).norm(dim=-1) / want.norm(dim=-1)).max())


def _independent(loaded, pooling: str) -> dict[str, float | None]:
    """Strategy -> max relative L2 to one text at a time (None: the model refused the inputs)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = [tokenizer(text)["input_ids"] for text in TEXTS]

    def pool(states: torch.Tensor, row: int, columns: list[int]) -> torch.Tensor:  # (L, d)
        return states[:, row, columns].mean(1) if pooling == "mean" else states[:, row, columns[-1]]

    alone = torch.stack(
        [pool(_states(model, input_ids=torch.tensor([t])), 0, list(range(len(t)))) for t in ids]
    )  # (N, L, d)
    results: dict[str, float | None] = {}
    for side in ("right", "left"):
        tokenizer.padding_side = side
        batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
        mask, width = batch["attention_mask"], batch["attention_mask"].shape[1]
        real = [mask[row].nonzero().flatten().tolist() for row in range(len(TEXTS))]
        runs = {f"{side}-naive": _states(model, **batch)}
        if side == "left":
            runs["left"] = _states(model, **batch, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        else:
            runs["right"] = runs["right-naive"]
        for name, states in runs.items():
            columns = list(range(width)) if name == "right-naive" else None
            results[name] = _relative_l2(
                torch.stack([pool(states, row, columns or real[row]) for row in range(len(TEXTS))]), alone
            )
    tokenizer.padding_side = "right"
    packed = torch.tensor([[t for text in ids for t in text]])
    positions = torch.tensor([[p for text in ids for p in range(len(text))]])
    segments = torch.tensor([k for k, text in enumerate(ids) for _ in text])
    spans = [list(range(int(s), int(e))) for s, e in zip(*_bounds(ids), strict=True)]
    allowed = (segments[:, None] == segments[None, :]) & torch.ones(len(segments), len(segments)).tril().bool()
    block = torch.zeros(1, 1, *allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    for name, mask in (("packed-naive", torch.ones_like(packed)), ("packed", block)):
        try:
            states = _states(model, input_ids=packed, position_ids=positions, attention_mask=mask)
        except Exception:  # noqa: BLE001 - this model cannot take the layout: the matrix must skip it
            results[name] = None
            continue
        results[name] = _relative_l2(torch.stack([pool(states, 0, span) for span in spans]), alone)
    return results


def _bounds(ids):
    ends = torch.tensor([len(t) for t in ids]).cumsum(0)
    return ends - torch.tensor([len(t) for t in ids]), ends


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_each_cell_agrees_with_plain_transformers(measured, pooling):
    model_type, row, loaded = measured
    independent = _independent(loaded, pooling)
    for name, relative_l2 in independent.items():
        cell = row.cells[pooling][name]
        where = (model_type, pooling, name, cell.verdict, cell.cause, relative_l2)
        if relative_l2 is None:
            assert cell.verdict == "skipped", where
            continue
        assert cell.verdict != "skipped", where
        assert (cell.verdict == "exact") == (relative_l2 <= FLOAT32_ROUNDING_RELATIVE_L2), where
        if relative_l2 > FLOAT32_ROUNDING_RELATIVE_L2:
            assert cell.max_relative_l2 == pytest.approx(relative_l2, rel=1e-3), where
            assert cell.cause_kind not in ("none", "rounding", "kernels"), where  # beyond float32 rounding


def test_bucketed_and_sorted_are_exact_everywhere(measured):
    _, row, _ = measured
    for pooling in ("last", "mean"):
        assert row.cells[pooling]["bucketed"].verdict == "exact"
        assert row.cells[pooling]["sorted"].verdict == "exact"


def test_auto_picks_a_layout_the_matrix_finds_exact(measured, tmp_path):
    model_type, row, loaded = measured
    tokenized = tokenize_texts(loaded.tokenizer, TEXTS)
    choice = choose_strategy(loaded, tokenized, remember=False, cache_path=tmp_path / "c.json")
    assert choice.name == "single" or row.cells["last"][choice.name].verdict == "exact", (model_type, choice.why)


def test_the_json_contract(measured):
    model_type, row, _ = measured
    from extraction.conformance.matrix import ConformanceMatrix

    matrix = ConformanceMatrix(TEXTS, {model_type: row}, list(MATRIX_STRATEGIES), ["last", "mean"])
    data = json.loads(json.dumps(matrix.to_dict()))
    assert set(data) == {"versions", "texts", "settings", "seconds", "architectures"}
    assert {"transformers", "torch"} <= set(data["versions"])
    assert data["texts"] == TEXTS
    entry = data["architectures"][model_type]
    assert set(entry) == {
        "error",
        "attn_implementation",
        "class",
        "seconds",
        "reads_position_ids",
        "reads_attention_mask",
        "pooling",
    }
    assert ConformanceMatrix.from_dict(data).to_dict()["architectures"] == data["architectures"]
    assert entry["error"] is None
    assert set(entry["pooling"]) == {"last", "mean"}
    for cells in entry["pooling"].values():
        assert list(cells) == list(MATRIX_STRATEGIES)
        for cell in cells.values():
            assert set(cell) == {"verdict", "cause_kind", "cause", "max_relative_l2"}
            assert cell["verdict"] in (*VERDICTS, "skipped")
            assert cell["cause_kind"] in (*CAUSE_KINDS, None)
            assert isinstance(cell["cause"], str) and cell["cause"]


def test_left_out_and_unknown_types_say_why():
    from extraction.models import ModelLoadError

    row = run_architecture("bart")
    assert row.error.startswith("left out: encoder-decoder") and row.cells == {}
    assert row.to_dict()["pooling"] == {}
    with pytest.raises(ModelLoadError, match="not a causal-LM model type"):
        load_model("tiny-random:no_such_type")


def test_the_matrix_command_writes_json_and_markdown(tmp_path, capsys):
    from extraction.cli import main

    assert main(["matrix", "--architectures", "no_such_type"]) == 2
    assert "unknown architecture no_such_type" in capsys.readouterr().err
    json_out, markdown_out = tmp_path / "m.json", tmp_path / "m.md"
    assert (
        main(["matrix", "--architectures", "gpt2,bart", "--json", str(json_out), "--markdown", str(markdown_out)]) == 0
    )
    data = json.loads(json_out.read_text())
    assert list(data["architectures"]) == ["gpt2", "bart"]
    document = markdown_out.read_text()
    assert document.splitlines()[2].startswith(
        f"Generated by `python -m extraction matrix --architectures gpt2,bart --json {json_out} --markdown"
    )
    assert "transformers " in document and "torch " in document
    assert "| gpt2 | **CORRUPTED** | exact | **CORRUPTED** |" in document  # right-naive, right, left-naive


def test_auto_skips_a_block_mask_that_would_replace_the_window_and_checks_the_rest():
    from extraction.comparison.choose import _window_replaced

    loaded = load_model("tiny-random:mistral")  # sliding window of 8 tokens
    assert "window of 8 tokens" in _window_replaced(loaded, "packed", [3, 40])
    assert _window_replaced(loaded, "packed", [3, 8]) is None  # no text longer than the window
    for name in ("bucketed", "left", "sorted", "packed-naive"):
        assert _window_replaced(loaded, name, [3, 40]) is None


def test_the_audit_runs_on_a_model_whose_final_norm_runs_twice():
    from extraction.audit import audit_states
    from extraction.extract import extract_states

    loaded = load_model("tiny-random:nanochat")
    tokenized = tokenize_texts(loaded.tokenizer, TEXTS)
    stored = extract_states(loaded, tokenized, "right-naive", batch_size=3, keep_logits=False).hidden
    report = audit_states(loaded, tokenized, stored)
    assert report.verdict == "corrupted" and report.likely_cause == "right-naive"
