"""What a loaded model is, and the helpers every way of loading one shares.

:class:`LoadedModel` (the model, its tokenizer and what UIs need to know about them),
:class:`ModelLoadError`, the valid options (:data:`DTYPES`, :data:`ATTN_IMPLEMENTATIONS`,
:data:`DEVICES`, :data:`MODEL_PRESETS`), device resolution, and the error handling the
loaders in :mod:`~extraction.models.embedded`, :mod:`~extraction.models.tiny` and
:mod:`~extraction.models.hub` share: every failure becomes a one-line
:class:`ModelLoadError`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from .placement import input_device

DEFAULT_MODEL = "smollm2-135m"
DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")

MODEL_PRESETS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama, RoPE, 30 layers, hidden 576): real weights, embedded GGUF",
    "tiny-random-llama": "tiny Llama (RoPE, 4 layers, hidden 64): random weights, for fast checks",
    "tiny-random-gpt2": "tiny GPT-2 (learned absolute positions, 4 layers, hidden 64): random weights, for fast checks",
}

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_DEFAULT_CONTEXT_LENGTH = 2048  # for configs that do not state their maximum positions
_FINAL_NORM_NAMES = ("norm", "ln_f", "norm_f", "final_layernorm", "final_layer_norm")
_POSITION_EMBEDDING_NAMES = ("wpe", "embed_positions", "position_embeddings", "positions_embed")
#: Config attributes that bound how far back a token attends (sliding or local attention).
ATTENTION_WINDOW_NAMES = (
    "sliding_window",
    "window_size",
    "attention_window_size",
    "sliding_window_size",
    "attention_chunk_size",  # chunked attention (Llama 4): no token sees past its chunk's start
)


class ModelLoadError(ValueError):
    """A model could not be loaded; the message says what was tried and why it failed."""


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM ready for extraction. Treat it as read-only: UIs cache and share it.

    Attributes:
        model: in eval mode, ``requires_grad`` off, on ``device``, in ``dtype``.
        tokenizer: its pad token is set (to the eos token when it had none).
        name: the name the caller gave, e.g. ``"smollm2-135m"``.
        source: what was actually loaded: a file or folder path, a hub id, or
            ``"random config"``.
        dtype: dtype of the model's parameters.
        device: device of the model's parameters.
        attn_implementation: ``"sdpa"`` or ``"eager"``, as the model really uses it.
        is_random: True for the tiny random presets; UIs must say the weights are random.
        pad_token_note: a note on the pad token for UIs (it was missing and eos is used,
            or it is the same token as eos), or None.
        load_seconds: wall-clock time of :func:`load_model`.
        from_cache: True when the embedded model came from the converted cache.
    """

    model: PreTrainedModel = field(repr=False)
    tokenizer: PreTrainedTokenizerBase = field(repr=False)
    name: str
    source: str
    dtype: torch.dtype
    device: torch.device
    attn_implementation: str
    is_random: bool
    pad_token_note: str | None
    load_seconds: float
    from_cache: bool

    @classmethod
    def wrap(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str | None = None) -> LoadedModel:
        """A :class:`LoadedModel` of a model and tokenizer you already have in memory (a notebook's,
        a fine-tuned or LoRA-merged one, a model in bfloat16 on a GPU), used as they are.

        Nothing of yours is changed: the model is not moved, cast, put in eval mode or frozen
        (every pass here runs under ``torch.inference_mode``), and ``dtype``/``device`` are read
        from it. A model in training mode with active dropout is refused (its states are random:
        call ``model.eval()`` first); in training mode without dropout it gives the same states.
        A tokenizer without a pad token is copied and the copy given its eos token as pad (the
        original is untouched). ``name`` defaults to the config's ``_name_or_path`` or the class name.
        """
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise ValueError(f"expected a transformers model (with a config), got a {type(model).__name__}")
        if not callable(getattr(tokenizer, "decode", None)) or not callable(tokenizer):
            raise ValueError(f"expected a transformers tokenizer, got a {type(tokenizer).__name__}")
        name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        dropout = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
        if model.training and dropout:
            raise ValueError(
                f"{name} is in training mode with {len(dropout)} active dropout layers: its states are random; "
                "call model.eval() first (padding-audit never changes your model)"
            )
        if tokenizer.pad_token is None:
            tokenizer = copy.deepcopy(tokenizer)
        pad_token_note = ensure_pad_token(tokenizer, name)
        parameter = next(model.parameters())
        device = input_device(model) if getattr(model, "hf_device_map", None) else parameter.device
        return cls(
            model=model,
            tokenizer=tokenizer,
            name=name,
            source="in memory",
            dtype=parameter.dtype,
            device=device,
            attn_implementation=getattr(model.config, "_attn_implementation", None) or "eager",
            is_random=False,
            pad_token_note=pad_token_note,
            load_seconds=0.0,
            from_cache=False,
        )

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @property
    def num_hidden_layers(self) -> int:
        """Transformer blocks; ``output_hidden_states`` gives this many + 1 tensors."""
        return int(self.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    @property
    def context_length(self) -> int:
        """Maximum positions the model accepts (a default of 2048 if its config is silent)."""
        for attribute in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(self.config, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
        return _DEFAULT_CONTEXT_LENGTH

    @property
    def uses_absolute_positions(self) -> bool:
        """True if the model adds learned absolute position embeddings (GPT-2 ``wpe``, OPT
        ``embed_positions``); False for relative schemes such as RoPE or ALiBi. With
        absolute positions, left padding without position ids shifts every real token."""
        return any(
            isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in _POSITION_EMBEDDING_NAMES
            for name, module in self.model.named_modules()
        )

    @property
    def attention_window(self) -> int | None:
        """The smallest sliding/local attention window the config states, in tokens (None: none).
        Whether every layer uses it is the model's business; a 4-D mask replaces it."""
        windows = [getattr(self.config, name, None) for name in ATTENTION_WINDOW_NAMES]
        windows = [w for w in windows if isinstance(w, int) and not isinstance(w, bool) and w > 0]
        return min(windows) if windows else None

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def final_norm(self) -> torch.nn.Module | None:
        """The norm applied after the last block (Llama ``model.norm``, GPT-2 ``ln_f``), or
        None if none is found. ``hidden_states[-1]`` is already normed; earlier layers
        need it before :attr:`lm_head` (logit lens)."""
        found = [
            (name.count("."), module)
            for name, module in self.model.named_modules()
            if name and name.rsplit(".", 1)[-1] in _FINAL_NORM_NAMES
        ]
        # Per-block norms can share these names (e.g. a block's final_layer_norm); the
        # model-level one is the least nested.
        return min(found, key=lambda depth_module: depth_module[0])[1] if found else None

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    @property
    def description(self) -> str:
        """One line for UIs."""
        architecture = type(self.model).__name__
        dtype = str(self.dtype).removeprefix("torch.")
        text = (
            f"{self.name}: {architecture}, {self.num_hidden_layers} layers, hidden {self.hidden_size}, "
            f"{dtype}, {self.device}, attention {self.attn_implementation}"
        )
        return f"{text}, RANDOM WEIGHTS" if self.is_random else text


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and
    ``"mps"`` are checked for availability. Anything else raises ``ValueError``."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here: use 'auto' or 'cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available here: use 'auto' or 'cpu'")
    return resolved


def drop_gguf_quantizer(model: PreTrainedModel) -> None:
    """The de-quantized model is plain float; without this, ``save_pretrained`` writes a
    GGUF quantization_config and every reload would carry a GGUF quantizer."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def hub_offline() -> str | None:
    """``"VAR=value"`` for the variable that puts the hub offline, or None when online.
    Read on each call (huggingface_hub reads it once, at import)."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(variable, "")
        if value.strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{variable}={value}"
    return None


@contextmanager
def load_errors(name: str, what: str) -> Iterator[None]:
    """Turn any failure inside the block into a one-line :class:`ModelLoadError`."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(_describe_failure(name, what, exc)) from exc


def _describe_failure(name: str, what: str, exc: BaseException) -> str:
    message = str(exc)
    if "trust_remote_code" in message:
        return (
            f"could not load '{name}': it needs remote code (Python files shipped with the model), "
            "and trust_remote_code is off by default; turn it on only for a source you trust"
        )
    if hub_offline() is None and _hub_unreachable(exc):
        return (
            f"could not load '{name}' ({what}): it is not in the local Hugging Face cache and the hub cannot be "
            "reached (no network?); download it once where there is a network, or pass a local folder or .gguf file"
        )
    not_found = isinstance(exc, OSError) or type(exc).__name__ in (
        "HFValidationError",
        "RepositoryNotFoundError",
        "LocalEntryNotFoundError",
        "EntryNotFoundError",
    )
    if not_found and what == "config" and not Path(name).expanduser().exists():
        offline = hub_offline()
        if offline:
            return f"could not load '{name}': not found locally and the hub is offline ({offline})"
        return f"could not load '{name}': not a file, a folder, or a model on the Hugging Face hub ({one_line(exc)})"
    return f"could not load '{name}' ({what}): {type(exc).__name__}: {one_line(exc)}"


_CONNECTION_ERRORS = ("ConnectError", "ConnectTimeout", "NetworkError", "gaierror", "ConnectionError")


def _hub_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) says the hub could not be reached."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if "couldn't connect" in str(current) or type(current).__name__ in _CONNECTION_ERRORS:
            return True
        current = current.__cause__ or current.__context__
    return False


def attn_checked(name: str, attn_implementation: str, build: Callable[[], PreTrainedModel]) -> PreTrainedModel:
    """Run ``build``; a refusal of the attention implementation becomes a ModelLoadError."""
    try:
        return build()
    except (ValueError, ImportError) as exc:
        message = str(exc)
        if "does not support" in message and "attention" in message.lower():
            others = [choice for choice in ATTN_IMPLEMENTATIONS if choice != attn_implementation]
            raise ModelLoadError(
                f"'{name}' does not support attn_implementation={attn_implementation!r}; try {' or '.join(others)!r}"
            ) from exc
        raise


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, name: str) -> str | None:
    """Give the tokenizer a pad token (its eos token when it has none) and return a note
    for UIs when pad is eos, or None when it has a pad token of its own."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"'{name}': its tokenizer has neither a pad token nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
        return f"no pad token: using eos {tokenizer.eos_token!r} (id {tokenizer.eos_token_id}) as pad"
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        return f"the pad token is the eos token {tokenizer.pad_token!r} (id {tokenizer.pad_token_id})"
    return None


def one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
