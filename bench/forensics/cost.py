"""Cost of the audit on 1,000 stored rows against re-extracting them (issue 21).

Usage (from the repository root): PYTHONPATH=. python bench/forensics/cost.py MODEL OUT_DIR [audits]
Makes 1,000 texts, a defective file (right padding without a mask, read at -1, batches of 8,
plain transformers), then times: extract --strategy single, extract (auto), audit --no-forensics,
audit (with forensics), audit --sample 100, each through the CLI, one run each (``audits``: the
three audits only). Each line gives the process's wall time and the audit's own ``seconds`` (the
report's, without the interpreter's start and the model load), and the forensics' ratio to
``--no-forensics`` by both.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import save_file

from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from tests import third_party

model_name, out = sys.argv[1], Path(sys.argv[2])
audits_only = sys.argv[3:] == ["audits"]
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
if audits_only:
    runs = {name: args for name, args in runs.items() if name.startswith("audit")}
lines = []
seconds_of: dict[str, tuple[float, float | None]] = {}
for name, args in runs.items():
    started = time.perf_counter()
    run = subprocess.run(base + args, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    own = None
    if "--json" in args:
        json_path = Path(args[args.index("--json") + 1])
        own = json.loads(json_path.read_text())["seconds"] if json_path.exists() else None
    seconds_of[name] = (seconds, own)
    own_text = f"{own:.1f} s" if own is not None else "-"
    lines.append(f"{model_name}\t{name}\t{seconds:.1f} s\taudit {own_text}\texit {run.returncode}")
    print(lines[-1], flush=True)
    (out / f"{name.replace(' ', '_').replace('-', '')}.log").write_text(run.stdout[-3000:] + run.stderr[-3000:])
if "audit" in seconds_of and "audit --no-forensics" in seconds_of:
    (wall, own), (wall_0, own_0) = seconds_of["audit"], seconds_of["audit --no-forensics"]
    ratio_own = f"{own / own_0:.2f}x" if own and own_0 else "-"
    lines.append(f"{model_name}\tforensics ratio\twall {wall / wall_0:.2f}x\taudit {ratio_own}")
    print(lines[-1], flush=True)
(out / f"cost-{model_name}.tsv").write_text("\n".join(lines) + "\n")
