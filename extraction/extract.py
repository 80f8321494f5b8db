"""Run a strategy over tokenized texts and keep only the rows the pooling needs.

For every text this keeps, under ``pooling="last"`` (the default), the state of its last
real token at every layer; under ``"mean"`` the mean of the states at the positions its
layout pools (:mod:`extraction.pooling`), and under ``"tokens"`` one row per such position.
States follow (the ``hidden_states``
convention: index 0 is the embeddings output, i.e. the input of the first block, index
i the output of block i, and the last index the state the model feeds to ``lm_head``,
i.e. after the final norm) and the next-token logits at the position read.

Two ways of capturing those rows give the same numbers:

* ``"hooks"`` (the default where it applies): a forward pre-hook on every block keeps
  only the read rows of the block's input, ``(K, d)`` instead of ``(B, T, d)``, and a
  pre-hook on ``lm_head`` keeps the read rows of its input (the final state) and hands
  ``lm_head`` only those rows, so the vocabulary projection runs for ``K`` positions
  and not for every column of every row. No full per-position state outlives its block.
* ``"hidden-states"``: ``output_hidden_states=True``, every layer's ``(B, T, d)`` kept
  for the whole forward pass, then indexed; logits limited with ``logits_to_keep``.

``capture="auto"`` checks once per model, on a two-text probe batch, that the hooks
give what ``output_hidden_states`` gives, and falls back to it where they do not
(a model whose blocks cannot be found, or that transforms the final state before
``lm_head``).
"""

from __future__ import annotations

import inspect
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from .pooling import DEFAULT_POOLING, Pooling, parse_pooling, pool_rows, pooled_positions, row_offsets, span_facts
from .strategies import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, BatchLayout, Strategy, get_strategy
from .texts import TokenizedTexts

if TYPE_CHECKING:
    from .models import LoadedModel

logger = logging.getLogger(__name__)

#: ``progress(done_texts, total_texts)``, called after every forward pass.
ProgressCallback = Callable[[int, int], None]

CaptureMode = Literal["auto", "hooks", "hidden-states"]
CAPTURE_MODES: tuple[CaptureMode, ...] = ("auto", "hooks", "hidden-states")
_BLOCK_LIST_NAMES = ("layers", "h", "blocks", "layer", "decoder_layers")


