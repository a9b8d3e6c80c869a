"""Packed SFT batches over rendered conversations: deterministic, resumable, split over ranks.

Packing rule (:class:`PackedConversations`).  A row holds ``C = seq_len + 1`` tokens.  Every loader
epoch lists each source's kept examples ``epochs`` times (a fractional part adds a seeded random
subset, redrawn per epoch), shuffled with the seed and the epoch number.  Examples stream through a
lookahead buffer of ``pack_buffer`` examples.  A row starts with the oldest buffered example (so
none waits more than ``pack_buffer`` rows), then is filled best-fit: again and again the longest
buffered example that still fits (the oldest among equal lengths), the buffer being refilled after
every pick, until none fits.  Examples are never split.  The slots left, if any, are padding:
``pad_id`` tokens forming their own document, never trained.  With a large buffer nearly every row
is full; ``pack_buffer=1`` is plain sequential next-fit packing.

Row -> sample.  For row tokens ``x[0..C-1]``: ``input_ids = x[:-1]``; ``labels[t] = x[t+1]`` when
``x[t+1]`` is a trained token of the same document as ``x[t]``, else -100, so the last token of one
example never predicts the first of the next; ``position_ids`` restart at 0 for each document and
``doc_ids`` number the documents of the row (0, 1, ...; the padding is one more).  The model must be
given ``position_ids`` and ``doc_ids`` (document-causal attention) or packed examples see each other.

Ranks.  Global row ``g`` belongs to rank ``g % world_size``.  Every rank computes the whole schedule
(example lengths only) and reads the tokens of its own rows, so ranks get disjoint rows whose union
is the 1-rank stream, and the loader state is the same on every rank.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ..typed_config import bounded
from .conversations import (
    IGNORE_INDEX,
    OVERLONG_MODES,
    ConversationSource,
    ConversationStats,
    ExampleStore,
    load_conversations,
)
from .mixture import Batch

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

_SUBSET, _SHUFFLE = 1, 0  # seed-sequence tags of the two random draws of an epoch


@dataclass
class SFTDataConfig:
    """SFT data of a training stage (the trainer adds seq_len, batch size, rank and world size).

    Attributes:
        sources: the conversation sources (each used ``epochs`` times per loader epoch).
        overlong: ``drop`` examples longer than seq_len + 1 tokens, or ``truncate`` them (see
            ``conversations.py``).
        pack_buffer: lookahead of the best-fit packing, in examples (1: sequential packing).
        seed: order of the examples (reshuffled every epoch) and fractional-epoch subsets.
    """

    sources: list[ConversationSource] = field(default_factory=list)
    overlong: Literal["drop", "truncate"] = "drop"
    pack_buffer: int = 1024
    seed: int = bounded(0, ge=0)

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):  # an empty list is checked where SFT is used
            raise ValueError(f"SFT sources need distinct names, got {names}")
        if self.overlong not in OVERLONG_MODES:
            raise ValueError(f"overlong must be one of {OVERLONG_MODES}, got {self.overlong!r}")
        if self.pack_buffer < 1:
            raise ValueError(f"pack_buffer must be >= 1, got {self.pack_buffer}")


@dataclass
class PackState:
    """Where the packing schedule stands; ``state_dict`` adds the buffered examples."""

    epoch: int = 0
    cursor: int = 0  # examples of this epoch's order already moved into the buffer
    rows: int = 0  # global rows produced (all ranks)


class PackedConversations:
    """The row schedule: which examples make each row (see the module docstring).

    ``lengths`` [n] and ``source`` [n] describe the examples; ``epochs[s]`` is how often source ``s``
    is used per epoch.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        source: np.ndarray,
        epochs: Sequence[float],
        capacity: int,
        seed: int = 0,
        pack_buffer: int = 1024,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) and (self.lengths.max() > capacity or self.lengths.min() < 1):
            raise ValueError(f"example lengths must lie in [1, {capacity}]")
        self.capacity, self.seed, self.pack_buffer = capacity, seed, pack_buffer
        self.epochs = [float(e) for e in epochs]
        self._by_source = [np.flatnonzero(np.asarray(source) == s) for s in range(len(self.epochs))]
        self.epoch_size = sum(
            int(e) * len(ix) + round((e % 1) * len(ix))
            for e, ix in zip(self.epochs, self._by_source, strict=True)
        )
        if self.epoch_size == 0:
            raise ValueError("SFT data has no examples to pack (all sources empty or at 0 epochs)")
        self._order_epoch, self._order = -1, np.empty(0, dtype=np.int64)
        self.load_state_dict({})

    # ------------------------------------------------------------------ stream
    def order(self, epoch: int) -> np.ndarray:
        """Examples of one epoch in packing order."""
        if epoch != self._order_epoch:
            parts = []
            for s, (e, idx) in enumerate(zip(self.epochs, self._by_source, strict=True)):
                parts += [idx] * int(e)
                if k := round((e % 1) * len(idx)):
                    rng = np.random.default_rng([self.seed, epoch, _SUBSET, s])
                    parts.append(np.sort(rng.choice(idx, size=k, replace=False)))
            order = np.concatenate(parts).astype(np.int64)
            shuffle = np.random.default_rng([self.seed, epoch, _SHUFFLE]).permutation(len(order))
            self._order, self._order_epoch = order[shuffle], epoch
        return self._order

    def _push(self, example: int) -> None:
        key = (int(self.lengths[example]), self._arrivals, example)
        bisect.insort(self._sorted, key)
        self._fifo.append(key)
        self._arrivals += 1

    def _fill(self) -> None:
        """Top the buffer up to ``pack_buffer`` examples from the stream."""
        while len(self._sorted) < self.pack_buffer:
            order = self.order(self.state.epoch)
            self._push(int(order[self.state.cursor]))
            self.state.cursor += 1
            if self.state.cursor == len(order):
                self.state.epoch, self.state.cursor = self.state.epoch + 1, 0

    def _take(self, key: tuple[int, int, int]) -> int:
        self._sorted.pop(bisect.bisect_left(self._sorted, key))
        self._taken.add(key[1])
        return key[2]

    def _oldest(self) -> tuple[int, int, int]:
        while self._fifo[0][1] in self._taken:
            self._taken.discard(self._fifo.popleft()[1])
        return self._fifo[0]

    def _longest_fitting(self, room: int) -> tuple[int, int, int] | None:
        """The longest buffered example of at most ``room`` tokens, the oldest among equals."""
        i = bisect.bisect_right(self._sorted, (room, math.inf, math.inf)) - 1
        if i < 0:
            return None
        return self._sorted[bisect.bisect_left(self._sorted, (self._sorted[i][0], -1, -1))]

    def next_row(self) -> list[int]:
        """Examples of the next global row, in row order."""
        self._fill()
        row = [self._take(self._oldest())]
        room = self.capacity - int(self.lengths[row[0]])
        while room > 0:
            self._fill()
            key = self._longest_fitting(room)
            if key is None:
                break
            row.append(self._take(key))
            room -= key[0]
        self.state.rows += 1
        return row

    # ------------------------------------------------------------------ state
    def buffered(self) -> list[int]:
        """Buffered examples, oldest first."""
        return [key[2] for key in self._fifo if key[1] not in self._taken]

    @property
    def epochs_done(self) -> float:
        """Epochs of examples placed in rows so far (fractional)."""
        placed = self.state.epoch * self.epoch_size + self.state.cursor - len(self._sorted)
        return placed / self.epoch_size

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position of the schedule."""
        return {
            "epoch": self.state.epoch,
            "cursor": self.state.cursor,
            "buffer": self.buffered(),
            "rows": self.state.rows,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where ``state_dict`` was taken (``{}``: from the start)."""
        self.state = PackState(**{k: int(v) for k, v in state.items() if k != "buffer"})
        self._sorted: list[tuple[int, int, int]] = []
        self._fifo: deque[tuple[int, int, int]] = deque()
        self._taken: set[int] = set()
        self._arrivals = 0
        for example in state.get("buffer", []):
            self._push(int(example))


