"""Paged decode attention: one query token per row over a block-pool KV cache, in Triton.

The continuous-batching engine keeps keys and values in per-layer pools of fixed-size blocks,
[num_blocks + 1, kv_heads, block_size, head_dim] (`paged_cache.py`); row b's token p sits in
block block_tables[b, p // block_size], slot p % block_size. Gathering every row's blocks
into a dense copy before attention doubles the KV traffic of a decode step (and a decode step
is mostly KV traffic once the batch is large), so this kernel reads the pool in place.

Split-KV ("flash-decoding"), two launches:

  1. `paged_decode_kernel`, grid (rows, kv_heads, splits): program (b, g, s) takes the query
     heads of kv head g (GQA: the REP query heads of a group are the rows of one tensor-core
     tile, so each key/value is read once per group) against the tiles s, s + splits,
     s + 2 splits, ... of TILE tokens below lengths[b], with an online softmax in float32
     (scores in the log2 domain). Each tile gathers its pages through the block table. A
     program with no tile (short rows) writes a neutral partial: max -1e30, sum 0, output 0.
  2. `merge_splits_kernel`, grid (rows, heads): the partials of one head, rescaled to a
     common max and summed, divided by the summed exponentials, rounded to the model dtype.

The number of splits depends on shapes only (rows, kv heads, table width), never on the
lengths, so one launch configuration serves every step of a CUDA graph; the work of a
program follows its row's length. `paged_decode_attention` is a `torch.library` custom op,
so a `torch.compile`d step keeps the launches whole; `paged_decode_attention_reference` is
the same function in plain PyTorch (gather + masked softmax), for tests. The kernels also run
under `TRITON_INTERPRET=1` on CPU tensors, which is how the tests check them.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

TILE_TOKENS = 64  # tokens per attention tile (several pages of a 16-token block pool)
TARGET_PROGRAMS = 1024  # attention programs per launch that `decode_splits` aims for
MAX_SPLITS = 128  # splits per (row, kv head) at most
MERGE_SPLITS = 16  # partial results the merge reads per step
NEUTRAL_MAX = tl.constexpr(-1.0e30)  # running max of a partial with no token (finite: no inf - inf)
LOG2E = 1.4426950408889634


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b accumulated in float32. UPCAST widens the operands first: Triton's CPU interpreter
    multiplies bfloat16 operands as their raw 16-bit integers (GPUs multiply them natively)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _page_tile(
    k_pool,
    v_pool,
    table_row,
    tile,
    length,
    g,
    KVH: tl.constexpr,
    BS: tl.constexpr,
    HD: tl.constexpr,
    TILE: tl.constexpr,
):
    """Keys and values [TILE, HD] of tokens tile*TILE .. (tile+1)*TILE - 1 of one row and kv
    head g, gathered page by page through the row's block table; tokens >= length read as 0."""
    tok = tile * TILE + tl.arange(0, TILE)
    seen = tok < length
    block = tl.load(table_row + tok // BS, mask=seen, other=0).to(tl.int64)
    offs = ((block * KVH + g) * BS + tok % BS) * HD  # pool[block, g, slot, :]
    d = tl.arange(0, HD)
    k = tl.load(k_pool + offs[:, None] + d[None, :], mask=seen[:, None], other=0.0)
    v = tl.load(v_pool + offs[:, None] + d[None, :], mask=seen[:, None], other=0.0)
    return k, v, seen


@triton.jit
def paged_decode_kernel(
    q_ptr,  # [B, H, HD] (strides stride_qb, stride_qh, 1)
    k_pool,  # [num_blocks + 1, KVH, BS, HD] contiguous
    v_pool,  # [num_blocks + 1, KVH, BS, HD] contiguous
    table_ptr,  # [B, W] int32 block ids, padded with the null block
    len_ptr,  # [B] int32 valid tokens per row (the new one included)
    part_o,  # [B, H, n_splits, HD] float32: unnormalised outputs
    part_ml,  # [2, B, H, n_splits] float32: running max (log2 domain), then sum of exponentials
    stride_qb,
    stride_qh,
    W,
    n_splits,
    qk_scale,  # softmax scale * log2(e)
    REP: tl.constexpr,
    KVH: tl.constexpr,
    BS: tl.constexpr,
    HD: tl.constexpr,
    TILE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    """Program (row b, kv head g, split s): the partial softmax of g's query heads over the
    tiles s, s + n_splits, ... below the row's length (see the module docstring)."""
    b, g, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    H: tl.constexpr = REP * KVH
    length = tl.minimum(tl.load(len_ptr + b), W * BS)  # a table holds W * BS tokens at most
    table_row = table_ptr + b.to(tl.int64) * W
    r = tl.arange(0, BLOCK_Q)  # the group's query heads, padded to a tensor-core tile
    q_ok = r < REP
    heads = g * REP + r
    d = tl.arange(0, HD)
    q_offs = b.to(tl.int64) * stride_qb + heads[:, None] * stride_qh + d[None, :]
    q = tl.load(q_ptr + q_offs, mask=q_ok[:, None], other=0.0)

    m = tl.full([BLOCK_Q], NEUTRAL_MAX, tl.float32)
    l_sum = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, HD], tl.float32)
    for t in tl.range(split, tl.cdiv(length, TILE), n_splits):
        k, v, seen = _page_tile(k_pool, v_pool, table_row, t, length, g, KVH, BS, HD, TILE)
        scores = _dot(q, tl.trans(k), DOT_PRECISION, UPCAST_DOT) * qk_scale  # [BLOCK_Q, TILE]
        scores = tl.where(seen[None, :], scores, NEUTRAL_MAX)
        m_new = tl.maximum(m, tl.max(scores, axis=1))  # a tile holds >= 1 seen token: finite
        p = tl.exp2(scores - m_new[:, None])
        alpha = tl.exp2(m - m_new)
        l_sum = l_sum * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_PRECISION, UPCAST_DOT)
        m = m_new

    part = (b * H + heads).to(tl.int64) * n_splits + split  # [BLOCK_Q]
    tl.store(part_o + part[:, None] * HD + d[None, :], acc, mask=q_ok[:, None])
    tl.store(part_ml + part, m, mask=q_ok)
    tl.store(part_ml + tl.num_programs(0) * H * n_splits + part, l_sum, mask=q_ok)


