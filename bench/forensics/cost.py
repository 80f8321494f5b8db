"""Cost of the audit on 1,000 stored rows against re-extracting them (issue 21).

Usage (from the repository root): PYTHONPATH=. python bench/forensics/cost.py MODEL OUT_DIR
Makes 1,000 texts, a defective file (right padding without a mask, read at -1, batches of 8,
plain transformers), then times: extract --strategy single, extract (auto), audit --no-forensics,
audit (with forensics), each through the CLI, one run each.
"""

import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import save_file

from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from tests import third_party

model_name, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
texts = [
    f"{SAMPLE_TEXTS[k % 10]} (item {k}{', and ' + SAMPLE_TEXTS[(k * 7) % 10] if k % 3 == 0 else ''})"
    for k in range(1000)
]
(out / "texts1000.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
loaded = load_model(model_name)
stored = third_party.unmasked_right_padded_states(loaded.model, loaded.tokenizer, texts, -1, 8)
texts_file, states_file = str(out / "texts1000.txt"), str(out / "unmasked1000.safetensors")
save_file({"states": stored.contiguous()}, states_file)
base = [sys.executable, "-m", "extraction"]
extract = ["extract", "--model", model_name, "--texts", texts_file, "--layers", str(loaded.num_hidden_layers)]
extract += ["--verify", "0", "--force"]
audit = ["audit", "--model", model_name, "--texts", texts_file, "--states", states_file]
runs = {
    "extract --strategy single": [*extract, "--strategy", "single", "--out", str(out / "single.safetensors")],
    "extract (auto)": [*extract, "--out", str(out / "auto.safetensors")],
    "audit --no-forensics": [*audit, "--no-forensics", "--json", str(out / "audit-noforensics.json")],
    "audit": [*audit, "--json", str(out / "audit.json")],
    "audit --sample 100": [*audit, "--sample", "100", "--json", str(out / "audit-sample100.json")],
}
lines = []
for name, args in runs.items():
    started = time.perf_counter()
    run = subprocess.run(base + args, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines.append(f"{model_name}\t{name}\t{seconds:.1f} s\texit {run.returncode}")
    print(lines[-1], flush=True)
    (out / f"{name.replace(' ', '_').replace('-', '')}.log").write_text(run.stdout[-3000:] + run.stderr[-3000:])
(out / f"cost-{model_name}.tsv").write_text("\n".join(lines) + "\n")
