"""Padding strategies: how texts are laid out in a batch and which position is read.

Each strategy is one small class registered under a stable name in :data:`STRATEGIES`.
A strategy does two things, both pure (no model needed):

* ``plan`` groups text indices into forward passes;
* ``layout`` turns the token ids of one group into a :class:`BatchLayout`: the input
  ids, the mask and position ids given to the model, and the (row, column) read for
  each text.

Adding a strategy means adding one class here and decorating it with ``@register``
(which is why the nine classes and their shared layout type stay in one ~400-line module).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import ClassVar, Literal

import torch

MaskKind = Literal["padding", "none", "block-diagonal"]

DEFAULT_BATCH_SIZE = 8
#: Upper bound on the positions (rows x columns) in one forward pass, so that one
#: long text in a batch cannot blow up memory: a batch is split before it exceeds this.
DEFAULT_MAX_BATCH_TOKENS = 8192
#: A packed row carries a T x T mask; it is kept shorter than this (or one text long).
MAX_PACK_TOKENS = 2048


@dataclass
class BatchLayout:
    """One forward pass: what the model is given and which positions are read.

    Shapes: ``B`` rows, ``T`` columns, ``K`` texts read from this batch.
    """

    input_ids: torch.Tensor  # (B, T) long
    segment_ids: torch.Tensor  # (B, T) long: index k (within the group) of the text at each position, -1 for padding
    position_ids: torch.Tensor | None  # (B, T) long, or None for the model's default arange(T)
    mask_kind: MaskKind  # "padding": a 2-D mask hides pads; "none": no mask; "block-diagonal": 4-D mask by segment
    read_rows: torch.Tensor  # (K,) long: batch row read for each text of the group
    read_cols: torch.Tensor  # (K,) long: column read for each text of the group
    #: (B, T) long: the text each position is pooled into under ``mean``/``tokens`` (-1: none);
    #: None means ``segment_ids`` (each text's own tokens). See :mod:`extraction.pooling`.
    pool_ids: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)  # type: ignore[return-value]

    def pooled_ids(self) -> torch.Tensor:
        """(B, T) long: the text (within the group) each position is pooled into, -1 for none."""
        return self.segment_ids if self.pool_ids is None else self.pool_ids

    @property
    def is_pad(self) -> torch.Tensor:
        """(B, T) bool: positions holding padding."""
        return self.segment_ids < 0

    def effective_position_ids(self) -> torch.Tensor:
        """(B, T) long: the position ids the model uses (its default is ``arange(T)``)."""
        if self.position_ids is not None:
            return self.position_ids
        rows, cols = self.input_ids.shape
        return torch.arange(cols).expand(rows, cols)

    def visibility(self) -> torch.Tensor:
        """(B, T, T) bool: ``[b, i, j]`` is True when query position i can attend to key j."""
        rows, cols = self.input_ids.shape
        return self.visibility_of(torch.arange(rows).repeat_interleave(cols), torch.arange(cols).repeat(rows)).view(
            rows, cols, cols
        )

    def visibility_of(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(K, T) bool: the keys query position ``(rows[k], cols[k])`` can attend to (the rows
        of :meth:`visibility` for those positions only, without building all ``B T`` of them)."""
        width = self.input_ids.shape[1]
        visible = torch.arange(width)[None, :] <= cols[:, None]  # (K, T) causal
        if self.mask_kind == "padding":
            visible &= ~self.is_pad[rows]
        elif self.mask_kind == "block-diagonal":
            segments = self.segment_ids[rows]  # (K, T)
            visible &= segments == segments.gather(1, cols[:, None])
        return visible

    def model_inputs(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model's forward call."""
        inputs: dict[str, torch.Tensor] = {"input_ids": self.input_ids.to(device)}
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids.to(device)
        if self.mask_kind == "padding":
            inputs["attention_mask"] = (~self.is_pad).long().to(device)
        elif self.mask_kind == "none":
            # An explicit all-ones mask, as concatenated tokenizer output carries. (With no
            # mask at all, transformers 5.x infers packed blocks from reset position ids.)
            inputs["attention_mask"] = torch.ones_like(self.input_ids).to(device)
        elif self.mask_kind == "block-diagonal":
            # Additive float mask (0 where allowed, dtype min elsewhere): read the same
            # way by the sdpa and eager attention implementations (a bool mask is not).
            allowed = self.visibility()[:, None]  # (B, 1, T, T)
            mask = torch.zeros(allowed.shape, dtype=dtype)
            mask.masked_fill_(~allowed, torch.finfo(dtype).min)
            inputs["attention_mask"] = mask.to(device)
        return inputs

    def read_facts(self) -> dict[str, torch.Tensor]:
        """Per text read (K,): token id and position id at the read position, and what it could see.

        Text ``k`` of the group is the text whose segment id is ``k`` (every layout numbers
        its texts that way: ``_pad`` gives row ``k`` segment ``k``, ``_pack`` gives the k-th
        packed text segment ``k``). Its own segment is ``k`` whatever the read position
        holds, so a read that lands on padding (segment -1) still knows whose read it is.

        ``read_is_pad``: the read position holds padding (a pad position's state is read).
        ``saw_other_text``: the read position could attend to a token of another text.
        ``saw_padding``: it could attend to a padding position (or is one).
        ``after_other_text`` / ``after_padding``: an earlier position of its row holds another
        text / padding, whether or not the mask lets it attend there (what a layer that does not
        read the mask, a recurrent state or a convolution, runs through).
        """
        rows, cols = self.read_rows, self.read_cols
        visible = self.visibility_of(rows, cols)  # (K, T)
        segments = self.segment_ids[rows]  # (K, T)
        own = torch.arange(len(rows))  # (K,): text k's segment id is k
        read_is_pad = self.segment_ids[rows, cols] < 0  # (K,)
        return {
            "token_ids": self.input_ids[rows, cols],
            "position_ids": self.effective_position_ids()[rows, cols],
            "read_is_pad": read_is_pad,
            "saw_other_text": (visible & (segments >= 0) & (segments != own[:, None])).any(-1),
            "saw_padding": (visible & (segments < 0)).any(-1) | read_is_pad,
            **row_before(segments, cols, own),
        }


def row_before(segments: torch.Tensor, cols: torch.Tensor, owner: torch.Tensor) -> dict[str, torch.Tensor]:
    """(K,) bool each: does an earlier position of the row (``segments`` (K, T), read at ``cols``
    (K,) for text ``owner`` (K,)) hold another text, or padding, mask or no mask."""
    earlier = torch.arange(segments.shape[1])[None, :] < cols[:, None]  # (K, T)
    return {
        "after_other_text": (earlier & (segments >= 0) & (segments != owner[:, None])).any(-1),
        "after_padding": (earlier & (segments < 0)).any(-1),
    }


def _pad(
    token_ids: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence. Returns input_ids (B, T) and segment_ids (B, T)."""
    width = max(len(ids) for ids in token_ids)
    input_ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    segment_ids = torch.full((len(token_ids), width), -1, dtype=torch.long)
    for row, ids in enumerate(token_ids):
        span = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
        input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
        segment_ids[row, span] = row
    return input_ids, segment_ids


def _chunks(
    order: Sequence[int], lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None
) -> list[list[int]]:
    """Split ``order`` into consecutive groups of at most ``batch_size`` texts whose padded
    size (texts x longest) stays within ``max_batch_tokens``; a group holds at least one text."""
    groups: list[list[int]] = []
    current: list[int] = []
    for index in order:
        candidate = current + [index]
        padded = len(candidate) * max(lengths[i] for i in candidate)
        if current and (len(candidate) > batch_size or (max_batch_tokens and padded > max_batch_tokens)):
            groups.append(current)
            candidate = [index]
        current = candidate
    if current:
        groups.append(current)
    return groups


class Strategy(ABC):
    """A way of batching texts and reading the last token's state."""

    name: ClassVar[str]
    #: What the strategy does, in one sentence.
    summary: ClassVar[str]
    #: When it gives wrong states, in one sentence.
    breaks_when: ClassVar[str]
    #: A known-buggy layout shown for contrast (never chosen to extract with).
    naive: ClassVar[bool] = False

    def plan(
        self, lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS
    ) -> list[list[int]]:
        """Group text indices into forward passes (default: input order)."""
        return _chunks(range(len(lengths)), lengths, batch_size, max_batch_tokens)

    def pass_shape(self, group_lengths: Sequence[int]) -> tuple[int, int]:
        """``(B, T)`` of the pass that :meth:`layout` builds for texts of these token lengths
        (default: one padded row per text), without building it."""
        return len(group_lengths), max(group_lengths)

    @abstractmethod
    def layout(self, token_ids: Sequence[Sequence[int]], pad_id: int) -> BatchLayout:
        """Lay out the token ids of one group; text k of the group is read at ``(read_rows[k], read_cols[k])``."""


STRATEGIES: dict[str, Strategy] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator adding one instance of ``cls`` to :data:`STRATEGIES` under ``cls.name``."""
    STRATEGIES[cls.name] = cls()
    return cls


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; ``ValueError`` naming the valid names otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}") from None


def parse_strategy_names(spec: str | Sequence[str] | None) -> list[str]:
    """``"all"``/None, a comma-separated string or a list -> validated names, ``single`` first."""
    if spec is None or spec == "all" or (not isinstance(spec, str) and list(spec) == ["all"]):
        return list(STRATEGIES)
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else [n.strip() for n in spec]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"no strategy named; valid: {', '.join(STRATEGIES)}")
    for name in names:
        get_strategy(name)
    ordered = [REFERENCE] + [n for n in dict.fromkeys(names) if n != REFERENCE]
    return ordered


@register
class Single(Strategy):
    """One text per forward pass, no padding: the ground truth every other strategy is compared with."""

    name = "single"
    summary = "One text per forward pass, no padding: the ground truth."
    breaks_when = "Never on correctness; it is the slowest way, one small forward pass per text."

    def plan(self, lengths, batch_size, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS):
        return [[i] for i in range(len(lengths))]

    def layout(self, token_ids, pad_id):
        (ids,) = token_ids
        input_ids, segment_ids = _pad([ids], pad_id, "right")
        return BatchLayout(input_ids, segment_ids, None, "none", torch.tensor([0]), torch.tensor([len(ids) - 1]))


@register
class RightNaive(Strategy):
    """Right padding, reading position -1: for every text shorter than the longest in its
    batch, position -1 holds a pad token, so the state read is a pad token's state. Pooled,
    it takes every column of the row (``hidden.mean(1)``): pads counted in the mean."""

    name = "right-naive"
    naive = True
    summary = "Right padding, reads position -1 (the classic bug)."
    breaks_when = "Whenever a batch holds texts of different lengths: position -1 of a shorter text is a pad token."

    def layout(self, token_ids, pad_id):
        input_ids, segment_ids = _pad(token_ids, pad_id, "right")
        rows = torch.arange(len(token_ids))
        cols = torch.full((len(token_ids),), input_ids.shape[1] - 1)
        whole_rows = rows[:, None].expand_as(input_ids).clone()  # every column counts for its row's text
        return BatchLayout(input_ids, segment_ids, None, "padding", rows, cols, pool_ids=whole_rows)


@register
class Right(Strategy):
    """Right padding, reading the last real token at ``attention_mask.sum() - 1``.

    Real tokens keep positions 0..n-1 and never see the pads after them (causal mask), so
    this is exact in full precision on every causal LM."""

    name = "right"
    summary = "Right padding, reads the last real token found from the attention mask."
    breaks_when = "Only through reduced-precision rounding: padded and unpadded kernels round differently."

    def layout(self, token_ids, pad_id):
        input_ids, segment_ids = _pad(token_ids, pad_id, "right")
        rows = torch.arange(len(token_ids))
        cols = (segment_ids >= 0).sum(-1) - 1
        return BatchLayout(input_ids, segment_ids, None, "padding", rows, cols)


@register
class LeftNaive(Strategy):
    """Left padding with the model's default position ids ``arange(T)``: a text after k pads
    starts at position k. Harmless with rotary (relative) positions, wrong with absolute
    position embeddings (GPT-2)."""

    name = "left-naive"
    naive = True
    summary = "Left padding, the model's default position ids (the real tokens' positions are shifted)."
    breaks_when = "On models with absolute position embeddings (GPT-2 type): shifted positions change every layer."

    def layout(self, token_ids, pad_id):
        input_ids, segment_ids = _pad(token_ids, pad_id, "left")
        rows = torch.arange(len(token_ids))
        cols = torch.full((len(token_ids),), input_ids.shape[1] - 1)
        return BatchLayout(input_ids, segment_ids, None, "padding", rows, cols)


@register
class Left(Strategy):
    """Left padding with position ids from the mask, ``(mask.cumsum(-1) - 1).clamp(min=0)``,
    so each text's real tokens sit at positions 0..n-1 as in single-sample extraction."""

    name = "left"
    summary = "Left padding, position ids computed from the attention mask."
    breaks_when = "Only through reduced-precision rounding."

    def layout(self, token_ids, pad_id):
        input_ids, segment_ids = _pad(token_ids, pad_id, "left")
        mask = (segment_ids >= 0).long()
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = torch.arange(len(token_ids))
        cols = torch.full((len(token_ids),), input_ids.shape[1] - 1)
        return BatchLayout(input_ids, segment_ids, position_ids, "padding", rows, cols)


@register
class Bucketed(Strategy):
    """Only texts of equal token length share a batch, so there is no padding at all.
    Exact, but texts of unique lengths run alone."""

    name = "bucketed"
    summary = "Only texts of equal token length share a batch: no padding at all."
    breaks_when = "Only through reduced-precision rounding; it is slow when few texts share a length."

    def plan(self, lengths, batch_size, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS):
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        groups: list[list[int]] = []
        for _, same_length in groupby(order, key=lambda i: lengths[i]):
            groups.extend(_chunks(list(same_length), lengths, batch_size, max_batch_tokens))
        return groups

    def layout(self, token_ids, pad_id):
        if len({len(ids) for ids in token_ids}) != 1:
            raise ValueError("bucketed batches must hold texts of one length")
        input_ids, segment_ids = _pad(token_ids, pad_id, "right")
        rows = torch.arange(len(token_ids))
        cols = torch.full((len(token_ids),), input_ids.shape[1] - 1)
        return BatchLayout(input_ids, segment_ids, None, "none", rows, cols)


@register
class Sorted(Right):
    """Texts sorted by token length, then right-padded batches read at the last real token:
    neighbours have similar lengths, so little padding is computed."""

    name = "sorted"
    summary = "Sorted by length, then right-padded batches read at the last real token."
    breaks_when = "Only through reduced-precision rounding."

    def plan(self, lengths, batch_size, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS):
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return _chunks(order, lengths, batch_size, max_batch_tokens)


def _pack(token_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate texts in one row. Returns input_ids (1, T), segment_ids (1, T),
    position_ids (1, T) restarting at 0 for each text, and the read columns (K,)."""
    input_ids = torch.tensor([[t for ids in token_ids for t in ids]], dtype=torch.long)
    segment_ids = torch.tensor([[k for k, ids in enumerate(token_ids) for _ in ids]], dtype=torch.long)
    position_ids = torch.tensor([[p for ids in token_ids for p in range(len(ids))]], dtype=torch.long)
    ends = torch.tensor([len(ids) for ids in token_ids]).cumsum(0) - 1
    return input_ids, segment_ids, position_ids, ends


def _plan_packs(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None) -> list[list[int]]:
    budget = min(max_batch_tokens or MAX_PACK_TOKENS, MAX_PACK_TOKENS)
    groups: list[list[int]] = []
    current: list[int] = []
    for index in range(len(lengths)):
        total = sum(lengths[i] for i in current) + lengths[index]
        if current and (len(current) >= batch_size or total > budget):
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups


@register
class Packed(Strategy):
    """Texts concatenated in one row, position ids restarting per text, and a 4-D
    block-diagonal causal mask so that each text sees only its own earlier tokens."""

    name = "packed"
    summary = "Texts concatenated in one row, position ids reset per text, block-diagonal causal mask."
    breaks_when = "If the attention implementation ignores or misreads the 4-D mask, or in reduced precision."

    def plan(self, lengths, batch_size, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS):
        return _plan_packs(lengths, batch_size, max_batch_tokens)

    def pass_shape(self, group_lengths):
        return 1, sum(group_lengths)

    def layout(self, token_ids, pad_id):
        input_ids, segment_ids, position_ids, ends = _pack(token_ids)
        return BatchLayout(input_ids, segment_ids, position_ids, "block-diagonal", torch.zeros_like(ends), ends)


@register
class PackedNaive(Packed):
    """Packed like ``packed`` but with a plain all-ones mask, as concatenated tokenizer output
    carries: causal attention over the whole row, so every text after the first attends to
    the texts before it. (Passing no mask at all is different: transformers 5.x then infers
    the blocks from the reset position ids and the result is exact.)"""

    name = "packed-naive"
    naive = True
    summary = "Texts concatenated in one row, position ids reset per text, an all-ones mask: texts see each other."
    breaks_when = "Always, for every text that has another text before it in the row."

    def layout(self, token_ids, pad_id):
        input_ids, segment_ids, position_ids, ends = _pack(token_ids)
        return BatchLayout(input_ids, segment_ids, position_ids, "none", torch.zeros_like(ends), ends)


REFERENCE = Single.name