@triton.jit
def merge_splits_kernel(
    part_o,  # [B, H, n_splits, HD] float32
    part_ml,  # [2, B, H, n_splits] float32
    out_ptr,  # [B, H, HD] contiguous, the model dtype
    n_splits,
    HD: tl.constexpr,
    MERGE: tl.constexpr,
):
    """Program (row b, head h): out = sum_s o_s 2^(m_s - M) / sum_s l_s 2^(m_s - M), MERGE
    splits per step with an online rescale. Neutral partials weigh nothing (l_s = 0, o_s = 0)."""
    b, h = tl.program_id(0), tl.program_id(1)
    n_rows = tl.num_programs(0) * tl.num_programs(1)
    row = (b * tl.num_programs(1) + h).to(tl.int64)
    d = tl.arange(0, HD)
    m_all = tl.full([1], NEUTRAL_MAX, tl.float32)
    den = tl.zeros([1], tl.float32)
    num = tl.zeros([HD], tl.float32)
    for s0 in tl.range(0, n_splits, MERGE):
        s = s0 + tl.arange(0, MERGE)
        ok = s < n_splits
        m_s = tl.load(part_ml + row * n_splits + s, mask=ok, other=NEUTRAL_MAX)
        l_s = tl.load(part_ml + (n_rows + row) * n_splits + s, mask=ok, other=0.0)
        o_s = tl.load(part_o + (row * n_splits + s)[:, None] * HD + d[None, :], mask=ok[:, None], other=0.0)
        m_new = tl.maximum(m_all, tl.max(m_s, axis=0))
        rescale = tl.exp2(m_all - m_new)
        w = tl.exp2(m_s - m_new)  # [MERGE]
        den = den * rescale + tl.sum(l_s * w, axis=0)
        num = num * rescale + tl.sum(o_s * w[:, None], axis=0)
        m_all = m_new
    out = num / tl.where(den > 0.0, den, 1.0)  # den 0: a row of length 0 gets zeros
    tl.store(out_ptr + row * HD + d, out.to(out_ptr.dtype.element_ty))


