"""Make the issue-21 cases on SmolLM2-135M with plain transformers, then audit each with the CLI.

Usage (from the repository root): PYTHONPATH=. python bench/forensics/cases.py OUT_DIR
Writes OUT_DIR/<case>.safetensors, OUT_DIR/texts.txt, OUT_DIR/<case>.json (audit --json) and
OUT_DIR/summary.tsv (case, verdict, likely_cause, cause_kind, cause).
"""

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from tests import third_party as tp

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
texts = SAMPLE_TEXTS + [f"{SAMPLE_TEXTS[k % 10]} Number {k}." for k in range(14)]  # 24 texts
(out / "texts.txt").write_text("\n".join(texts) + "\n")
loaded = load_model("smollm2-135m")
model, tok = loaded.model, loaded.tokenizer


def pre_norm(texts):
    captured = []
    handle = model.model.norm.register_forward_pre_hook(lambda m, a: captured.append(a[0][0, -1].float()))
    with torch.no_grad():
        for t in texts:
            model(torch.tensor([tok(t)["input_ids"]]))
    handle.remove()
    return torch.stack(captured)


def correct(texts, layer):
    with torch.no_grad():
        return torch.stack(
            [
                model(torch.tensor([tok(t)["input_ids"]]), output_hidden_states=True).hidden_states[layer][0, -1]
                for t in texts
            ]
        )


cases = {
    "unmasked-right": (tp.unmasked_right_padded_states(model, tok, texts, -1, 8), []),
    "length-sorted": (tp.length_sorted_states(model, tok, texts, -1, 4), []),
    "truncated-12": (tp.truncated_states(model, tok, texts, -1, 12), []),
    "extra-bos": (tp.prepended_token_states(model, tok, texts, -1), []),
    "chat-generation-prompt": (tp.chat_formatted_states(model, tok, texts, -1, True), []),
    "reused-buffer-5-9": (tp.reused_buffer(correct(texts, -1), [4, 5, 6, 7, 8]), []),
    "transformer-lens-defaults": (tp.transformer_lens_default_states(model, tok, texts, -1, 8), []),
    "pre-norm": (pre_norm(texts), []),
    "nnsight-layers-12-as-12": (correct(texts, 13), ["--layer", "12"]),
}
rows = []
for name, (states, extra) in cases.items():
    save_file({"states": states.contiguous()}, str(out / f"{name}.safetensors"))
    cmd = [
        sys.executable,
        "-m",
        "extraction",
        "audit",
        "--model",
        "smollm2-135m",
        "--texts",
        str(out / "texts.txt"),
        "--states",
        str(out / f"{name}.safetensors"),
        "--json",
        str(out / f"{name}.json"),
        *extra,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    (out / f"{name}.txt").write_text(run.stdout + run.stderr)
    data = json.loads((out / f"{name}.json").read_text())
    rows.append("\t".join([name, data["verdict"], str(data["likely_cause"]), data["cause_kind"], data["cause"]]))
    print(rows[-1], flush=True)
(out / "summary.tsv").write_text("\n".join(rows) + "\n")
