"""Run a strategy over tokenized texts and keep only the rows the pooling needs.

For every text this keeps, under ``pooling="last"`` (the default), the state of its last
real token at every layer; under ``"mean"`` the mean of the states at the positions its
layout pools (:mod:`extraction.pooling`), and under ``"tokens"`` one row per such position.
States follow (the ``hidden_states``
convention: index 0 is the embeddings output, i.e. the input of the first block, index
i the output of block i, and the last index the state the model feeds to ``lm_head``,
i.e. after the final norm) and the next-token logits at the position read.

Two ways of capturing those rows give the same numbers (:mod:`extraction.capture`): forward
hooks on the blocks (the default where this model's hooks are verified), or
``output_hidden_states``. Under hooks a pass runs only the blocks the deepest state asked needs
(:func:`~extraction.capture.blocks_needed`): ``layers=[12]`` on a 30-block model without logits
runs 12 blocks, no final norm and no ``lm_head``. The result says what each pass ran
(:attr:`ExtractionResult.blocks_run`, ``lm_head_run``, ``pass_note``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from .capture import (
    _ReadRowRecorder,
    _run_hidden_states,
    blocks_needed,
    find_blocks,
    hooks_reproduce_hidden_states,
)
from .pooling import DEFAULT_POOLING, Pooling, parse_pooling, pooled_positions, row_offsets, span_facts
from .strategies import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, Strategy, get_strategy
from .texts import TokenizedTexts

if TYPE_CHECKING:
    from .models import LoadedModel

logger = logging.getLogger(__name__)

#: ``progress(done_texts, total_texts)``, called after every forward pass.
ProgressCallback = Callable[[int, int], None]

CaptureMode = Literal["auto", "hooks", "hidden-states"]
CAPTURE_MODES: tuple[CaptureMode, ...] = ("auto", "hooks", "hidden-states")


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
    # What each pass ran: blocks_run of the model's blocks (all of them for the whole pass; fewer when
    # it stopped after the deepest layer kept), whether lm_head ran, and a sentence saying why.
    blocks_run: int | None = None
    lm_head_run: bool = True
    pass_note: str = ""

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
    planned = _planned_pass(loaded, layers, keep_logits, use_hooks, capture)
    blocks = planned.blocks_run
    groups = strategy.plan(tokenized.lengths, batch_size, max_batch_tokens)
    rows = _Rows.empty(len(tokenized), len(layers), loaded.hidden_size, pooling, keep_logits)
    start = time.perf_counter()
    computed = _run_passes(loaded, tokenized, strategy, groups, layers, pooling, blocks, use_hooks, rows, progress)
    seconds = time.perf_counter() - start
    result = rows.result(strategy.name, layers, pooling, len(groups), sum(tokenized.lengths), computed, seconds)
    result.capture = "hooks" if use_hooks else "hidden-states"
    result.blocks_run, result.lm_head_run, result.pass_note = blocks, planned.lm_head_run, planned.note
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


@dataclass(frozen=True)
class ForwardPass:
    """What each forward pass of an extraction runs: ``blocks_run`` of the model's ``num_blocks``
    blocks, then the final norm and ``lm_head`` only for the whole pass, and a sentence saying why."""

    blocks_run: int
    num_blocks: int
    note: str

    @property
    def lm_head_run(self) -> bool:
        return self.blocks_run == self.num_blocks

    @property
    def fraction(self) -> float:
        """Share of the blocks' FLOPs each pass computes (``blocks_run / num_blocks``)."""
        return self.blocks_run / self.num_blocks if self.num_blocks else 1.0

    def to_dict(self) -> dict:
        return {"blocks_run": self.blocks_run, "num_blocks": self.num_blocks, "lm_head_run": self.lm_head_run,
                "note": self.note}  # fmt: skip


def forward_pass(
    loaded: LoadedModel, layers: Sequence[int] | None, keep_logits: bool, capture: CaptureMode = "auto"
) -> ForwardPass:
    """What :func:`extract_states` with these ``layers`` (None: all), ``keep_logits`` and ``capture``
    runs in each pass on this model, without running it (the hooks' check runs once per model)."""
    layers = list(range(loaded.num_hidden_layers + 1)) if layers is None else list(layers)
    use_hooks = capture != "hidden-states" and hooks_reproduce_hidden_states(loaded)
    return _planned_pass(loaded, layers, keep_logits, use_hooks, capture)