def decode_splits(rows: int, kv_heads: int, width_tokens: int, tile: int = TILE_TOKENS) -> int:
    """Splits per (row, kv head): enough programs to fill a large GPU (`TARGET_PROGRAMS` in
    all), no more than a full table has tiles, at most `MAX_SPLITS`. Shapes only: the launch
    is the same whatever the lengths, so it can be replayed in a CUDA graph."""
    wanted = -(-TARGET_PROGRAMS // (rows * kv_heads))
    return max(1, min(wanted, -(-width_tokens // tile), MAX_SPLITS))


def supported(head_dim: int) -> bool:
    """Whether the kernels take this head_dim (a power of two >= 16: tensor-core tiles)."""
    return head_dim >= 16 and head_dim & (head_dim - 1) == 0


def _check(
    q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, tables: torch.Tensor, lengths: torch.Tensor
) -> None:
    """Raise ValueError naming the first argument that the kernels cannot take."""
    if q.dim() != 3 or k_pool.dim() != 4:
        raise ValueError(
            f"q must be [rows, heads, head_dim] and k_pool [blocks, kv_heads, block_size, head_dim], "
            f"got q {tuple(q.shape)} and k_pool {tuple(k_pool.shape)}"
        )
    (rows, heads, hd), kvh = q.shape, k_pool.shape[1]
    if v_pool.shape != k_pool.shape or k_pool.shape[3] != hd:
        raise ValueError(
            f"k_pool {tuple(k_pool.shape)} and v_pool {tuple(v_pool.shape)} must match, with "
            f"head_dim {hd} (q)"
        )
    if not supported(hd):
        raise ValueError(f"head_dim must be a power of two >= 16, got {hd}")
    if heads % kvh:
        raise ValueError(f"q's {heads} heads are not a multiple of the pool's {kvh} kv heads")
    if not (k_pool.is_contiguous() and v_pool.is_contiguous()):
        raise ValueError("k_pool and v_pool must be contiguous")
    if k_pool.dtype != q.dtype or v_pool.dtype != q.dtype:
        raise ValueError(f"q is {q.dtype} but the pools are {k_pool.dtype} / {v_pool.dtype}")
    if tables.dtype != torch.int32 or tables.dim() != 2 or tables.shape[0] != rows:
        raise ValueError(
            f"block_tables must be int32 [{rows}, width], got {tables.dtype} {tuple(tables.shape)}"
        )
    if lengths.dtype != torch.int32 or tuple(lengths.shape) != (rows,):
        raise ValueError(f"lengths must be int32 [{rows}], got {lengths.dtype} {tuple(lengths.shape)}")
    devices = {t.device for t in (q, k_pool, v_pool, tables, lengths)}
    if len(devices) != 1:
        raise ValueError(f"all arguments must be on one device, got {sorted(map(str, devices))}")


@torch.library.custom_op("mobilellm_r1::paged_decode_attention", mutates_args=())
def paged_decode_attention(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    block_tables: torch.Tensor,
    lengths: torch.Tensor,
    splits: int | None = None,
    tile: int | None = None,
) -> torch.Tensor:
    """Attention of one query per row over a paged KV cache -> [B, H, head_dim] in q's dtype.

    q [B, H, hd]; k_pool, v_pool [num_blocks + 1, kvh, block_size, hd] (contiguous, q's
    dtype); block_tables [B, W] int32 (padded with the null block 0); lengths [B] int32: the
    row's valid tokens, the new one included (its k, v already in the pool). Row b's query
    head h attends to tokens 0 .. lengths[b] - 1 of kv head h // (H / kvh), softmax scale
    1 / sqrt(hd). `splits` (per row and kv head; default `decode_splits`) and `tile` (tokens
    per tile, a power of two >= 16; default `TILE_TOKENS`, or less for narrow tables) are
    launch choices. Issues no host sync."""
    _check(q, k_pool, v_pool, block_tables, lengths)
    q = q if q.stride(2) == 1 else q.contiguous()  # rows and heads may be strided, head_dim not
    (rows, heads, hd), (kvh, bs), width = q.shape, k_pool.shape[1:3], block_tables.shape[1]
    tile = tile or max(16, min(TILE_TOKENS, triton.next_power_of_2(width * bs)))
    if tile < 16 or tile & (tile - 1):
        raise ValueError(f"tile must be a power of two >= 16, got {tile}")
    splits = splits or decode_splits(rows, kvh, width * bs, tile)
    rep = heads // kvh
    part_o = torch.empty(rows, heads, splits, hd, device=q.device, dtype=torch.float32)
    part_ml = torch.empty(2, rows, heads, splits, device=q.device, dtype=torch.float32)
    out = torch.empty(rows, heads, hd, device=q.device, dtype=q.dtype)
    paged_decode_kernel[(rows, kvh, splits)](
        q,
        k_pool,
        v_pool,
        block_tables,
        lengths,
        part_o,
        part_ml,
        q.stride(0),
        q.stride(1),
        width,
        splits,
        hd**-0.5 * LOG2E,
        REP=rep,
        KVH=kvh,
        BS=bs,
        HD=hd,
        TILE=tile,
        BLOCK_Q=max(16, triton.next_power_of_2(rep)),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        UPCAST_DOT=q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1",
    )
    merge_splits_kernel[(rows, heads)](part_o, part_ml, out, splits, HD=hd, MERGE=MERGE_SPLITS)
    return out


@paged_decode_attention.register_fake
def _(q, k_pool, v_pool, block_tables, lengths, splits=None, tile=None) -> torch.Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def paged_decode_attention_reference(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    block_tables: torch.Tensor,
    lengths: torch.Tensor,
) -> torch.Tensor:
    """`paged_decode_attention` in plain PyTorch: gather each row's blocks into dense
    [B, kvh, W * block_size, hd], softmax of float32 scores over the first lengths[b] tokens,
    output in q's dtype."""
    rows, heads, hd = q.shape
    kvh, bs = k_pool.shape[1:3]
    width = block_tables.shape[1]

    def dense(pool: torch.Tensor) -> torch.Tensor:  # [B, H, W * bs, hd] float32
        blocks = pool[block_tables.long()].transpose(1, 2).reshape(rows, kvh, width * bs, hd)
        return blocks.repeat_interleave(heads // kvh, dim=1).float()

    scores = torch.einsum("bhd,bhsd->bhs", q.float(), dense(k_pool)) * hd**-0.5
    seen = torch.arange(width * bs, device=q.device)[None, :] < lengths.long()[:, None]  # [B, S]
    probs = scores.masked_fill(~seen[:, None, :], float("-inf")).softmax(dim=-1)
    return torch.einsum("bhs,bhsd->bhd", probs, dense(v_pool)).to(q.dtype)
