"""What the cause sentences know about a model: its name, dtype and position encoding from the
load, and what its forward pass reads by measurement (:mod:`extraction.comparison.inputs_read`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .inputs_read import inputs_read

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)


@dataclass
class ModelFacts:
    """What the cause sentences need to know about the model."""

    name: str
    dtype: str
    uses_absolute_positions: bool
    attn_implementation: str
    pad_token_id: int
    is_random: bool
    attention_window: int | None = None  # sliding/local window the config states, in tokens
    #: Measured (:mod:`extraction.comparison.inputs_read`; None: not measured): the forward pass changes with
    #: the position ids / the 2-D attention mask / masked left pads before the text (with position
    #: ids restarting at the text, whatever the pads hold: positions counted along the row).
    reads_position_ids: bool | None = None
    reads_attention_mask: bool | None = None
    counts_row_positions: bool | None = None

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> ModelFacts:
        try:
            read = inputs_read(loaded)
        except Exception as exc:  # noqa: BLE001 - a model the probe cannot call: the causes go without it
            logger.info("input probe failed on %s: %s", loaded.name, exc)
            read = None
        return cls(
            loaded.name,
            str(loaded.dtype).removeprefix("torch."),
            loaded.uses_absolute_positions,
            loaded.attn_implementation,
            loaded.pad_token_id,
            loaded.is_random,
            loaded.attention_window,
            read.position_ids if read else None,
            read.attention_mask if read else None,
            read.row_offset if read else None,
        )