@dataclass
class ExtractionResult:
    """The rows one strategy extracted, in input order (``N`` texts, ``L`` layers kept, width ``d``).

    Under ``pooling="tokens"`` ``hidden`` holds ``R`` rows, text ``i`` owning
    ``hidden[offsets[i]:offsets[i + 1]]``; the per-text facts below are then about the
    text's pooled positions (see :func:`extraction.pooling.span_facts`).
    """

    strategy: str
    hidden: torch.Tensor  # (N, L, d) float32 on cpu (tokens: (R, L, d)): the pooled state per kept layer
    layers: list[int]  # hidden_states index of each of the L kept layers
    logits: torch.Tensor | None  # (N, V) float32: the model's own next-token logits at the read position (last only)
    read_token_ids: torch.Tensor  # (N,) token id at the position read (pooled: at the text's last real token)
    read_position_ids: torch.Tensor  # (N,) position id the model used there
    read_is_pad: torch.Tensor  # (N,) bool: a read (pooled) position held padding: a pad state read, counted or kept
    saw_other_text: torch.Tensor  # (N,) bool: the read (a pooled) position could attend to another text
    saw_padding: torch.Tensor  # (N,) bool: it could attend to (or is) a pad position
    forward_passes: int
    real_tokens: int  # tokens of the texts themselves
    computed_positions: int  # positions the model computed, padding included
    seconds: float
    capture: str = "hidden-states"  # how the rows were captured: "hooks" or "hidden-states"
    pooling: Pooling = DEFAULT_POOLING
    # (N,) bool: another text / padding sat earlier in the read (a pooled) position's row, whether
    # or not the mask hid it: what a layer that ignores the mask (recurrent, convolution) runs through.
    after_other_text: torch.Tensor | None = None
    after_padding: torch.Tensor | None = None
    offsets: torch.Tensor | None = None  # (N + 1,) int64 under "tokens": text i owns rows offsets[i]:offsets[i+1]

    @property
    def num_texts(self) -> int:
        return len(self.read_token_ids)

    def rows_of(self, text: int) -> torch.Tensor:
        """Text ``text``'s rows: ``(L, d)`` for ``last``/``mean``, ``(n, L, d)`` for ``tokens``."""
        if self.offsets is None:
            return self.hidden[text]
        return self.hidden[int(self.offsets[text]) : int(self.offsets[text + 1])]

    @property
    def pad_fraction(self) -> float:
        """Fraction of computed positions that were padding."""
        return 1.0 - self.real_tokens / self.computed_positions if self.computed_positions else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / self.seconds if self.seconds > 0 else float("inf")


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
    """

    def __init__(
        self,
        blocks: torch.nn.ModuleList,
        lm_head: torch.nn.Module,
        layers: Sequence[int],
        pooling: Pooling = DEFAULT_POOLING,
    ):
        self.blocks, self.lm_head = blocks, lm_head
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
            if i in self.layers
        ]
        handles.append(self.lm_head.register_forward_pre_hook(self._lm_head_hook))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def run(self, model: torch.nn.Module, layout: BatchLayout, inputs: dict[str, torch.Tensor], positions=None):
        """One forward pass; returns ``(states (K, L, d), logits (K, V))`` in the group's order
        (tokens: states ``(P, L, d)`` grouped by text; logits None outside ``last``). ``positions``:
        :func:`~extraction.pooling.pooled_positions` of the layout, when the caller has them."""
        device = inputs["input_ids"].device
        rows, cols, owner = positions if positions is not None else pooled_positions(layout, self.pooling)
        self.rows, self.cols, self.owner = rows.to(device), cols.to(device), owner.to(device)
        self.num_texts = len(layout.read_rows)
        self.captured, calls = {}, self.lm_head_calls
        output = model(**inputs, use_cache=False)
        if self.lm_head_calls != calls + 1 or len(self.captured) != len(self.layers):
            raise RuntimeError("the extraction hooks did not fire as expected")
        device = output.logits.device
        states = torch.stack([self.captured[layer].to(device) for layer in self.layers], dim=1)  # (K, L, d)
        return states, output.logits[0] if self.pooling == "last" else None  # (K, L, d), (K, V)


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


def extract_states(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    strategy: str | Strategy,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    layers: Sequence[int] | None = None,
    keep_logits: bool = True,
    progress: ProgressCallback | None = None,
    capture: CaptureMode = "auto",
    pooling: Pooling = DEFAULT_POOLING,
) -> ExtractionResult:
    """Extract the states of every text with ``strategy``, pooled by ``pooling``
    (:mod:`extraction.pooling`; logits are kept under ``last`` only).

    ``layers`` selects ``hidden_states`` indices to keep (default all, ``0..num_layers``).
    ``capture`` picks how the rows are taken (see the module docstring): ``"auto"``
    (hooks where verified for this model), ``"hooks"`` (raises ``ValueError`` where they
    do not apply) or ``"hidden-states"``.
    """
    strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
    pooling = parse_pooling(pooling)
    keep_logits = keep_logits and pooling == "last"
    layers = _checked_layers(loaded, layers, batch_size, capture)
    use_hooks = _use_hooks(loaded, capture)
    groups = strategy.plan(tokenized.lengths, batch_size, max_batch_tokens)
    rows = _Rows.empty(len(tokenized), len(layers), loaded.hidden_size, pooling)
    start = time.perf_counter()
    computed = _run_passes(loaded, tokenized, strategy, groups, layers, pooling, keep_logits, use_hooks, rows, progress)
    seconds = time.perf_counter() - start
    result = rows.result(strategy.name, layers, pooling, len(groups), sum(tokenized.lengths), computed, seconds)
    result.capture = "hooks" if use_hooks else "hidden-states"
    logger.info(
        "%s: %d texts, %d passes, %.1f tokens/s, %.0f%% padding (%s)",
        strategy.name,
        len(tokenized),
        len(groups),
        result.tokens_per_second,
        100 * result.pad_fraction,
        result.capture,
    )
    return result


def _checked_layers(
    loaded: LoadedModel, layers: Sequence[int] | None, batch_size: int, capture: CaptureMode
) -> list[int]:
    """The ``hidden_states`` indices to keep (default all), after checking the arguments."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if capture not in CAPTURE_MODES:
        raise ValueError(f"unknown capture {capture!r}; valid: {', '.join(CAPTURE_MODES)}")
    num_states = loaded.num_hidden_layers + 1
    layers = list(range(num_states)) if layers is None else list(layers)
    for layer in layers:
        if not 0 <= layer < num_states:
            raise ValueError(f"layer {layer} out of range: this model has hidden_states 0..{num_states - 1}")
    return layers


def _use_hooks(loaded: LoadedModel, capture: CaptureMode) -> bool:
    """Whether this extraction captures by hooks (``capture="hooks"`` where they do not apply raises)."""
    use_hooks = capture != "hidden-states" and hooks_reproduce_hidden_states(loaded)
    if capture == "hooks" and not use_hooks:
        raise ValueError(f"hook capture does not reproduce output_hidden_states on {loaded.name}; use 'hidden-states'")
    return use_hooks


