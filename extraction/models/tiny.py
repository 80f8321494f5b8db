"""The tiny random presets, ``tiny-random-llama`` and ``tiny-random-gpt2``, for fast tests.

4-layer models built from a config with a fixed seed: the same weights on every call,
without touching the caller's random state. They reuse the SmolLM2 tokenizer, so they
need no download. Their weights mean nothing: only agreement between extraction
strategies does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .loaded import attn_checked

TINY_SEED = 0

# Shared shape: 4 blocks, hidden 64, 4 heads, 512 positions. initializer_range 0.2 (ten
# times the usual 0.02): with 0.02 the residual stream is dominated by the token
# embedding and attention barely changes it, so a random model would hide the very
# cross-token leaks the tool looks for. At 0.2, packing two texts without a mask moves
# the second text's last-token state to cosine ~0.2-0.6, while correct strategies still
# agree to 1.000000 in float32.
_TINY_LAYERS, _TINY_HIDDEN, _TINY_HEADS, _TINY_POSITIONS, TINY_INIT = 4, 64, 4, 512, 0.2


def _tiny_llama_config(tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TINY_HIDDEN,
        intermediate_size=4 * _TINY_HIDDEN,
        num_hidden_layers=_TINY_LAYERS,
        num_attention_heads=_TINY_HEADS,
        num_key_value_heads=_TINY_HEADS,
        max_position_embeddings=_TINY_POSITIONS,  # RoPE: no learned position table
        initializer_range=TINY_INIT,
        **special_token_ids(tokenizer),
    )


def _tiny_gpt2_config(tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=_TINY_HIDDEN,
        n_layer=_TINY_LAYERS,
        n_head=_TINY_HEADS,
        n_positions=_TINY_POSITIONS,  # learned absolute position embeddings (wpe)
        initializer_range=TINY_INIT,
        **special_token_ids(tokenizer),
    )


TINY_CONFIGS: dict[str, Callable[[PreTrainedTokenizerBase], PretrainedConfig]] = {
    "tiny-random-llama": _tiny_llama_config,
    "tiny-random-gpt2": _tiny_gpt2_config,
}


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": pad_token_id,
    }


def build_tiny(
    name: str, tokenizer: PreTrainedTokenizerBase, torch_dtype: torch.dtype, attn_implementation: str
) -> PreTrainedModel:
    """Same weights on every call (fixed seed, built in float32 then cast), without
    touching the caller's random state."""
    config = TINY_CONFIGS[name](tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        model = attn_checked(
            name,
            attn_implementation,
            lambda: AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation),
        )
    return model.to(torch_dtype)
