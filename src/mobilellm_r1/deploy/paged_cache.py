"""A paged (block) KV cache for the continuous-batching engine (`batching.py`).

Keys and values live in a pool of fixed-size blocks per layer, [num_blocks + 1, kv_heads,
block_size, head_dim]; a sequence owns a block table (a list of block ids) and its token at
position p sits in block table[p // block_size], slot p % block_size. Block 0 is the null
block: padding rows write there and padded table entries point there, so it is never handed
out. `BlockAllocator` keeps the free list and reference counts, so the n samples of one prompt
can share the prompt's full blocks (each gets its own copy of the last, partial one).

`PagedKVCache.update` has `KVCache.update`'s signature, so `model.Attention` runs unchanged:
before each forward the engine calls `plan(...)` with where every row writes its new tokens,
which blocks it reads and how many tokens it holds; `update` then scatters the new k/v into
the pool and returns each row's blocks gathered into dense [B, kv_heads, S, head_dim] tensors
(S = blocks x block_size), over which the engine's attention mask says which slots each query
sees. With `paged_decode` (default on CUDA with Triton) decode steps skip that copy: the cache's
`attend` (the hook `model.Attention` calls first) writes the new k/v and runs the paged Triton
kernel of `paged_attention.py` over the pool itself. Prefills, and everything on the CPU by
default, take the gather path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..model.config import ModelConfig
from ..model.model import Transformer

try:
    from . import paged_attention
except ImportError:  # the CPU wheel of torch ships without Triton
    paged_attention = None

NULL_BLOCK = 0


def blocks_for(tokens: int, block_size: int) -> int:
    """How many blocks hold `tokens` tokens."""
    return -(-tokens // block_size)


def pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 1 << (n - 1).bit_length()


class BlockAllocator:
    """Free list and reference counts of blocks 1..num_blocks (block 0 is the null block)."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"the KV pool needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.free: list[int] = list(range(num_blocks, 0, -1))  # popped from the end: 1, 2, ...
        self.refs = [0] * (num_blocks + 1)

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self.free)

    def allocate(self, count: int) -> list[int]:
        """`count` fresh blocks (reference count 1); the caller checks `num_free` first."""
        if count > len(self.free):
            raise RuntimeError(f"asked for {count} blocks with {len(self.free)} free")
        blocks = [self.free.pop() for _ in range(count)]
        for b in blocks:
            self.refs[b] = 1
        return blocks

    def share(self, blocks: list[int]) -> None:
        """One more owner for each of `blocks`."""
        for b in blocks:
            self.refs[b] += 1

    def release(self, blocks: list[int]) -> None:
        """Drop one owner of each of `blocks`; a block nobody owns returns to the free list."""
        for b in blocks:
            self.refs[b] -= 1
            if self.refs[b] == 0:
                self.free.append(b)
            elif self.refs[b] < 0:
                raise RuntimeError(f"block {b} released more often than allocated")


