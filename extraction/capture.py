"""How :func:`extraction.extract.extract_states` takes the read rows out of a forward pass.

* ``"hooks"``: a forward pre-hook on every kept block keeps only the read rows of the block's
  input, ``(K, d)`` instead of ``(B, T, d)``, and a pre-hook on ``lm_head`` keeps the read rows
  of its input (the final state) and hands ``lm_head`` only those rows. Where the deepest state
  asked is the input of block ``k < n_layers`` and no logits are asked, the pre-hook of block
  ``k`` raises a private exception once it has kept its rows, and the pass ends there: blocks
  ``k .. n_layers - 1``, the final norm and ``lm_head`` never run (:func:`blocks_needed`).
  Nothing on the model changes: the hooks are removed when the extraction ends.
* ``"hidden-states"``: ``output_hidden_states=True``, every layer's ``(B, T, d)`` kept for the
  whole forward pass, then indexed; logits limited with ``logits_to_keep``. Always the whole pass.

:func:`hooks_reproduce_hidden_states` checks once per model that the hooks give what
``output_hidden_states`` gives (``hidden_states[k]`` for ``k < n_layers`` is the input of block
``k``, the output of block ``k - 1``; ``hidden_states[n_layers]`` is ``lm_head``'s input, after
the final norm).
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from .pooling import DEFAULT_POOLING, Pooling, pool_rows, pooled_positions
from .strategies import BatchLayout, get_strategy

if TYPE_CHECKING:
    from .models import LoadedModel

logger = logging.getLogger(__name__)

_BLOCK_LIST_NAMES = ("layers", "h", "blocks", "layer", "decoder_layers")


def blocks_needed(num_layers: int, layers: Sequence[int], keep_logits: bool) -> int:
    """Blocks a pass must run to give ``hidden_states[layers]`` (and the logits when ``keep_logits``).

    ``hidden_states[k]`` for ``k < num_layers`` is the output of block ``k - 1`` (the input of
    block ``k``), so ``max(layers)`` blocks give it; ``hidden_states[num_layers]`` is after the
    final norm, and the logits after ``lm_head``: those need all ``num_layers`` blocks.
    """
    deepest = max(layers, default=num_layers)
    return num_layers if keep_logits or deepest >= num_layers else deepest


class _StopPass(Exception):  # noqa: N818 - not an error: the pass has given every row it was asked for
    """Raised by the pre-hook of the first block not needed, caught by :meth:`_ReadRowRecorder.run`."""


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def find_blocks(model: torch.nn.Module, num_layers: int) -> torch.nn.ModuleList | None:
    """The model's list of transformer blocks: the ``ModuleList`` of ``num_layers`` entries
    (Llama ``model.layers``, GPT-2 ``transformer.h``), or None if there is no single one."""
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers
    ]
    if len(candidates) > 1:
        candidates = [(n, m) for n, m in candidates if n.rsplit(".", 1)[-1] in _BLOCK_LIST_NAMES]
    return candidates[0][1] if len(candidates) == 1 else None


class _ReadRowRecorder:
    """Forward hooks that keep the read rows of each block's input and of ``lm_head``'s input.

    ``hidden_states[i]`` for ``i < L`` is the input of block ``i``; ``hidden_states[L]``
    is the input of ``lm_head`` (the final state after the norm). The ``lm_head`` hook
    replaces its input ``(B, C, d)`` by the read rows ``(1, K, d)``, so the model's
    logits come back as ``(1, K, V)``, one row per text read, in the group's order.
    With ``stop_at = k < L`` the pre-hook of block ``k`` ends the pass once it has kept
    block ``k``'s input (:func:`blocks_needed`): no logits then.
    """

    def __init__(
        self,
        blocks: torch.nn.ModuleList,
        lm_head: torch.nn.Module,
        layers: Sequence[int],
        pooling: Pooling = DEFAULT_POOLING,
        stop_at: int | None = None,
    ):
        self.blocks, self.lm_head = blocks, lm_head
        self.stop_at = stop_at if stop_at is not None and stop_at < len(blocks) else None
        self.layers = list(layers)
        self.pooling = pooling
        self.rows: torch.Tensor | None = None  # (P,) long: the pooled positions (last: the read ones)
        self.cols: torch.Tensor | None = None  # (P,) long
        self.owner: torch.Tensor | None = None  # (P,) long: the text each belongs to
        self.num_texts = 0
        self.captured: dict[int, torch.Tensor] = {}  # hidden_states index -> (K, d) or (P, d) under tokens
        self.lm_head_calls = 0

    def _keep(self, index: int, states: torch.Tensor) -> torch.Tensor:
        # Under a device map (accelerate) blocks live on several devices: index where the states are.
        picked = states[self.rows.to(states.device), self.cols.to(states.device)]  # (P, d)
        if index in self.layers:
            self.captured[index] = pool_rows(picked, self.owner, self.num_texts, self.pooling)
        return picked

    def _block_hook(self, index: int):
        def hook(module, args, kwargs):
            states = args[0] if args else kwargs["hidden_states"]  # (B, T, d)
            self._keep(index, states)
            if index == self.stop_at:
                raise _StopPass

        return hook

    def _lm_head_hook(self, module, args):
        (states, *rest) = args  # (B, C, d): every column when logits_to_keep is not passed
        self.lm_head_calls += 1
        picked = self._keep(len(self.blocks), states)  # (P, d)
        if self.pooling != "last":
            picked = picked[:1]  # logits are kept for the last token only: one row is enough
        return (picked[None], *rest)  # (1, K, d)

    @contextmanager
    def attached(self) -> Iterator[_ReadRowRecorder]:
        handles = [
            block.register_forward_pre_hook(self._block_hook(i), with_kwargs=True)
            for i, block in enumerate(self.blocks)
            if i in self.layers or i == self.stop_at
        ]
        if self.stop_at is None:
            handles.append(self.lm_head.register_forward_pre_hook(self._lm_head_hook))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def run(self, model: torch.nn.Module, layout: BatchLayout, inputs: dict[str, torch.Tensor], positions=None):
        """One forward pass; returns ``(states (K, L, d), logits (K, V))`` in the group's order
        (tokens: states ``(P, L, d)`` grouped by text; logits None outside ``last``). ``positions``:
        :func:`~extraction.pooling.pooled_positions` of the layout, when the caller has them.
        A pass stopped early (``stop_at``) gives logits None."""
        device = inputs["input_ids"].device
        rows, cols, owner = positions if positions is not None else pooled_positions(layout, self.pooling)
        self.rows, self.cols, self.owner = rows.to(device), cols.to(device), owner.to(device)
        self.num_texts = len(layout.read_rows)
        self.captured, calls = {}, self.lm_head_calls
        try:
            output = model(**inputs, use_cache=False)
        except _StopPass:
            output = None
        stopped_as_planned = (output is None) == (self.stop_at is not None)
        lm_head_as_planned = self.lm_head_calls == calls + (output is not None)
        if not (stopped_as_planned and lm_head_as_planned and len(self.captured) == len(self.layers)):
            raise RuntimeError("the extraction hooks did not fire as expected")
        device = output.logits.device if output is not None else device
        states = torch.stack([self.captured[layer].to(device) for layer in self.layers], dim=1)  # (K, L, d)
        if output is None or self.pooling != "last":
            return states, None
        return states, output.logits[0]  # (K, L, d), (K, V)


def _run_hidden_states(
    model: torch.nn.Module,
    layout: BatchLayout,
    inputs: dict[str, torch.Tensor],
    layers: Sequence[int],
    pooling: Pooling = DEFAULT_POOLING,
    positions=None,
):
    """One forward pass with ``output_hidden_states``; returns ``(states (K, L, d), logits (K, V))``
    (tokens: states ``(P, L, d)``; logits None outside ``last``). ``positions`` as in
    :meth:`_ReadRowRecorder.run`."""
    device = inputs["input_ids"].device
    rows, cols = layout.read_rows.to(device), layout.read_cols.to(device)
    kwargs = {}
    use_logits_to_keep = _supports_logits_to_keep(model)
    if use_logits_to_keep and pooling != "last":
        kwargs["logits_to_keep"] = 1  # no logits are kept: lm_head for one column only
    elif use_logits_to_keep:
        # Only the read columns go through lm_head: (B, C, V) with C distinct columns.
        keep_cols, col_index = torch.unique(layout.read_cols, return_inverse=True)
        kwargs["logits_to_keep"] = keep_cols.to(device)
    output = model(**inputs, output_hidden_states=True, use_cache=False, **kwargs)
    all_states = output.hidden_states  # tuple of L+1 tensors (B, T, d)
    pool_r, pool_c, owner = positions if positions is not None else pooled_positions(layout, pooling)
    num_texts = len(layout.read_rows)
    # Under a device map (accelerate) layers live on several devices: index where each one is.
    picked = [
        pool_rows(
            all_states[i][pool_r.to(all_states[i].device), pool_c.to(all_states[i].device)], owner, num_texts, pooling
        )
        for i in layers
    ]  # L x (K, d), tokens: L x (P, d)
    states = torch.stack([layer_rows.to(device) for layer_rows in picked], dim=1)  # (K, L, d)
    if pooling != "last":
        return states, None
    logit_cols = col_index.to(device) if use_logits_to_keep else cols
    logits_device = output.logits.device
    return states, output.logits[rows.to(logits_device), logit_cols.to(logits_device)]  # (K, L, d), (K, V)


# model -> whether the hooks reproduce output_hidden_states (checked once per model).
_HOOKS_VERIFIED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def hooks_reproduce_hidden_states(loaded: LoadedModel) -> bool:
    """Whether hook capture gives the ``output_hidden_states`` rows and logits for this model.

    Checked once per model (the answer is remembered) on a probe batch of two right-padded
    texts of 5 and 3 tokens, every layer: equal within ``1e-5 + 1e-4 |x|`` in float32
    (``1e-2 + 1e-2 |x|`` in 16-bit dtypes; the computation is the same, only the
    ``lm_head`` call's shape differs). A wrong convention (an off-by-one layer, a state
    before the final norm) differs by far more than that.
    """
    model = loaded.model
    if model in _HOOKS_VERIFIED:
        return _HOOKS_VERIFIED[model]
    verdict = False
    blocks, lm_head = find_blocks(model, loaded.num_hidden_layers), loaded.lm_head
    if blocks is not None and lm_head is not None:
        vocab = loaded.vocab_size
        probe = [[(7 * k + 3) % vocab for k in range(5)], [(11 * k + 5) % vocab for k in range(3)]]
        layout = get_strategy("right").layout(probe, loaded.pad_token_id)
        inputs = layout.model_inputs(loaded.dtype, loaded.device)
        layers = list(range(loaded.num_hidden_layers + 1))
        atol, rtol = (1e-5, 1e-4) if loaded.dtype == torch.float32 else (1e-2, 1e-2)
        try:
            with torch.inference_mode():
                with _ReadRowRecorder(blocks, lm_head, layers).attached() as recorder:
                    hooked = recorder.run(model, layout, inputs)
                reference = _run_hidden_states(model, layout, inputs, layers)
            verdict = all(
                a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol)
                for a, b in zip(hooked, reference, strict=True)
            )
        except Exception as exc:  # any failure means: use the plain path
            logger.info("hook capture unavailable for %s (%s)", loaded.name, exc)
    if not verdict:
        logger.info("%s: hooks do not reproduce output_hidden_states; using output_hidden_states", loaded.name)
    _HOOKS_VERIFIED[model] = verdict
    return verdict
