"""A pipeline as research code pinned to transformers 4.x has it, run by ``check --python`` in the
test's venv-tf4 (tests/tiny/consistency/venvs.py): the model folder is ``$PIPELINE_MODEL``. It
imports transformers and this folder's ``pipelines`` (torch only), never ``extraction``."""

import os
import sys

import torch
import transformers
from pipelines import (
    first_row_everywhere,
    packed_without_mask,
    right_padding_gathered,
    right_padding_read_at_last,
    sorted_and_not_put_back,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

FOLDER = os.environ["PIPELINE_MODEL"]
tokenizer = AutoTokenizer.from_pretrained(FOLDER)
model = AutoModelForCausalLM.from_pretrained(FOLDER, torch_dtype=torch.float32).eval()

exact = right_padding_gathered(model, tokenizer)
read_at_last = right_padding_read_at_last(model, tokenizer)
packed = packed_without_mask(model, tokenizer)
first_row = first_row_everywhere(model, tokenizer)
sorted_rows = sorted_and_not_put_back(model, tokenizer)


def where_am_i(texts):
    """Exact rows, raising unless this runs with transformers 4 and without this project."""
    if not transformers.__version__.startswith("4.") or "extraction" in sys.modules:
        imported = "extraction" in sys.modules
        raise RuntimeError(f"transformers {transformers.__version__}, extraction imported: {imported}")
    return exact(texts)