_FACTS = (
    ("token_ids", torch.long),
    ("position_ids", torch.long),
    ("read_is_pad", torch.bool),
    ("saw_other_text", torch.bool),
    ("saw_padding", torch.bool),
    ("after_other_text", torch.bool),
    ("after_padding", torch.bool),
    ("rows", torch.long),
)


@dataclass
class _Rows:
    """What the passes fill, text by text, until it becomes an :class:`ExtractionResult`."""

    hidden: torch.Tensor  # (N, L, d) float32 (tokens: (0, L, d) until the texts' rows are joined)
    token_rows: list[torch.Tensor | None]  # tokens: text i's (n_i, L, d)
    facts: dict[str, torch.Tensor]  # name -> (N,) per-text fact of :func:`span_facts`
    logits: torch.Tensor | None = None  # (N, V), allocated once the vocabulary width is known

    @classmethod
    def empty(cls, n: int, num_layers: int, width: int, pooling: Pooling) -> _Rows:
        hidden = torch.empty(n if pooling != "tokens" else 0, num_layers, width, dtype=torch.float32)  # (N, L, d)
        facts = {key: torch.empty(n, dtype=dtype) for key, dtype in _FACTS}
        return cls(hidden, [None] * n, facts)

    def add(self, group: list[int], states: torch.Tensor, group_logits, group_facts, pooling: Pooling) -> None:
        """One pass's rows: ``states`` (K, L, d) (tokens: (P, L, d)), ``group_logits`` (K, V) or None."""
        if pooling == "tokens":
            for index, text_rows in zip(group, states.float().cpu().split(group_facts["rows"].tolist()), strict=True):
                self.token_rows[index] = text_rows
        else:
            self.hidden[group] = states.float().cpu()
        if group_logits is not None:
            if self.logits is None:
                self.logits = torch.empty(len(self.token_rows), group_logits.shape[-1], dtype=torch.float32)
            self.logits[group] = group_logits.float().cpu()
        for key, value in group_facts.items():
            self.facts[key][group] = value

    def result(
        self,
        strategy: str,
        layers: list[int],
        pooling: Pooling,
        passes: int,
        real_tokens: int,
        computed: int,
        seconds: float,
    ) -> ExtractionResult:
        offsets = None
        hidden = self.hidden
        if pooling == "tokens":
            hidden = torch.cat(self.token_rows) if self.token_rows else hidden
            self.token_rows.clear()
            offsets = row_offsets(self.facts["rows"])
        facts = self.facts
        return ExtractionResult(
            strategy=strategy,
            hidden=hidden,
            layers=layers,
            logits=self.logits,
            read_token_ids=facts["token_ids"],
            read_position_ids=facts["position_ids"],
            read_is_pad=facts["read_is_pad"],
            saw_other_text=facts["saw_other_text"],
            saw_padding=facts["saw_padding"],
            after_other_text=facts["after_other_text"],
            after_padding=facts["after_padding"],
            forward_passes=passes,
            real_tokens=real_tokens,
            computed_positions=computed,
            seconds=seconds,
            pooling=pooling,
            offsets=offsets,
        )


def _run_passes(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    strategy: Strategy,
    groups: list[list[int]],
    layers: list[int],
    pooling: Pooling,
    keep_logits: bool,
    use_hooks: bool,
    rows: _Rows,
    progress: ProgressCallback | None,
) -> int:
    """One forward pass per group, its rows added to ``rows``; returns the positions computed."""
    model = loaded.model
    recorder = (
        _ReadRowRecorder(find_blocks(model, loaded.num_hidden_layers), loaded.lm_head, layers, pooling)
        if use_hooks
        else None
    )
    computed = done = 0
    with torch.inference_mode(), recorder.attached() if recorder else _nothing():
        for group in groups:
            layout = strategy.layout([tokenized.token_ids[i] for i in group], loaded.pad_token_id)
            computed += layout.input_ids.numel()
            inputs = layout.model_inputs(loaded.dtype, loaded.device)
            positions = pooled_positions(layout, pooling)  # (P,) rows, cols, owner: computed once a pass
            if recorder is not None:
                states, group_logits = recorder.run(model, layout, inputs, positions)  # (K, L, d), (K, V)
            else:
                states, group_logits = _run_hidden_states(model, layout, inputs, layers, pooling, positions)
            group_facts = span_facts(layout, pooling, positions)
            rows.add(group, states, group_logits if keep_logits else None, group_facts, pooling)
            done += len(group)
            if progress is not None:
                progress(done, len(tokenized))
    return computed


@contextmanager
def _nothing() -> Iterator[None]:
    yield None
