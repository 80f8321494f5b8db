"""The defects real pipelines have beyond padding reads (issue 21), each made the way a user
writes it with plain transformers (tests/third_party.py), on both tiny architectures: the
audit's verdict, ``likely_cause``, ``cause_kind`` and the evidence's key numbers."""

import json

import pytest
import torch

from extraction.audit import CAUSES, audit_states
from extraction.audit.layers import convention_words
from extraction.audit.order import sorted_order
from extraction.chat import format_texts
from extraction.cli import main
from extraction.samples import SAMPLE_TEXTS
from extraction.texts import tokenize_texts
from extraction.verdicts import CAUSE_KINDS
from tests import third_party

# 12 texts of 1 to 62 tokens (SmolLM2's tokenizer, shared by the tiny models).
TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:2]]


def _audit(loaded, stored, texts=TEXTS):
    report = audit_states(loaded, texts, stored)
    data = json.loads(json.dumps(report.to_dict()))  # the JSON contract, as written
    assert data["likely_cause"] in CAUSES and data["cause_kind"] in CAUSE_KINDS
    if data["likely_cause"] != "unknown":
        assert data["cause_kind"] != "unknown", data["cause"]
    best = next((h for h in data["hypotheses"] if h["name"] == data["likely_cause"]), None)
    return data, best


def test_right_padding_without_an_attention_mask_is_right_naive(tiny_model):
    stored = third_party.unmasked_right_padded_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, 4)
    data, best = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "right-naive", "pad-state")
    assert best["evidence"]["attention_mask"] is False
    assert 4 in best["evidence"]["consistent_batch_sizes"]["input order"]


def test_texts_sorted_by_length_and_never_restored_is_order(tiny_model):
    stored = third_party.length_sorted_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, 4)
    data, best = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "order", "other-row")
    lengths = tokenize_texts(tiny_model.tokenizer, TEXTS).lengths
    sorted_texts = sorted(range(len(TEXTS)), key=lambda i: lengths[i])
    moved = {t: row for row, t in enumerate(sorted_texts) if row != t}
    assert best["evidence"]["sorted_by_length"] == "ascending"
    assert best["evidence"]["rows_moved"] == len(moved)
    assert best["evidence"]["row_of_text"] == {str(t): r for t, r in sorted(moved.items())}


@pytest.mark.parametrize("side", ["right", "left"])
def test_truncation_to_8_tokens_is_truncated_with_its_length_and_side(tiny_model, side):
    stored = third_party.truncated_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, 8, side=side)
    data, best = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "truncated", "other-tokens")
    assert best["evidence"]["max_length"] == 8 and best["evidence"]["side"] == side
    longer = sum(n > 8 for n in tokenize_texts(tiny_model.tokenizer, TEXTS).lengths)
    assert best["evidence"]["texts_longer"] == longer and best["evidence"]["all_longer_differ"]


def test_an_extra_bos_is_special_tokens(tiny_model):
    stored = third_party.prepended_token_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1)
    data, best = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == (
        "corrupted",
        "special-tokens",
        "other-tokens",
    )
    edit = best["evidence"]["edit"]
    assert edit == {"change": "added", "where": "start", "token": "<|im_start|>", "token_id": 1}
    assert "BOS" in best["detail"]


def test_chat_formatted_with_the_generation_prompt_is_chat_template_and_audits_exact_with_the_flag(tiny_model):
    texts = TEXTS[:6]
    stored = third_party.chat_formatted_states(tiny_model.model, tiny_model.tokenizer, texts, -1, True)
    data, best = _audit(tiny_model, stored, texts)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "chat-template", "other-tokens")
    evidence = best["evidence"]
    assert (evidence["variant"], evidence["audit_with"]) == (
        "chat+generation-prompt",
        "--chat-template --generation-prompt",
    )
    assert evidence["variant_words"] == "chat template, system turn included, generation prompt added"
    formatted = format_texts(texts, tiny_model.tokenizer, as_chat=True, generation_prompt=True)
    assert audit_states(tiny_model, formatted, stored).verdict == "exact"
    # Audited with --chat-template but without the generation prompt: the prompt is what is missing.
    data, best = _audit(tiny_model, stored, format_texts(texts, tiny_model.tokenizer, as_chat=True))
    assert data["likely_cause"] == "chat-template" and best["evidence"]["variant"] == "generation-prompt-added"


def test_a_reused_buffer_is_duplicate_rows(tiny_model):
    stored = third_party.reused_buffer(third_party.plain_last_states(tiny_model, TEXTS), [4, 5, 6, 7, 8])
    data, best = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "duplicate-rows", "other-row")
    assert best["evidence"]["groups"] == [[4, 5, 6, 7, 8]] and best["evidence"]["bit_exact"] is True
    assert best["evidence"]["own_row_of_group"] == {"4": 4} and best["rows_reproduced"] == [5, 6, 7, 8]


