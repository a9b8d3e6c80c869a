"""Triton kernel of the fused batch-1 decode step's attention (see `fused_decode.py`).

`attend_kernel` takes this token's q, k, v (the qkv product's output), applies RoPE (or, on
NoPE layers, Llama-4's temperature tuning) and the QK-norm, writes k and v into the cache, and
attends over the cache in splits: each program (kv head g, split s) walks every n-th tile of
cache slots below the position with an online softmax, and the last split of each kv head to
finish merges the partial results (an atomic ticket, no extra launch). `attend_split` is one
such program's work, shared with the persistent step kernel (`decode_persistent.py`).
Roundings follow the eager model as in `decode_kernels.py`.

The kernel is latency bound: memory sits idle while it runs. Extra programs of it ask L2 to
fetch the first rows of the MLP weights that the next kernels read (`PREFETCH`), so those
kernels find part of their bytes in L2.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .decode_kernels import grid_dependency, prefetch_l2


@triton.jit
def _rope_norm(
    x_ptr, rows, row_ok, cos, sin, eps, dtype, HD: tl.constexpr, ROPE: tl.constexpr, QK_NORM: tl.constexpr
):
    """Even and odd halves [R, HD/2] of heads at x_ptr + rows * HD, rotated and L2-normed."""
    half = tl.arange(0, HD // 2)
    offs = rows[:, None] * HD + 2 * half[None, :]
    even = tl.load(x_ptr + offs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    odd = tl.load(x_ptr + offs + 1, mask=row_ok[:, None], other=0.0).to(tl.float32)
    if ROPE:  # Llama-4: the pair (x[2i], x[2i+1]) rotated as one complex number, in float32
        even, odd = even * cos - odd * sin, even * sin + odd * cos
        even, odd = even.to(dtype).to(tl.float32), odd.to(dtype).to(tl.float32)
    if QK_NORM:
        ms = (tl.sum(even * even, axis=1) + tl.sum(odd * odd, axis=1)) / HD
        rstd = tl.rsqrt(ms + eps)[:, None]
        even, odd = (even * rstd).to(dtype).to(tl.float32), (odd * rstd).to(dtype).to(tl.float32)
    return even, odd


@triton.jit
def _cache_tile(k_cache, v_cache, base, tile, pos, BLOCK_S: tl.constexpr, HD: tl.constexpr):
    """Cache slots [tile*BLOCK_S, (tile+1)*BLOCK_S) of one kv head (base: its first slot), the
    slots >= pos masked out: keys as even/odd halves [BLOCK_S, HD/2], values [BLOCK_S, HD]."""
    half = tl.arange(0, HD // 2)
    slots = tile * BLOCK_S + tl.arange(0, BLOCK_S)
    offs = base + slots[:, None] * HD
    ok = (slots < pos)[:, None]
    k_e = tl.load(k_cache + offs + 2 * half[None, :], mask=ok, other=0.0)
    k_o = tl.load(k_cache + offs + 2 * half[None, :] + 1, mask=ok, other=0.0)
    v = tl.load(v_cache + offs + tl.arange(0, HD)[None, :], mask=ok, other=0.0)
    return k_e, k_o, v, slots


@triton.jit
def attend_kernel(
    qkv_ptr,  # [(H + 2 KVH) * HD]: this token's q, k, v heads (the qkv projection's output)
    k_cache,  # [KVH, S_max, HD]
    v_cache,  # [KVH, S_max, HD]
    pos_ptr,  # [1] int64: the cache slot (= RoPE position) of this token
    inv_freq_ptr,  # [HD/2] float32
    part_o,  # [n_splits, H, HD] float32 scratch
    part_ml,  # [n_splits, 2, H] float32 scratch (running max, then sum of exponentials)
    tickets,  # [KVH] int32, zero between launches
    out_ptr,  # [H * HD]
    pf0,  # three byte ranges to prefetch into L2 (read when PREFETCH)
    pf1,
    pf2,
    pf0_bytes,
    pf1_bytes,
    pf2_bytes,
    S_max,
    n_splits,
    eps,
    sm_scale,
    attn_scale,  # NoPE layers scale queries by 1 + log1p(floor((pos + 1) / floor_scale)) * attn_scale
    floor_scale,
    H: tl.constexpr,
    KVH: tl.constexpr,
    HD: tl.constexpr,
    BLOCK_REP: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_S: tl.constexpr,
    MERGE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    ROPE: tl.constexpr,
    QK_NORM: tl.constexpr,
    TEMP_TUNING: tl.constexpr,
    PREFETCH: tl.constexpr,
    PF_LINES: tl.constexpr,
    PDL: tl.constexpr,
):
    """Program (kv head g, split s): the queries of g over the cache tiles s, s + n_splits,
    s + 2 n_splits, ... of BLOCK_S slots that lie before this token (online softmax across
    them), so the work follows the position, not the cache length: splits with no tile
    return at once. Split 0 also takes the token itself and writes its k, v into the cache.
    Slots >= pos are never read, so no program reads what another writes, and the first
    cache tile (written by earlier steps) is loaded before the wait for the qkv kernel.
    With PREFETCH, the grid has programs beyond the n_splits of each kv head: they only ask
    L2 for the byte ranges pf0, pf1, pf2 and return."""
    g = tl.program_id(0)
    split = tl.program_id(1)
    if PREFETCH:  # the first n_pf programs of each kv head prefetch (dispatched first)
        n_pf = tl.num_programs(1) - n_splits
        if split < n_pf:
            j, n_programs = g * n_pf + split, KVH * n_pf
            prefetch_l2(pf0, pf0_bytes, j, n_programs, PF_LINES)
            prefetch_l2(pf1, pf1_bytes, j, n_programs, PF_LINES)
            prefetch_l2(pf2, pf2_bytes, j, n_programs, PF_LINES)
            return
        split -= n_pf
    pos = tl.load(pos_ptr).to(tl.int32)  # set before this decode step began
    n_tiles = tl.cdiv(pos, BLOCK_S)  # tiles holding earlier tokens
    n_active = tl.maximum(1, tl.minimum(n_tiles, n_splits))  # split 0 always runs
    if split >= n_active:
        return
    attend_split(
        qkv_ptr, k_cache, v_cache, pos, inv_freq_ptr, part_o, part_ml, tickets, out_ptr, g, split, n_active,
        S_max, n_splits, eps, sm_scale, attn_scale, floor_scale, H, KVH, HD, BLOCK_REP, BLOCK_Q, BLOCK_S,
        MERGE, DOT_PRECISION, ROPE, QK_NORM, TEMP_TUNING, PDL,
    )  # fmt: skip


@triton.jit
def attend_split(
    qkv_ptr,
    k_cache,
    v_cache,
    pos,  # int32 scalar
    inv_freq_ptr,
    part_o,
    part_ml,
    tickets,
    out_ptr,
    g,
    split,
    n_active,  # splits with work at this position (split < n_active)
    S_max,
    n_splits,
    eps,
    sm_scale,
    attn_scale,
    floor_scale,
    H: tl.constexpr,
    KVH: tl.constexpr,
    HD: tl.constexpr,
    BLOCK_REP: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_S: tl.constexpr,
    MERGE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    ROPE: tl.constexpr,
    QK_NORM: tl.constexpr,
    TEMP_TUNING: tl.constexpr,
    PDL: tl.constexpr,
):
    """Split `split` of kv head g (arguments as `attend_kernel`'s); the last of the n_active
    splits to finish merges them."""
    dtype = out_ptr.dtype.element_ty
    REP: tl.constexpr = H // KVH
    n_tiles = tl.cdiv(pos, BLOCK_S)
    base = g.to(tl.int64) * S_max * HD
    k_e, k_o, v, slots = _cache_tile(k_cache, v_cache, base, split, pos, BLOCK_S, HD)
    half = tl.arange(0, HD // 2)
    cos = tl.zeros([1, HD // 2], tl.float32)
    sin = tl.zeros([1, HD // 2], tl.float32)
    if ROPE:  # the rotation depends on the position only: computed before the wait
        angle = pos.to(tl.float32) * tl.load(inv_freq_ptr + half)[None, :]
        cos, sin = tl.cos(angle), tl.sin(angle)
    grid_dependency(PDL)

    r = tl.arange(0, BLOCK_Q)  # the group's REP query heads, padded to a tensor-core tile
    heads = g * REP + r
    q_ok = r < REP
    qe, qo = _rope_norm(qkv_ptr, heads, q_ok, cos, sin, eps, dtype, HD, ROPE, QK_NORM)
    kv_row = tl.full([1], H + g, tl.int32)  # this token's key and value (every split loads them)
    ke, ko = _rope_norm(qkv_ptr, kv_row, kv_row >= 0, cos, sin, eps, dtype, HD, ROPE, QK_NORM)
    d = tl.arange(0, HD)
    v_new = tl.load(qkv_ptr + (H + KVH + g) * HD + d).to(dtype)
    if TEMP_TUNING:
        scale = tl.log(1.0 + tl.floor((pos.to(tl.float32) + 1.0) / floor_scale)) * attn_scale + 1.0
        qe, qo = (qe * scale).to(dtype).to(tl.float32), (qo * scale).to(dtype).to(tl.float32)
    if split == 0:
        slot = base + pos * HD
        tl.store(k_cache + slot + 2 * half[None, :], ke.to(dtype))
        tl.store(k_cache + slot + 2 * half[None, :] + 1, ko.to(dtype))
        tl.store(v_cache + slot + d, v_new)

    cdt = k_e.dtype
    m = tl.full([BLOCK_Q], -1.0e30, tl.float32)
    l_sum = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, HD], tl.float32)
    for t in tl.range(split, n_tiles, n_splits):  # online softmax over this split's tiles
        nxt = _cache_tile(k_cache, v_cache, base, t + n_splits, pos, BLOCK_S, HD)
        scores = tl.dot(qe.to(cdt), tl.trans(k_e), input_precision=DOT_PRECISION)
        scores += tl.dot(qo.to(cdt), tl.trans(k_o), input_precision=DOT_PRECISION)  # [BLOCK_Q, BLOCK_S]
        seen = (slots < pos)[None, :]
        scores = tl.where(seen, scores * sm_scale, -1.0e30)
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        p = tl.where(seen, tl.exp(scores - m_new[:, None]), 0.0)
        alpha = tl.exp(m - m_new)
        l_sum = l_sum * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(cdt), v, input_precision=DOT_PRECISION)  # [BLOCK_Q, HD]
        m = m_new
        k_e, k_o, v, slots = nxt
    if split == 0:
        s_new = (tl.sum(qe * ke, axis=1) + tl.sum(qo * ko, axis=1)) * sm_scale
        m_new = tl.maximum(m, s_new)
        alpha, beta = tl.exp(m - m_new), tl.exp(s_new - m_new)
        acc = acc * alpha[:, None] + beta[:, None] * v_new.to(tl.float32)[None, :]
        l_sum = l_sum * alpha + beta
        m = m_new

    part = split * H + heads
    tl.store(part_o + part[:, None] * HD + d[None, :], acc, mask=q_ok[:, None])
    tl.store(part_ml + split * 2 * H + heads, m, mask=q_ok)
    tl.store(part_ml + (split * 2 + 1) * H + heads, l_sum, mask=q_ok)
    tl.debug_barrier()
    if tl.atomic_add(tickets + g, 1) == n_active - 1:  # acq_rel: every split's partials are visible
        _merge_splits(part_o, part_ml, out_ptr, g, n_active, H, KVH, HD, BLOCK_REP, MERGE)
        tl.atomic_xchg(tickets + g, 0)


@triton.jit
def _merge_splits(
    part_o,
    part_ml,
    out_ptr,
    g,
    n_parts,
    H: tl.constexpr,
    KVH: tl.constexpr,
    HD: tl.constexpr,
    BLOCK_REP: tl.constexpr,
    MERGE: tl.constexpr,
):
    """out[heads of group g] = sum_s o_s exp(m_s - M) / sum_s l_s exp(m_s - M) over the first
    n_parts splits' partial results, rounded to out's dtype; MERGE splits per step, rescaled
    online."""
    dtype = out_ptr.dtype.element_ty
    r = tl.arange(0, BLOCK_REP)
    heads = g * (H // KVH) + r
    q_ok = r < H // KVH
    d = tl.arange(0, HD)
    m_all = tl.full([BLOCK_REP], -1.0e30, tl.float32)
    den = tl.zeros([BLOCK_REP], tl.float32)
    num = tl.zeros([BLOCK_REP, HD], tl.float32)
    for s0 in tl.range(0, n_parts, MERGE):
        s = s0 + tl.arange(0, MERGE)
        ok = (s < n_parts)[:, None] & q_ok[None, :]  # [MERGE, BLOCK_REP]
        ml = part_ml + (2 * s)[:, None] * H + heads[None, :]
        m_s = tl.load(ml, mask=ok, other=-1.0e30, cache_modifier=".cg")
        l_s = tl.load(ml + H, mask=ok, other=0.0, cache_modifier=".cg")
        o_off = ((s[:, None] * H + heads[None, :]) * HD)[:, :, None] + d[None, None, :]
        o_s = tl.load(part_o + o_off, mask=ok[:, :, None], other=0.0, cache_modifier=".cg")
        m_new = tl.maximum(m_all, tl.max(m_s, axis=0))
        rescale = tl.exp(m_all - m_new)
        w = tl.exp(m_s - m_new[None, :])  # [MERGE, BLOCK_REP]
        den = den * rescale + tl.sum(l_s * w, axis=0)
        num = num * rescale[:, None] + tl.sum(o_s * w[:, :, None], axis=0)
        m_all = m_new
    out = num / tl.where(q_ok, den, 1.0)[:, None]
    tl.store(out_ptr + heads[:, None] * HD + d[None, :], out.to(dtype), mask=q_ok[:, None])
