"""One model over several devices: accelerate's big-model placement (``device_map="auto"``).

A model loaded from files (a folder, a hub id) gets ``device_map`` at ``from_pretrained``
time, so its weights go straight to their devices and are never all in CPU memory at once.
The embedded and tiny presets are built in memory, then placed with
:func:`dispatch_loaded` (the same placement, for tests of the mechanism). Inputs go to the
device of the input embeddings (:func:`input_device`); accelerate's hooks move the states
between blocks, and the extraction hooks of :mod:`extraction.extract` read rows wherever
each block runs.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

DEVICE_MAPS = ("auto",)


def check_device_map(device_map: str | None) -> None:
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise ValueError(f"unknown device map {device_map!r}: choose one of {', '.join(DEVICE_MAPS)} (or none)")


def dispatch_loaded(model: PreTrainedModel, device_map: str) -> PreTrainedModel:
    """``model`` (in memory) spread over the visible devices as accelerate's ``auto`` map puts it."""
    from accelerate import dispatch_model, infer_auto_device_map

    check_device_map(device_map)
    placement = infer_auto_device_map(model, no_split_module_classes=model._no_split_modules or [])
    return dispatch_model(model, device_map=placement)


def input_device(model: PreTrainedModel) -> torch.device:
    """Where the input ids must go: the device of the input embeddings (their weights may be
    offloaded, so the device map says where they run)."""
    device_map = getattr(model, "hf_device_map", None) or {}
    embeddings = model.get_input_embeddings()
    name = next((n for n, module in model.named_modules() if module is embeddings), "")
    matches = [key for key in device_map if key == "" or name == key or name.startswith(f"{key}.")]
    if matches:
        where = device_map[max(matches, key=len)]
        if isinstance(where, int):
            return torch.device("cuda", where)
        if where not in ("disk", "meta"):
            return torch.device(where)
    return embeddings.weight.device if embeddings.weight.device.type != "meta" else torch.device("cpu")