class SFTLoader:
    """Batches of ``batch_size`` packed rows of ``seq_len`` tokens for one rank (module docstring).

    ``epochs[s]`` (default 1 each) is how often source ``s`` of ``store.names`` is used per epoch;
    ``load_stats`` (per source name) only feed :meth:`report`.
    """

    def __init__(
        self,
        store: ExampleStore,
        *,
        seq_len: int,
        batch_size: int,
        pad_id: int,
        epochs: Sequence[float] | None = None,
        seed: int = 0,
        pack_buffer: int = 1024,
        rank: int = 0,
        world_size: int = 1,
        load_stats: dict[str, ConversationStats] | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len}, {batch_size}")
        self.store, self.names = store, list(store.names)
        self.epochs = [1.0] * len(self.names) if epochs is None else [float(e) for e in epochs]
        self.seq_len, self.batch_size, self.pad_id = seq_len, batch_size, pad_id
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.load_stats = load_stats or {}
        self.schedule = PackedConversations(
            store.lengths, store.source, self.epochs, seq_len + 1, seed=seed, pack_buffer=pack_buffer
        )
        per_token = np.concatenate([[0], np.cumsum(store.trained, dtype=np.int64)])
        first = store.offsets[:-1]
        # trained targets of each example: trained tokens after its first
        self._targets = per_token[store.offsets[1:]] - per_token[first + 1]
        self.served = {"tokens": 0, "pad_tokens": 0, "trained_tokens": 0}

    # ------------------------------------------------------------------ rows
    def sample(self, row: Sequence[int]) -> tuple[np.ndarray, ...]:
        """input_ids, labels, position_ids, doc_ids [seq_len] (int64) of a row of examples."""
        size = self.seq_len + 1
        x = np.full(size, self.pad_id, dtype=np.int64)
        trained, pos, doc = np.zeros(size, dtype=bool), np.zeros(size, np.int64), np.zeros(size, np.int64)
        at = 0
        for d, example in enumerate(row):
            ids, mask = self.store.example(example)
            n = len(ids)
            x[at : at + n], trained[at : at + n] = ids, mask
            pos[at : at + n], doc[at : at + n] = np.arange(n), d
            at += n
        pos[at:], doc[at:] = np.arange(size - at), len(row)
        labels = np.where(trained[1:] & (doc[1:] == doc[:-1]), x[1:], IGNORE_INDEX)
        return x[:-1], labels, pos[:-1], doc[:-1]

    def _next_row(self) -> list[int]:
        row = self.schedule.next_row()
        used = int(self.store.lengths[row].sum())
        self.served["tokens"] += used
        self.served["pad_tokens"] += self.seq_len + 1 - used
        self.served["trained_tokens"] += int(self._targets[row].sum())
        return row

    def next_batch(self) -> Batch:
        """This rank's next micro-batch; every rank advances by batch_size x world_size rows.

        ``source`` is the source index (into ``names``) of each row's first example.
        """
        samples, sources = [], []
        for _ in range(self.batch_size * self.world_size):
            owner = self.schedule.state.rows % self.world_size
            row = self._next_row()
            if owner == self.rank:
                samples.append(self.sample(row))
                sources.append(int(self.store.source[row[0]]))
        ids, labels, pos, doc = (torch.from_numpy(np.stack(col)) for col in zip(*samples, strict=True))
        return Batch(
            input_ids=ids, labels=labels, position_ids=pos, doc_ids=doc, source=torch.tensor(sources)
        )

    def __iter__(self):
        while True:
            yield self.next_batch()

    # ------------------------------------------------------------------ state
    def _layout(self) -> dict[str, Any]:
        return {
            "examples": len(self.store),
            "tokens": len(self.store.tokens),
            "sources": self.names,
            "epochs": self.epochs,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "pack_buffer": self.schedule.pack_buffer,
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position (identical on every rank, independent of batch size and rank)."""
        return {"layout": self._layout(), "schedule": self.schedule.state_dict(), "served": dict(self.served)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict``; refuses a state taken over different data or settings."""
        if state["layout"] != self._layout():
            raise ValueError(f"SFT loader state is for {state['layout']}, this loader is {self._layout()}")
        self.schedule.load_state_dict(state["schedule"])
        self.served = {k: int(v) for k, v in state["served"].items()}

    def report(self) -> dict[str, Any]:
        """Per-source loading counters and what was served so far (all ranks)."""
        rows = self.schedule.state.rows
        slots = max(rows * (self.seq_len + 1), 1)
        per_source = {
            name: {**(self.load_stats[name].as_dict() if name in self.load_stats else {}), "epochs": e}
            for name, e in zip(self.names, self.epochs, strict=True)
        }
        totals = {k: sum(s.get(k, 0) for s in per_source.values()) for k in _TOTAL_KEYS}
        served = {
            **self.served,
            "rows": rows,
            "fill": 1 - self.served["pad_tokens"] / slots,
            "epoch": self.schedule.epochs_done,
        }
        return {"sources": per_source, "total": totals, "examples": len(self.store), "served": served}


_TOTAL_KEYS = ("read", "kept", "skipped_bad", "dropped_overlong", "truncated", "tokens", "trained_tokens")


def build_sft_loader(
    cfg: SFTDataConfig,
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
) -> SFTLoader:
    """Read, render and fit every source of ``cfg`` and pack it for ``rank`` of ``world_size``."""
    if not cfg.sources:
        raise ValueError("SFT data needs at least one source")
    parts, stats = [], {}
    for source in cfg.sources:
        examples, stats[source.name] = load_conversations(source, tokenizer, seq_len, cfg.overlong)
        parts.append(examples)
    store = ExampleStore.build(parts, [s.name for s in cfg.sources])
    return SFTLoader(
        store,
        seq_len=seq_len,
        batch_size=batch_size,
        pad_id=tokenizer.pad_id,
        epochs=[s.epochs for s in cfg.sources],
        seed=cfg.seed,
        pack_buffer=cfg.pack_buffer,
        rank=rank,
        world_size=world_size,
        load_stats=stats,
    )
