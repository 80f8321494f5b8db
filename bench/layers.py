"""The shortened pass: ``extract --layers K`` against ``--layers all`` on the same texts, side by side
in one process (issue 31).

Both runs use the same layout (``auto``'s choice for the whole pass, made once before the clock)
and no verification, so the difference is the pass alone: ``--layers K`` runs blocks ``0..K-1``
and stops (:func:`extraction.extract.forward_pass`), ``--layers all`` runs every block, the final
norm and ``lm_head``. The two are timed in turn (all, K, all, K, ...) and the best of each kept,
so that a change of load falls on both. Then layer ``K``'s rows of the two files are compared bit
for bit. The ideal ratio is ``n_layers / K`` (30 / 12 = 2.5 on SmolLM2) less the fixed costs of a
pass (embeddings, tokenization, writing), which do not shrink.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

#: The layer of the issue's row: a middle layer, where most probing happens.
DEFAULT_LAYER = 12
TARGET_SPEEDUP = 1.8  # on this CPU (issue 31)


def shortened_pass(loaded, texts: list[str], layer: int = DEFAULT_LAYER, repeats: int = 2, batch_size: int = 8) -> dict:
    """``extract_to_file`` of ``texts`` at ``layers=[layer]`` and at every layer, ``repeats`` times
    each in turn; the best seconds of each, their ratio, the blocks each pass ran and whether layer
    ``layer``'s rows are identical in both files."""
    from extraction.comparison.choose import choose_strategy
    from extraction.storage.export import extract_to_file
    from extraction.storage.stored_states import read_states
    from extraction.texts import tokenize_texts

    if not 0 <= layer < loaded.num_hidden_layers:
        return {"error": f"layer {layer} is not a middle layer of this model (0..{loaded.num_hidden_layers - 1})"}
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    strategy = choose_strategy(loaded, tokenized, batch_size).name
    seconds: dict[str, list[float]] = {"all": [], "layer": []}
    passes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = {"all": Path(folder) / "all.safetensors", "layer": Path(folder) / "layer.safetensors"}
        spec = {"all": "all", "layer": str(layer)}
        for _ in range(repeats):
            for kind in ("all", "layer"):
                started = time.perf_counter()
                result = extract_to_file(
                    loaded, tokenized, paths[kind], spec[kind], strategy, batch_size, verify=0, overwrite=True
                )
                seconds[kind].append(time.perf_counter() - started)
                passes[kind] = result.forward_pass.to_dict()
        full = read_states(paths["all"]).tensor[:, layer]  # (N, d)
        short = read_states(paths["layer"]).tensor[:, 0]  # (N, d)
        identical = bool(full.shape == short.shape and (full == short).all())
    best_all, best_layer = min(seconds["all"]), min(seconds["layer"])
    return {
        "texts": len(texts),
        "layer": layer,
        "num_layers": loaded.num_hidden_layers,
        "strategy": strategy,
        "batch_size": batch_size,
        "seconds_all": best_all,
        "seconds_layer": best_layer,
        "runs_all": seconds["all"],
        "runs_layer": seconds["layer"],
        "speedup": best_all / best_layer if best_layer > 0 else None,
        "ideal_speedup": loaded.num_hidden_layers / layer if layer else None,
        "forward_pass_all": passes["all"],
        "forward_pass_layer": passes["layer"],
        "layer_rows_identical": identical,
    }
