"""A tiny random model of any causal-LM architecture transformers registers: ``tiny-random:<model_type>``.

transformers lists its causal-LM model types in ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``.
:func:`tiny_config` builds one from the architecture's own config class, starting from the
class's defaults (which carry the architecture's proportions: grouped key/value heads,
partial rotary dimensions, a pattern of layer kinds, expert counts) and shrinking every
size by rules on what an attribute *is*, never by a table of hand-made configs:

* widths: the model width becomes :data:`TINY_HIDDEN`; every other width of the model
  family (intermediate, expert, state, rank sizes) keeps its ratio to the default width;
* heads: :data:`TINY_HEADS` query heads, and key/value heads keep the default's grouping
  (one when the default shares one, half the heads when it groups them);
  head dimensions are ``TINY_HIDDEN // TINY_HEADS``, and other per-head dimensions
  (rotary, no-rope, value) keep their ratio to the default head dimension;
* layers: one layer per distinct kind in the default's per-layer lists and patterns
  (sliding and full attention, recurrent and attention blocks, dense and expert MLPs),
  at least two; periods become 2, so that a period's two kinds both occur;
* experts: :data:`TINY_EXPERTS` experts, at most ``TINY_EXPERTS // 2`` chosen a token;
* windows: sliding and local attention windows become :data:`TINY_WINDOW` tokens, so
  that texts of the matrix are longer than the window and it really cuts attention;
* vocabulary: the SmolLM2 tokenizer's size, so that its ids are in range, and its bos,
  eos and pad ids; the initializer range is raised as :mod:`.tiny` explains.

:func:`exclusion_reason` says why a type is not a decoder-only text model (an
encoder-decoder, a multimodal composite); :func:`build_architecture` raises
:class:`~extraction.models.loaded.ModelLoadError` with the reason when a config or model
cannot be built, and :func:`causality_gap` measures whether a built model is causal.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from typing import Any

import torch
from transformers import CONFIG_MAPPING, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .loaded import ModelLoadError, attn_checked, one_line
from .tiny import TINY_INIT, TINY_SEED, special_token_ids

logger = logging.getLogger(__name__)

#: Name prefix that selects this builder in :func:`~extraction.models.load_model`.
TINY_RANDOM_PREFIX = "tiny-random:"
TINY_HIDDEN = 64
TINY_HEADS = 4
TINY_HEAD_DIM = TINY_HIDDEN // TINY_HEADS
TINY_EXPERTS = 4
#: Sliding/local windows, in tokens: shorter than the matrix's long texts.
TINY_WINDOW = 8
#: Layers when the default config shows a single kind.
TINY_MIN_LAYERS = 2

# What an attribute is, from its name (the config's own attribute_map resolves aliases).
_LAYER_COUNT = re.compile(r"^(num_hidden_layers|n_layers?|num_layers|decoder_layers|num_blocks|n_recurrent_layers)$")
_HEAD_COUNT = re.compile(r"^(num_attention_heads|n_heads?|num_heads|attention_heads|decoder_attention_heads)$")
_KV_HEAD_COUNT = re.compile(r"^(num_key_value_heads|num_kv_heads|n_kv_heads|multi_query_group_num)$")
_HEAD_DIM = re.compile(r"^(head_dim|d_head|dim_head|attention_head_size|kv_channels)$")
_OTHER_HEAD_DIM = re.compile(r"(_head_dim|rotary_dim|rotary_emb_base_dim|_rope_dim)$")
_WIDTH = re.compile(r"^(hidden_size|n_embd|d_model|dim|embedding_dim|emb_dim|word_embed_proj_dim)$")
_OTHER_WIDTH = re.compile(
    r"(intermediate_size|ffn_dim|ffn_hidden_size|^dff$|^dim_ff$|^d_inner$|feed_forward_size|hidden_size$|_rank$"
    r"|^n_inner$|embedding_size$|^attention_hidden_size$|^time_step_rank$|_proj_dim$|^adapter_rank$)"
)
_EXPERT_COUNT = re.compile(r"^(num_experts|num_local_experts|n_routed_experts|moe_num_experts|num_routed_experts)$")
_EXPERT_TOP_K = re.compile(r"^(num_experts_per_tok|num_experts_per_token|moe_topk|moe_k|top_k|router_top_k)$")
_SHARED_EXPERTS = re.compile(r"^(n_shared_experts|num_shared_experts)$")
_EXPERT_GROUPS = re.compile(r"^(n_group|num_expert_group|topk_group)$")
_WINDOW = re.compile(r"^(sliding_window|window_size|attention_window_size|sliding_window_size|attention_chunk_size)$")
_PERIOD = re.compile(
    r"(_period$|_every_n_layers$"
    r"|^sliding_window_pattern$|_layer_interval$|_layer_step$|_sparse_step$)"
)
_OFFSET = re.compile(r"_offset$")
_DENSE_PREFIX = re.compile(r"^(first_k_dense_replace|num_dense_layers|moe_layer_start_index)$")
_INIT = ("initializer_range", "init_std")
_COMPOSITE = re.compile(r"(vision|audio|image|vq|speech|encoder)")


def causal_lm_types() -> list[str]:
    """Every model type transformers registers for ``AutoModelForCausalLM``, sorted."""
    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


@functools.cache
def tiny_random_names() -> tuple[str, ...]:
    """``tiny-random:<model_type>`` for every type not left out by its config (for model pickers;
    a name here may still fail to build or run: the conformance matrix records why)."""
    return tuple(f"{TINY_RANDOM_PREFIX}{t}" for t in causal_lm_types() if exclusion_reason(t) is None)


def exclusion_reason(model_type: str) -> str | None:
    """Why ``model_type`` is not a decoder-only text model, from its config class (None if it is)."""
    if model_type not in CONFIG_MAPPING:
        return f"no config class registered for {model_type!r}"
    config_class = CONFIG_MAPPING[model_type]
    subs = sorted(getattr(config_class, "sub_configs", None) or {})
    composite = [name for name in subs if _COMPOSITE.search(name)]
    if composite:
        return f"multimodal or composite: its config has sub-configs {', '.join(subs)}; text-only runs are not measured"
    if "text_config" in subs:
        return "a wrapper around a text config (text_config): the text model is registered on its own"
    try:
        default = config_class()
    except Exception:  # noqa: BLE001 - a default that does not validate is shrunk and validated again
        return None
    if getattr(default, "is_encoder_decoder", False):
        return "encoder-decoder: its causal-LM class is the decoder half, built for cross-attention on an encoder"
    return None


def _is_layer_list(value: Any, layers: int) -> bool:
    return isinstance(value, (list, str)) and len(value) == layers and layers > 1


def _is_index_list(value: Any, layers: int) -> bool:
    return (
        isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and value == sorted(set(value))
        and all(0 <= v < layers for v in value)
    )


def _even(x: float, minimum: int = 2) -> int:
    return max(minimum, 2 * round(x / 2))


def _kept_layers(defaults: dict[str, Any], layers: int) -> list[int]:
    """The default layers to keep: the first of each distinct kind in every per-layer list."""
    kept: set[int] = set()
    for value in defaults.values():
        if _is_layer_list(value, layers) and not _is_index_list(value, layers):
            seen: dict[Any, int] = {}
            for index, kind in enumerate(value):
                seen.setdefault(repr(kind), index)
            kept.update(seen.values())
        elif _is_index_list(value, layers) and value and len(value) < layers:
            kept.add(value[0])  # a layer of the listed kind ...
            kept.add(next(i for i in range(layers) if i not in value) if len(value) < layers else 0)  # ... and another
    kept.add(0)
    candidates = [i for i in range(layers) if i not in kept]
    while len(kept) < TINY_MIN_LAYERS and candidates:
        kept.add(candidates.pop(0))
    return sorted(kept)


def _shrunk_values(defaults: dict[str, Any]) -> dict[str, Any]:
    """Attribute -> tiny value, by what each attribute is (see the module docstring)."""
    width_names = [n for n, v in defaults.items() if _WIDTH.match(n) and isinstance(v, int) and v > 0]
    default_width = defaults[width_names[0]] if width_names else TINY_HIDDEN
    head_names = [n for n, v in defaults.items() if _HEAD_COUNT.match(n) and isinstance(v, int) and v > 0]
    default_heads = defaults[head_names[0]] if head_names else TINY_HEADS
    head_dim_names = [n for n, v in defaults.items() if _HEAD_DIM.match(n) and isinstance(v, int) and v > 0]
    default_head_dim = defaults[head_dim_names[0]] if head_dim_names else max(1, default_width // default_heads)
    layer_names = [n for n, v in defaults.items() if _LAYER_COUNT.match(n) and isinstance(v, int) and v > 0]
    default_layers = max((defaults[n] for n in layer_names), default=TINY_MIN_LAYERS)
    kept = _kept_layers(defaults, default_layers)
    width_scale = TINY_HIDDEN / default_width
    head_scale = TINY_HEAD_DIM / default_head_dim
    values: dict[str, Any] = {}
    for name, value in defaults.items():
        if value is None:  # a size the model derives itself, or reads as None and fails on: give it
            if _HEAD_DIM.match(name):
                values[name] = TINY_HEAD_DIM
            elif _KV_HEAD_COUNT.match(name):
                values[name] = TINY_HEADS
            elif _EXPERT_TOP_K.match(name):
                values[name] = TINY_EXPERTS // 2
            elif _EXPERT_COUNT.match(name):
                values[name] = TINY_EXPERTS
            elif _SHARED_EXPERTS.match(name):
                values[name] = 1
            continue
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if _LAYER_COUNT.match(name):
                values[name] = len(kept)
            elif _HEAD_COUNT.match(name):
                values[name] = TINY_HEADS
            elif _KV_HEAD_COUNT.match(name) and value > 0:
                values[name] = TINY_HEADS if value >= default_heads else (1 if value == 1 else TINY_HEADS // 2)
            elif _HEAD_DIM.match(name):
                values[name] = TINY_HEAD_DIM
            elif _OTHER_HEAD_DIM.search(name) and value > 0:
                values[name] = min(_even(value * head_scale), TINY_HEAD_DIM * max(1, round(value / default_head_dim)))
            elif _WIDTH.match(name):
                values[name] = TINY_HIDDEN
            elif _EXPERT_COUNT.match(name) and value > 1:
                values[name] = TINY_EXPERTS
            elif _EXPERT_TOP_K.match(name) and value > 1:
                values[name] = min(value, TINY_EXPERTS // 2)
            elif _EXPERT_GROUPS.match(name) and value > 1:
                values[name] = 1
            elif _WINDOW.match(name) and value > 0:
                values[name] = TINY_WINDOW
            elif _PERIOD.search(name) and value > 1:
                values[name] = 2
            elif _OFFSET.search(name) and value > 0:
                values[name] = min(value, 1)
            elif _DENSE_PREFIX.match(name):
                values[name] = min(value, 1)
            elif _OTHER_WIDTH.search(name) and value >= 8 and "vocab" not in name and "position" not in name:
                values[name] = max(8, 8 * round(value * width_scale / 8))
        elif isinstance(value, (list, str)) and _is_index_list(value, default_layers) and value:
            mapped = [kept.index(i) for i in value if i in kept]
            values[name] = mapped
        elif _is_layer_list(value, default_layers):
            picked = [value[i] for i in kept]
            values[name] = "".join(picked) if isinstance(value, str) else picked
    expand = defaults.get("expand")
    if isinstance(expand, int) and head_names and default_heads * default_head_dim == expand * default_width:
        # A state-space mixer whose heads tile the expanded width (Mamba-2): keep that relation.
        values[head_names[0]] = expand * TINY_HIDDEN // TINY_HEAD_DIM
    for name in _INIT:
        if name in defaults:
            values[name] = TINY_INIT
    return values


def tiny_config(model_type: str, tokenizer) -> PretrainedConfig:
    """The tiny config of ``model_type`` (see the module docstring); ``ModelLoadError`` when
    it is excluded or the config class refuses the derived sizes."""
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        close = [t for t in causal_lm_types() if model_type.lower().replace("-", "_") in t.replace("-", "_")][:5]
        raise ModelLoadError(
            f"{TINY_RANDOM_PREFIX}{model_type}: not a causal-LM model type transformers registers "
            f"({len(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)} are, e.g. {', '.join(close or ['llama', 'gpt2', 'mamba'])})"
        )
    reason = exclusion_reason(model_type)
    if reason:
        raise ModelLoadError(f"tiny-random:{model_type} is left out: {reason}")
    config_class = CONFIG_MAPPING[model_type]
    try:
        defaults = config_class().to_dict()
    except Exception:  # noqa: BLE001 - some defaults do not validate; start from the class's field defaults
        defaults = _field_defaults(config_class)
    values = _shrunk_values(defaults)
    values.update(vocab_size=len(tokenizer), **special_token_ids(tokenizer))
    try:
        config = config_class(**values)
    except Exception as exc:  # noqa: BLE001 - the config's own validation names the constraint
        raise ModelLoadError(f"tiny-random:{model_type}: its config refused the tiny sizes: {root_cause(exc)}") from exc
    for name in ("use_cache",):
        if hasattr(config, name):
            setattr(config, name, False)
    return config


def root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost exception ``exc`` was raised from (a config's
    validator wraps the sentence that names the constraint)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {one_line(exc)}"


def _field_defaults(config_class: type) -> dict[str, Any]:
    import dataclasses

    if dataclasses.is_dataclass(config_class):
        return {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}
    return {}


def build_architecture(
    model_type: str, tokenizer, torch_dtype: torch.dtype, attn_implementation: str
) -> PreTrainedModel:
    """The seeded tiny random model of ``model_type`` (same weights on every call, without
    touching the caller's random state); ``ModelLoadError`` with the reason otherwise."""
    config = tiny_config(model_type, tokenizer)
    name = f"{TINY_RANDOM_PREFIX}{model_type}"
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        try:
            model = attn_checked(
                name,
                attn_implementation,
                lambda: AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation),
            )
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - the reason is recorded, whatever it is
            raise ModelLoadError(f"{name}: the model could not be built: {root_cause(exc)}") from exc
    return model.to(torch_dtype)


def causality_gap(model: PreTrainedModel, token_ids: list[int], other_last_token: int) -> float:
    """Largest ``|h - h'|`` over the positions before the last, between ``token_ids`` and the same
    ids with the last one replaced by ``other_last_token``, every layer: 0 for a causal model
    (a later token cannot change an earlier state), clearly above 0 for an encoder."""
    changed = [*token_ids[:-1], other_last_token]
    ids = torch.tensor([token_ids, changed], device=model.device)  # (2, T)
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    gap = max(float((layer[0, :-1] - layer[1, :-1]).abs().max()) for layer in hidden)
    return gap if math.isfinite(gap) else float("inf")
