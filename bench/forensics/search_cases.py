"""Issue 29's before/after cases: each defect made with plain transformers (tests/third_party.py),
audited, one line each: model, case, verdict, likely_cause, cause_kind, the cause's evidence.

Usage (from the repository root): HF_HUB_OFFLINE=1 PYTHONPATH=. python bench/forensics/search_cases.py
tiny-random-llama,tiny-random-gpt2 [case,...]. The "before" column of docs/forensics.md ran this
script against the tree of commit c791ea8 (its tests/third_party.py replaced by this branch's).
"""

import json
import sys

import torch

from extraction.audit import audit_states
from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from tests import third_party as tp

TEXTS = [t for t in SAMPLE_TEXTS if len(t.split()) > 2] + [t + " and then some more words" for t in SAMPLE_TEXTS[:2]]


def cases(model, tokenizer) -> dict:
    """case -> (texts, stored states, audit options)."""
    correct = tp.read_at_states(model, tokenizer, TEXTS, -1, -1)
    eos = tokenizer.eos_token_id
    chat = tp.chat_texts()
    return {
        "shift1": (TEXTS, lambda: tp.shifted_rows(correct, 1), {}),
        "shift2": (TEXTS, lambda: tp.shifted_rows(correct, 2), {}),
        "read-2": (TEXTS, lambda: tp.read_at_states(model, tokenizer, TEXTS, -1, -2), {}),
        "read0": (TEXTS, lambda: tp.read_at_states(model, tokenizer, TEXTS, -1, 0), {}),
        "leftmean": (TEXTS, lambda: tp.left_padded_mean_states(model, tokenizer, TEXTS, -1, 4), {"pooling": "mean"}),
        "eos": (TEXTS, lambda: tp.edited_ids_states(model, tokenizer, TEXTS, -1, lambda ids: [*ids, eos]), {}),
        "s</s>": (TEXTS, lambda: tp.string_added_states(model, tokenizer, TEXTS, -1, suffix=" </s>"), {}),
        "query": (TEXTS, lambda: tp.string_added_states(model, tokenizer, TEXTS, -1, prefix="query: "), {}),
        "dropfirst": (chat, lambda: tp.edited_ids_states(model, tokenizer, chat, -1, lambda ids: ids[1:]), {}),
        # Wave 5: the chat template's variants, its pieces, strings no pipeline piece gives, two sources.
        "chat+system": (
            TEXTS[:6],
            lambda: tp.chat_formatted_states(model, tokenizer, TEXTS[:6], -1, True, "You are a helpful assistant."),
            {},
        ),
        "chat-nosystem": (TEXTS[:6], lambda: tp.hand_written_chat_states(model, tokenizer, TEXTS[:6], -1, True), {}),
        "im_end": (TEXTS, lambda: tp.string_added_states(model, tokenizer, TEXTS, -1, suffix="<|im_end|>\n"), {}),
        "represent": (
            TEXTS,
            lambda: tp.string_added_states(model, tokenizer, TEXTS, -1, prefix="Represent this sentence: "),
            {},
        ),
        "[END]": (TEXTS, lambda: tp.string_added_states(model, tokenizer, TEXTS, -1, suffix=" [END]"), {}),
        "bos+bf16": (
            TEXTS,
            lambda: torch.cat(
                [tp.prepended_token_states(model, tokenizer, TEXTS[:7], -1), correct[7:].bfloat16().float()]
            ),
            {},
        ),
    }


names = sys.argv[1].split(",")
wanted = sys.argv[2].split(",") if len(sys.argv) > 2 else None
for name in names:
    loaded = load_model(name)
    for case, (texts, make, options) in cases(loaded.model, loaded.tokenizer).items():
        if wanted and case not in wanted:
            continue
        report = audit_states(loaded, texts, make(), **options)
        best = report.best_hypothesis
        evidence = json.dumps(best.evidence) if best else ""
        print(f"{name}\t{case}\t{report.verdict}\t{report.likely_cause}\t{report.cause_kind}\t{evidence}"[:600])
        print("   ", report.cause[:400])
