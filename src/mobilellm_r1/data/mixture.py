"""Weighted multi-source mixtures, sampled by token ratio, deterministic and resumable.

How a batch is made:
  1. Each source is a `PackedStream`: its documents in a seeded order (reshuffled every
     epoch), each followed by EOS, concatenated and cut into samples of seq_len + 1 tokens.
     Sources are packed on their own, so a sample never mixes sources and the mixing ratio
     is exact in tokens (packing after interleaving would skew it toward long documents).
  2. A deterministic weighted round-robin (the source with the largest accumulated credit
     goes next) chooses the source of every global sample: after N samples each source
     has served within one sample of weight * N, so token shares match the recipe from the
     first batches on. The seed sets the starting credits and the document orders.
  3. Global sample i (`Batch.sample_ids`) belongs to rank i % world_size. Every rank
     advances every stream through all samples (cheap: document lengths only) and reads the
     tokens of its own, so ranks see disjoint data whose union is the 1-rank stream, and the
     loader state is the same on every rank.

A sample gives input_ids = t[:-1], labels = t[1:], position_ids restarting at 0 for each
document (a sample may start mid-document: positions continue from the offset) and doc_ids
numbering the document pieces inside the sample, for document-masked attention.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch


class TokenSource(Protocol):
    """What the mixture needs from a tokenized source (see `shards.ShardedSource`)."""

    def doc_lengths(self) -> np.ndarray: ...  # int64 [n_docs]

    def doc(self, i: int) -> np.ndarray: ...  # token ids of document i


class ArraySource:
    """In-memory `TokenSource` (tests, small experiments)."""

    def __init__(self, docs: list[np.ndarray] | list[list[int]]) -> None:
        self.docs = [np.asarray(d, dtype=np.uint32) for d in docs]
        if not self.docs or any(len(d) == 0 for d in self.docs):
            raise ValueError("ArraySource needs at least one document and no empty documents")

    def doc_lengths(self) -> np.ndarray:
        return np.array([len(d) for d in self.docs], dtype=np.int64)

    def doc(self, i: int) -> np.ndarray:
        return self.docs[i]


def stand_in_sources(
    names: list[str], seed: int = 0, vocab: int = 1000, docs: int = 120
) -> dict[str, ArraySource]:
    """Random-token documents whose typical length differs by source (30 to ~4,000 tokens,
    log-normal): stand-ins to check a recipe's token shares without its real data."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(names):
        median = 30 * 2 ** (i % 8)
        lengths = np.clip(rng.lognormal(np.log(median), 0.8, size=docs), 1, 20_000).astype(int)
        out[name] = ArraySource([rng.integers(0, vocab, n) for n in lengths])
    return out


@dataclass
class StreamState:
    """Where a source stream stands: epoch, index into that epoch's order, token offset."""

    epoch: int = 0
    cursor: int = 0
    offset: int = 0
    tokens_served: int = 0


Segment = tuple[int, int, int]  # (document, start, stop) in slots; slot len(doc) is the EOS