def _planned_pass(
    loaded: LoadedModel, layers: list[int], keep_logits: bool, use_hooks: bool, capture: CaptureMode
) -> ForwardPass:
    """The blocks the deepest state of ``layers`` needs under hooks
    (:func:`~extraction.capture.blocks_needed`), else the whole pass, and why."""
    total = loaded.num_hidden_layers
    needed = blocks_needed(total, layers, keep_logits)
    if needed == total:
        why = "the logits were asked" if keep_logits else f"hidden_states[{total}] (after the final norm) was asked"
        return ForwardPass(total, total, f"the whole pass ({total} blocks and lm_head): {why}")
    if not use_hooks:
        how = (
            "capture='hidden-states' runs the whole pass"
            if capture == "hidden-states"
            else "hook capture is not verified on this model (its blocks cannot be found, or lm_head's input is "
            "not hidden_states[-1]), so nothing can stop the pass"
        )
        return ForwardPass(
            total, total, f"the whole pass ({total} blocks and lm_head) for hidden_states[{needed}]: {how}"
        )
    return ForwardPass(needed, total, (
        f"each pass stopped after block {needed} of {total} (hidden_states[{needed}], the deepest layer kept); "
        f"lm_head was not run: no logits were asked and hidden_states[{total}] was not kept"
    ))  # fmt: skip


#: The one wording, wherever ``lm_head`` (its top-1 agreement, the logit lens, a probe's zero-shot
#: accuracy) was not run because no layer asked is the last: ``LM_HEAD_NOT_RUN.format(deepest=12)``.
LM_HEAD_NOT_RUN = "lm_head not run: layers up to {deepest} asked for"


def lm_head_not_run(layers: Sequence[int]) -> str:
    """:data:`LM_HEAD_NOT_RUN` for ``layers`` (``hidden_states`` indices), e.g.
    "lm_head not run: layers up to 12 asked for"."""
    return LM_HEAD_NOT_RUN.format(deepest=max(layers, default=0))


def wants_lm_head(lm_head: bool | None, layers: Sequence[int], num_states: int) -> bool:
    """Whether a check runs ``lm_head`` (and so the whole pass): ``lm_head`` True or False as asked;
    None (the default) only when the last hidden state, ``num_states - 1``, is among ``layers``
    (the pass then runs every block anyway). Off, the pass stops after the deepest of ``layers``
    (:func:`~extraction.capture.blocks_needed`) and the caller says :func:`lm_head_not_run`."""
    if lm_head is not None:
        return bool(lm_head)
    return num_states - 1 in layers


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
    keep_logits: bool
    logits: torch.Tensor | None = None  # (N, V), allocated once the vocabulary width is known

    @classmethod
    def empty(cls, n: int, num_layers: int, width: int, pooling: Pooling, keep_logits: bool) -> _Rows:
        hidden = torch.empty(n if pooling != "tokens" else 0, num_layers, width, dtype=torch.float32)  # (N, L, d)
        facts = {key: torch.empty(n, dtype=dtype) for key, dtype in _FACTS}
        return cls(hidden, [None] * n, facts, keep_logits)

    def add(self, group: list[int], states: torch.Tensor, group_logits, group_facts, pooling: Pooling) -> None:
        """One pass's rows: ``states`` (K, L, d) (tokens: (P, L, d)), ``group_logits`` (K, V) or None."""
        if pooling == "tokens":
            for index, text_rows in zip(group, states.float().cpu().split(group_facts["rows"].tolist()), strict=True):
                self.token_rows[index] = text_rows
        else:
            self.hidden[group] = states.float().cpu()
        if group_logits is not None and self.keep_logits:
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
    blocks: int,
    use_hooks: bool,
    rows: _Rows,
    progress: ProgressCallback | None,
) -> int:
    """One forward pass per group (each running ``blocks`` blocks), its rows added to ``rows``;
    returns the positions computed."""
    model = loaded.model
    recorder = (
        _ReadRowRecorder(find_blocks(model, loaded.num_hidden_layers), loaded.lm_head, layers, pooling, blocks)
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
            rows.add(group, states, group_logits, group_facts, pooling)
            done += len(group)
            if progress is not None:
                progress(done, len(tokenized))
    return computed


@contextmanager
def _nothing() -> Iterator[None]:
    yield None
