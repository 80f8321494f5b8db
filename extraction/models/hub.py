"""Models named by the user: a ``.gguf`` file, a folder saved with ``save_pretrained``, or
a Hugging Face hub id (read from the local hub cache only when ``HF_HUB_OFFLINE`` is set).

A mistyped path is reported as a missing path, never looked up on the hub; a folder
without weights, a config that is not a causal LM, and remote code without
``trust_remote_code`` each get a one-line :class:`~extraction.models.ModelLoadError`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from .loaded import ModelLoadError, attn_checked, drop_gguf_quantizer, hub_offline, load_errors

logger = logging.getLogger(__name__)

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def load_named(
    name: str,
    torch_dtype: torch.dtype,
    attn_implementation: str,
    trust_remote_code: bool,
    device_map: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """(model, tokenizer, source) for a ``.gguf`` file, a folder, or a hub id."""
    path = Path(name).expanduser()
    if name.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"could not load '{name}': no such GGUF file")
        return _load_gguf_file(name, path, torch_dtype, attn_implementation)

    if path.is_dir():
        _check_model_folder(name, path)
        source, options = str(path.resolve()), {}
    elif _looks_like_path(name):
        raise ModelLoadError(f"could not load '{name}': no such file or folder")
    else:
        source, options = name, {"local_files_only": hub_offline() is not None}

    trust = {"trust_remote_code": trust_remote_code}  # never True unless the caller asked
    with load_errors(name, "config"):
        config = AutoConfig.from_pretrained(source, **trust, **options)
    _require_causal_lm(name, config, trust_remote_code)
    with load_errors(name, "weights"):
        model = attn_checked(
            name,
            attn_implementation,
            lambda: AutoModelForCausalLM.from_pretrained(
                source,
                config=config,
                dtype=torch_dtype,
                attn_implementation=attn_implementation,
                **({"device_map": device_map} if device_map else {}),
                **trust,
                **options,
            ),
        )
    with load_errors(name, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(source, **trust, **options)
    return model, tokenizer, source


def _load_gguf_file(
    name: str, path: Path, torch_dtype: torch.dtype, attn_implementation: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    folder, file_name = path.resolve().parent, path.name
    logger.info("converting GGUF %s (can take a while; only the embedded model is cached)", path)
    with load_errors(name, "GGUF file"):
        config = AutoConfig.from_pretrained(folder, gguf_file=file_name)
    _require_causal_lm(name, config, trust_remote_code=False)
    with load_errors(name, "GGUF file"):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
        model = attn_checked(
            name,
            attn_implementation,
            lambda: AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=file_name, dtype=torch.float32, attn_implementation=attn_implementation
            ),
        )
    drop_gguf_quantizer(model)
    return model.to(torch_dtype), tokenizer, str(path.resolve())


def _check_model_folder(name: str, folder: Path) -> None:
    has_weights = any(any(folder.glob(pattern)) for pattern in _WEIGHT_PATTERNS)
    if not has_weights:
        hint = ""
        if any(folder.glob("*.gguf")):
            hint = "; to load a GGUF, pass the .gguf file itself"
        raise ModelLoadError(f"folder '{name}' has no model weights (looked for {', '.join(_WEIGHT_PATTERNS)}){hint}")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"folder '{name}' has weights but no config.json")


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else that does not exist is a
    mistyped path, not something to look up on the hub."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or name.count("/") > 1


def _require_causal_lm(name: str, config: PretrainedConfig, trust_remote_code: bool) -> None:
    remote_causal_lm = trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING and not remote_causal_lm:
        raise ModelLoadError(
            f"'{name}' is a {config.model_type!r} model, not a causal language model "
            "(AutoModelForCausalLM cannot load it)"
        )