class PackedStream:
    """One source as an endless token stream: shuffled documents, EOS after each."""

    def __init__(self, source: TokenSource, seed: int, stream_id: int) -> None:
        self.source = source
        self.slots = source.doc_lengths().astype(np.int64) + 1  # document + EOS
        if len(self.slots) == 0:
            raise ValueError("a mixture source has no documents")
        self.seed, self.stream_id = seed, stream_id
        self.state = StreamState()
        self._order_epoch, self._order = -1, np.empty(0, dtype=np.int64)

    @property
    def total_slots(self) -> int:
        """Tokens in one epoch (documents plus one EOS each)."""
        return int(self.slots.sum())

    def _order_of(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            rng = np.random.default_rng([self.seed, self.stream_id, epoch])
            self._order, self._order_epoch = rng.permutation(len(self.slots)), epoch
        return self._order

    def take(self, n: int) -> list[Segment]:
        """The next n tokens as document segments; advances the stream."""
        st, segments = self.state, []
        st.tokens_served += n
        while n > 0:
            doc = int(self._order_of(st.epoch)[st.cursor])
            k = min(int(self.slots[doc]) - st.offset, n)
            segments.append((doc, st.offset, st.offset + k))
            st.offset += k
            n -= k
            if st.offset == self.slots[doc]:
                st.cursor, st.offset = st.cursor + 1, 0
                if st.cursor == len(self.slots):
                    st.epoch, st.cursor = st.epoch + 1, 0
        return segments

    def read(self, segments: list[Segment], eos_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """tokens, positions and piece ids [n] for segments from `take`."""
        tokens, positions, pieces = [], [], []
        for piece, (doc, start, stop) in enumerate(segments):
            ids = self.source.doc(doc)
            body = np.asarray(ids[start : min(stop, len(ids))], dtype=np.int64)
            if stop > len(ids):  # the segment includes the EOS slot
                body = np.append(body, eos_id)
            tokens.append(body)
            positions.append(np.arange(start, stop, dtype=np.int64))
            pieces.append(np.full(stop - start, piece, dtype=np.int64))
        return np.concatenate(tokens), np.concatenate(positions), np.concatenate(pieces)


@dataclass
class Batch:
    """One rank's micro-batch. All tensors [B, T] except `source` [B]."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    doc_ids: torch.Tensor
    source: torch.Tensor  # index into `MixtureLoader.names`
    sample_ids: torch.Tensor | None = None  # [B] global sample indices (mixture loader; top-k KD store)


@dataclass
class MixerState:
    sample_index: int = 0
    credits: list[float] = field(default_factory=list)
    streams: dict[str, dict] = field(default_factory=dict)


class MixtureLoader:
    """Batches of `batch_size` samples of `seq_len` tokens for one rank (see module docstring)."""

    def __init__(
        self,
        sources: dict[str, TokenSource],
        weights: dict[str, float],
        *,
        seq_len: int,
        batch_size: int,
        eos_id: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if set(weights) != set(sources):
            raise ValueError(f"weights {sorted(weights)} and sources {sorted(sources)} differ")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {weights}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.names = [n for n in sources if weights[n] > 0]
        total = sum(weights[n] for n in self.names)
        self.weights = np.array([weights[n] / total for n in self.names])
        self.streams = [PackedStream(sources[n], seed, i) for i, n in enumerate(self.names)]
        self.seq_len, self.batch_size, self.eos_id = seq_len, batch_size, eos_id
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.sample_index = 0
        self.credits = np.random.default_rng([seed, 2**31 - 1]).random(len(self.names))

    # ------------------------------------------------------------------ schedule
    def _next_source(self) -> int:
        self.credits += self.weights
        s = int(np.argmax(self.credits))
        self.credits[s] -= 1.0
        return s

    def _next_global(self) -> tuple[int, list[Segment]]:
        s = self._next_source()
        self.sample_index += 1
        return s, self.streams[s].take(self.seq_len + 1)

    def next_batch(self) -> Batch:
        """This rank's next micro-batch. One call consumes one global step, batch_size x
        world_size samples, of which this rank reads its batch_size, so every rank ends the
        call in the same state."""
        rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        sample_ids = []
        for _ in range(self.batch_size * self.world_size):
            index = self.sample_index
            s, segments = self._next_global()
            if index % self.world_size == self.rank:
                rows.append((s, *self.streams[s].read(segments, self.eos_id)))
                sample_ids.append(index)
        tokens = torch.from_numpy(np.stack([r[1] for r in rows]))
        return Batch(
            input_ids=tokens[:, :-1],
            labels=tokens[:, 1:],
            position_ids=torch.from_numpy(np.stack([r[2][:-1] for r in rows])),
            doc_ids=torch.from_numpy(np.stack([r[3][:-1] for r in rows])),
            source=torch.tensor([r[0] for r in rows]),
            sample_ids=torch.tensor(sample_ids),
        )

    def __iter__(self):
        while True:
            yield self.next_batch()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """JSON-able position of the whole mixture (identical on every rank)."""
        return dataclasses.asdict(
            MixerState(
                sample_index=self.sample_index,
                credits=[float(c) for c in self.credits],
                streams={
                    n: dataclasses.asdict(s.state) for n, s in zip(self.names, self.streams, strict=True)
                },
            )
        )

    def load_state_dict(self, state: dict) -> None:
        if sorted(state["streams"]) != sorted(self.names):
            raise ValueError(f"loader state has sources {sorted(state['streams'])}, mixture has {self.names}")
        self.sample_index = int(state["sample_index"])
        self.credits = np.array(state["credits"], dtype=np.float64)
        for name, stream in zip(self.names, self.streams, strict=True):
            stream.state = StreamState(**state["streams"][name])

    def report(self) -> dict[str, dict[str, float]]:
        """Per source: recipe share, tokens served (all ranks), measured share, epochs of the source."""
        served = np.array([s.state.tokens_served for s in self.streams], dtype=np.float64)
        total = max(served.sum(), 1.0)
        return {
            name: {
                "weight": float(w),
                "tokens": int(t),
                "share": float(t / total),
                "epochs": float(t / stream.total_slots),
            }
            for name, w, t, stream in zip(self.names, self.weights, served, self.streams, strict=True)
        }
