"""Check any pipeline on its own terms: ``extract_fn`` batched against ``extract_fn`` one text at a
time, with no model of ours (:func:`self_check`).

The seed's own verification, made a tool: a pipeline is sound when the states it gives a text in
a batch are the states it gives the text alone. Nothing is rebuilt or re-run here, so it checks
what the model-based check cannot: TransformerLens (processed weights), nnsight, a fine-tuned or
LoRA model in a notebook, vLLM/SGLang/llama.cpp clients, bfloat16 on a GPU.

Modules, one concern each: :mod:`.returns` (what the function returned), :mod:`.calls` (calling
it), :mod:`.measure` (distances, pure), :mod:`.floor` (its own repeatability), :mod:`.probes`
(the cause from behaviour), :mod:`.report` (:class:`SelfCheckReport`) and :mod:`.run`
(:func:`self_check`).
"""

from __future__ import annotations

from .calls import ExtractFn, function_name
from .floor import FLOOR_COPIES, FLOOR_FACTOR, NoiseFloor
from .probes import MATCH_ROWS, PROBE_CALLS
from .report import NO_MODEL, SELF_CAUSES, SelfCheckReport
from .returns import states_from_return, token_states_from_return
from .run import self_check

__all__ = [
    "FLOOR_COPIES",
    "FLOOR_FACTOR",
    "MATCH_ROWS",
    "NO_MODEL",
    "PROBE_CALLS",
    "SELF_CAUSES",
    "ExtractFn",
    "NoiseFloor",
    "SelfCheckReport",
    "function_name",
    "self_check",
    "states_from_return",
    "token_states_from_return",
]