def test_transformer_lens_defaults_name_the_pad_read_and_list_the_bos(tiny_model):
    stored = third_party.transformer_lens_default_states(tiny_model.model, tiny_model.tokenizer, TEXTS, -1, 4)
    data, best = _audit(tiny_model, stored)
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "right-naive", "pad-state")
    assert best["evidence"]["attention_mask"] is False
    assert 4 in best["evidence"]["consistent_batch_sizes"]["input order"]
    assert best["evidence"]["also"] == [
        {
            "name": "special-tokens",
            "cause_kind": "other-tokens",
            "edit": {"change": "added", "where": "start", "token": "<|im_start|>", "token_id": 1},
        }
    ]


def test_texts_concatenated_without_resetting_positions_are_packed_naive(tiny_model):
    tokenizer = tiny_model.tokenizer
    rows = []
    for start in range(0, len(TEXTS), 3):  # packs of 3 texts: torch.cat of their ids, one forward pass
        ids = [tokenizer(text)["input_ids"] for text in TEXTS[start : start + 3]]
        with torch.no_grad():
            hidden = tiny_model.model(torch.tensor([sum(ids, [])]), output_hidden_states=True).hidden_states[-1][0]
        ends = torch.tensor([len(i) for i in ids]).cumsum(0) - 1
        rows.append(hidden[ends].float())
    data, best = _audit(tiny_model, torch.cat(rows))
    assert (data["verdict"], data["likely_cause"], data["cause_kind"]) == ("corrupted", "packed-naive", "cross-text")
    assert best["evidence"]["position_ids_reset"] is False and 3 in best["evidence"]["consistent_pack_sizes"]


def test_pre_norm_and_wrong_layer_have_a_cause_kind(tiny_llama):
    captured = []
    handle = tiny_llama.final_norm.register_forward_pre_hook(lambda m, a: captured.append(a[0][0, -1].float()))
    third_party.plain_last_states(tiny_llama, TEXTS[:6])
    handle.remove()
    data, _ = _audit(tiny_llama, torch.stack(captured), TEXTS[:6])
    assert (data["likely_cause"], data["cause_kind"]) == ("pre-norm", "other-layer")
    with torch.no_grad():  # nnsight's layers[1].output is hidden_states[2], stored as layer 1
        ids = [torch.tensor([tiny_llama.tokenizer(t)["input_ids"]]) for t in TEXTS[:6]]
        stored = torch.stack([tiny_llama.model(i, output_hidden_states=True).hidden_states[2][0, -1] for i in ids])
    report = audit_states(tiny_llama, TEXTS[:6], stored, layer=1)
    assert (report.likely_cause, report.cause_kind) == ("wrong-layer", "other-layer")
    assert "stored as hidden_states[1], it is hidden_states[2]: the output of decoder layer 1 counted from 0" in (
        report.cause
    )
    assert "nnsight `layers[1]`" in report.cause


def test_sorted_order_and_layer_words_by_hand():
    lengths = [5, 2, 9, 2]
    assert sorted_order(lengths, {0: 2, 1: 0, 2: 3, 3: 1}) == "ascending"
    assert sorted_order(lengths, {0: 1, 1: 3, 2: 0, 3: 2}) == "descending"
    assert sorted_order(lengths, {0: 0, 1: 1, 2: 2, 3: 3}) is None
    assert convention_words(12, 13).startswith("stored as hidden_states[12], it is hidden_states[13]: the output")
    assert "the embeddings" in convention_words(3, 0)


def test_generation_prompt_without_a_template_is_a_one_line_error(tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("Hello there.\n")
    states = tmp_path / "states.pt"
    torch.save(torch.zeros(1, 16), states)
    code = main(
        ["audit", "--model", "tiny-random-llama", "--texts", str(texts), "--states", str(states), "--generation-prompt"]
    )
    err = capsys.readouterr().err
    assert code != 0 and "--generation-prompt" in err and "Traceback" not in err


def test_the_defect_picture_shows_the_added_token_the_cut_and_the_pads():
    from extraction.audit import Hypothesis
    from extraction.plotting import defect_tokens

    def made(name, evidence):
        return Hypothesis(name, "t", "reproduced", 1.0, 0.5, [2], [2], "d", evidence, "other-tokens")

    tokens = ["a", "b", "c", "d"]
    added = made("special-tokens", {"edit": {"change": "added", "where": "start", "token": "<s>", "token_id": 1}})
    assert defect_tokens(added, tokens) == [
        ("<s>", "added"),
        ("a", "text"),
        ("b", "text"),
        ("c", "text"),
        ("d", "text"),
    ]
    cut = made("truncated", {"max_length": 3, "side": "left"})
    assert [role for _, role in defect_tokens(cut, tokens)] == ["cut", "text", "text", "text"]
    padded = made(
        "right-naive", {"padded_length_by_row": {"2": 6}, "also": [{"name": "special-tokens", **added.evidence}]}
    )
    assert [role for _, role in defect_tokens(padded, tokens)] == ["added", "text", "text", "text", "text", "pad"]
    assert defect_tokens(made("order", {}), tokens) is None