class PagedKVCache(nn.Module):
    """Block pools k{l}, v{l} of [num_blocks + 1, kv_heads, block_size, head_dim] per layer.

    Module buffers, like `KVCache`, so a compiled step treats them as static state.
    `paged_decode`: decode steps attend through the paged kernel (default: on CUDA, where
    Triton is installed and takes the head_dim; True elsewhere runs it under
    `TRITON_INTERPRET=1`, for tests)."""

    def __init__(
        self,
        cfg: ModelConfig,
        num_blocks: int,
        block_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
        paged_decode: bool | None = None,
    ) -> None:
        super().__init__()
        if paged_decode and paged_attention is None:
            raise RuntimeError("paged_decode needs Triton (pip install triton)")
        if paged_decode is None:
            on_cuda = torch.device(device or "cpu").type == "cuda"
            paged_decode = on_cuda and paged_attention is not None and paged_attention.supported(cfg.head_dim)
        self.paged_decode = paged_decode
        shape = (num_blocks + 1, cfg.num_key_value_heads, block_size, cfg.head_dim)
        for i in range(cfg.num_hidden_layers):
            self.register_buffer(f"k{i}", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
            self.register_buffer(f"v{i}", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.num_layers, self.num_blocks, self.block_size = cfg.num_hidden_layers, num_blocks, block_size
        self.write_blocks = self.write_slots = self.read_blocks = None
        self.tables = self.lengths = None  # int32 copies for the paged kernel (decode steps)

    @staticmethod
    def block_bytes(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        """Bytes one block takes over all layers (keys and values)."""
        per_layer = 2 * cfg.num_key_value_heads * block_size * cfg.head_dim * dtype.itemsize
        return per_layer * cfg.num_hidden_layers

    def plan(
        self,
        write_blocks: torch.Tensor,
        write_slots: torch.Tensor,
        read_blocks: torch.Tensor,
        lengths: torch.Tensor,
    ) -> None:
        """Where the next forward writes and reads: its token t of row b goes to block
        write_blocks[b, t], slot write_slots[b, t] ([B, T] each); row b reads the blocks
        read_blocks[b] ([B, N], padded with `NULL_BLOCK`) as slots 0 .. N * block_size - 1, of
        which its last query sees the first lengths[b] ([B]); decode steps read only those."""
        self.write_blocks, self.write_slots, self.read_blocks = write_blocks, write_slots, read_blocks
        if self.paged_decode and write_blocks.shape[1] == 1:  # once per step, not per layer
            self.tables, self.lengths = read_blocks.to(torch.int32), lengths.to(torch.int32)

    def update(
        self, layer: int, cache_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, kvh, T, hd] where `plan` said (`cache_pos` is not used: each row has
        its own slots); return each row's blocks as dense k, v [B, kvh, N * block_size, hd]."""
        k_pool, v_pool = self._write(layer, k, v)
        return self._gather(k_pool), self._gather(v_pool)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
        """A decode step's attention straight from the pool (with `paged_decode`): write k, v
        [B, kvh, 1, hd] where `plan` said, then each row's query heads q [B, H, 1, hd] attend
        to its first `lengths` tokens -> [B, H, 1, hd]. None for prefills (T > 1) and without
        `paged_decode`: the model then calls `update` and attends with its mask."""
        if not self.paged_decode or q.shape[2] != 1:
            return None
        k_pool, v_pool = self._write(layer, k, v)
        out = paged_attention.paged_decode_attention(q[:, :, 0], k_pool, v_pool, self.tables, self.lengths)
        return out[:, :, None]

    def _write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scatter k, v [B, kvh, T, hd] to the planned slots of the layer's pools; the pools."""
        k_pool, v_pool = getattr(self, f"k{layer}"), getattr(self, f"v{layer}")
        blocks, slots = self.write_blocks, self.write_slots
        k_pool[blocks, :, slots] = k.transpose(1, 2).to(k_pool.dtype)  # pool[blk, :, slot]: [B, T, kvh, hd]
        v_pool[blocks, :, slots] = v.transpose(1, 2).to(v_pool.dtype)
        return k_pool, v_pool

    def _gather(self, pool: torch.Tensor) -> torch.Tensor:
        b, n = self.read_blocks.shape
        blocks = pool[self.read_blocks]  # [B, N, kvh, bs, hd]
        return blocks.transpose(1, 2).reshape(b, pool.shape[1], n * self.block_size, pool.shape[3])

    def copy_block(self, src: int, dst: int) -> None:
        """Copy block `src` into block `dst` in every layer (copy-on-write of a shared block)."""
        for i in range(self.num_layers):
            for name in (f"k{i}", f"v{i}"):
                pool = getattr(self, name)
                pool[dst].copy_(pool[src])


@dataclass
class StepRows:
    """The rows of one forward, as host lists: token t of row b is tokens[b][t] at position
    positions[b][t], written to block write_blocks[b][t] slot write_slots[b][t]; row b reads
    the blocks tables[b] and its query t sees their slots 0 .. visible[b][t]."""

    tokens: list[list[int]]
    positions: list[list[int]]
    write_blocks: list[list[int]]
    write_slots: list[list[int]]
    tables: list[list[int]]
    visible: list[list[int]]

    def tensors(self, block_size: int, device: torch.device) -> list[torch.Tensor]:
        """`PagedForward`'s arguments on `device`: the tables padded with the null block to the
        longest, and the mask built from them."""
        read = pad_tables(self.tables, pow2_blocks=False)
        lists = (self.tokens, self.positions, self.write_blocks, self.write_slots)
        host = [*(torch.tensor(x, dtype=torch.long) for x in lists), read, torch.tensor(self.visible)]
        *args, seen = [t.to(device, non_blocking=True) for t in host]
        slot_ids = torch.arange(read.shape[1] * block_size, device=device)
        return [*args, (slot_ids[None, None, :] <= seen[:, :, None])[:, None]]  # mask [B, 1, T, S]


def pad_tables(tables: list[list[int]], pow2_blocks: bool, width: int | None = None) -> torch.Tensor:
    """Block tables as one LongTensor [B, N] padded with the null block: N the longest table,
    rounded up to a power of two with `pow2_blocks`, or `width` when given and no table is
    longer. Filled row by row in numpy (a decode window builds 256 x 2,048 of them)."""
    n = max(map(len, tables))
    n = max(n, width) if width is not None else pow2(n) if pow2_blocks else n
    out = np.full((len(tables), n), NULL_BLOCK, dtype=np.int64)
    for row, table in zip(out, tables, strict=True):
        row[: len(table)] = table
    return torch.from_numpy(out)


class PagedForward(nn.Module):
    """One forward of the model over a `PagedKVCache`: logits [B, V] after each row's last
    token. A module, so a compiled step sees the weights and pools as module state."""

    def __init__(self, model: Transformer, cache: PagedKVCache) -> None:
        super().__init__()
        self.model, self.cache = model, cache

    def forward(
        self,
        tokens: torch.Tensor,  # [B, T]
        positions: torch.Tensor,  # [B, T]
        write_blocks: torch.Tensor,  # [B, T]
        write_slots: torch.Tensor,  # [B, T]
        read_blocks: torch.Tensor,  # [B, N]
        mask: torch.Tensor,  # [B, 1, T, N * block_size]
    ) -> torch.Tensor:
        self.cache.plan(write_blocks, write_slots, read_blocks, positions[:, -1] + 1)
        logits = self.model(
            tokens, positions, cache=self.cache, cache_pos=positions[0], attn_mask=mask, last_only=True
        )
        return logits[:, -1]

    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """One decode step: row b feeds tokens[b] at positions[b], reading the blocks tables[b]
        ([B, N], padded with the null block) -> logits [B, V]. Where each row writes and what
        it sees follow from its position, so a compiled step has three inputs."""
        bs = self.cache.block_size
        pos = positions[:, None]  # [B, 1]
        slots = torch.arange(tables.shape[1] * bs, device=tables.device)
        mask = (slots[None, :] <= pos)[:, None, None, :]  # [B, 1, 1, N * bs]
        return self.forward(tokens[:, None], pos, tables.gather(1, pos // bs), pos % bs, tables, mask)
