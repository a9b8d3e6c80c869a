"""Triton kernels of the fused batch-1 decode step (see `fused_decode.py`).

A batch-1 decode step reads every weight once and does almost no arithmetic, so its speed
is memory bandwidth plus the number of kernels. Each decoder layer here is five kernels:

  1. `gemv`  x -> RMSNorm -> qkv                  (norm folded into the matrix-vector product)
  2. `attend` qkv -> RoPE, QK-norm, cache write, split-KV attention; the last split of
     each kv head to finish merges the partial results (an atomic ticket, no extra launch)
  3. `gemv`  attn -> o_proj, + residual (in place on x)
  4. `gemv`  x -> RMSNorm -> gate_up -> SwiGLU     (gate and up rows read by one program)
  5. `gemv`  h -> down_proj, + residual (in place on x)

or, with the MLP in one kernel (`FusedDecoder(fuse_mlp=True)`), four: 4-5 become `mlp_kernel`,
which adds its hidden units' share of down_proj to a float32 accumulator (split-K, atomics)
that the next layer's qkv kernel (or the LM head) folds into the residual as it reads x;
then the LM head (`gemv` with the final RMSNorm); for greedy decoding its epilogue also keeps
each program's best logit, and `greedy_advance_kernel` turns those into the next token and
does the step's bookkeeping.

Roundings follow the eager bf16 model step by step (normalised x, RoPE, QK-norm and every
projection output are rounded to the model dtype where the eager model rounds them), so the
fused step differs from eager decoding by the order of float32 additions and by attention
probabilities entering the PV product in the model dtype (as in flash-attention kernels).

On Hopper the kernels chain with programmatic dependent launch: each loads what does not
depend on the previous kernel (its first weight tiles, its cache tile) before `gdc_wait`,
and the matrix-vector products let the next kernel launch as soon as they start (`EARLY`).

The attention kernel is latency bound: memory sits idle while it runs. Extra programs of
it ask L2 to fetch the first rows of the MLP weights that the next kernels read
(`PREFETCH`), so those kernels find part of their bytes in L2.

The kernels take batch 1 (one token); they also run under `TRITON_INTERPRET=1` on CPU
tensors, which is how the tests check them against the eager model.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

EPILOGUE_STORE, EPILOGUE_RESIDUAL, EPILOGUE_SWIGLU, EPILOGUE_ARGMAX = 0, 1, 2, 3
ARGMAX_SLOTS = tl.constexpr(256)  # argmax partial results (LM-head programs spread their atomics over them)


@triton.jit
def _residual(x_ptr, acc_ptr, kk, k_ok, FOLD: tl.constexpr):
    """x[kk] in the model dtype; FOLD: x + acc rounded as the eager residual add rounds, where
    acc (float32) holds the split-K MLP's down product (`mlp_kernel`), rounded to the model
    dtype first as the eager down_proj's output is."""
    x = tl.load(x_ptr + kk, mask=k_ok, other=0.0)
    if FOLD:
        a = tl.load(acc_ptr + kk, mask=k_ok, other=0.0).to(x.dtype)
        x = (x.to(tl.float32) + a.to(tl.float32)).to(x.dtype)
    return x


@triton.jit
def _rstd(x_ptr, acc_ptr, K: tl.constexpr, eps, BLOCK_K: tl.constexpr, FOLD: tl.constexpr):
    """1 / sqrt(mean(x^2) + eps) over the K entries of x (with the MLP's output folded in:
    see `_residual`), in float32."""
    cols = tl.arange(0, BLOCK_K)
    sq = tl.zeros([BLOCK_K], tl.float32)
    for k0 in tl.static_range(0, K, BLOCK_K):  # unrolled: the loads of all steps in flight at once
        x = _residual(x_ptr, acc_ptr, k0 + cols, k0 + cols < K, FOLD).to(tl.float32)
        sq += x * x
    return tl.rsqrt(tl.sum(sq, axis=0) / K + eps)


@triton.jit
def _grid_dependency(PDL: tl.constexpr, EARLY: tl.constexpr = False):
    """With programmatic dependent launch: wait until the previous kernel's writes are
    visible, then let the next kernel start loading its weights (EARLY: it was let start
    before, see `gemv_kernel`). Loads issued before this call must not depend on the
    previous kernel."""
    if PDL:
        gdc_wait()
        if not EARLY:
            gdc_launch_dependents()


@triton.jit
def _prefetch_l2(ptr, nbytes, j, n_programs, LINES: tl.constexpr):
    """Ask L2 to fetch bytes [0, nbytes) at ptr, in chunks of LINES 128-byte lines: program j
    of n_programs takes chunks j, j + n_programs, ... (a hint: nothing waits for it)."""
    lines = tl.arange(0, LINES) * 128
    for c in tl.range(j * LINES * 128, nbytes, n_programs * LINES * 128):
        addr = ptr + tl.minimum(c + lines, nbytes - 1)
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [addr], dtype=tl.int32, is_pure=False, pack=1
        )


@triton.jit
def _gemv_rows(
    w_ptr,
    x_ptr,
    norm_ptr,
    acc_ptr,
    xout_ptr,
    rows,
    N,
    K: tl.constexpr,
    eps,
    NORM: tl.constexpr,
    FOLD: tl.constexpr,
    SWIGLU: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PDL: tl.constexpr,
    EARLY: tl.constexpr,
    rstd=1.0,
    RSTD_GIVEN: tl.constexpr = False,
):
    """float32 sums [BLOCK_N] of W[rows] . x' (and, SWIGLU, of W[N + rows] . x': the up rows),
    x' = RMSNorm(x) if NORM else x, x with the MLP's output folded in if FOLD (program 0 then
    writes that residual to xout_ptr), and RMSNorm's 1 / rms (`rstd`, computed here unless
    RSTD_GIVEN). Weight tiles are loaded one step ahead; the first is in flight before the wait
    for the previous kernel (which wrote x)."""
    dtype = x_ptr.dtype.element_ty
    row_ok = rows[:, None] < N
    cols = tl.arange(0, BLOCK_K)
    gate_rows = w_ptr + rows.to(tl.int64)[:, None] * K
    up_rows = gate_rows + N * K
    w = tl.load(gate_rows + cols[None, :], mask=row_ok & (cols[None, :] < K), other=0.0)
    w_up = w
    if SWIGLU:
        w_up = tl.load(up_rows + cols[None, :], mask=row_ok & (cols[None, :] < K), other=0.0)
    _grid_dependency(PDL, EARLY)
    if NORM and not RSTD_GIVEN:
        rstd = _rstd(x_ptr, acc_ptr, K, eps, BLOCK_K, FOLD)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    acc_up = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k0 in tl.static_range(0, K, BLOCK_K):  # unrolled (K is a compile-time constant)
        kk = k0 + cols
        k_ok = kk < K
        nxt = kk[None, :] + BLOCK_K
        nxt_ok = row_ok & (nxt < K)
        w_next = tl.load(gate_rows + nxt, mask=nxt_ok, other=0.0)
        x = _residual(x_ptr, acc_ptr, kk, k_ok, FOLD)
        if FOLD:  # noqa: SIM102 (a compile-time branch around a run-time one)
            if tl.program_id(0) == 0:
                tl.store(xout_ptr + kk, x, mask=k_ok)
        if NORM:  # eager: rms_norm(x.float()).type_as(x) * weight, each product rounded
            g = tl.load(norm_ptr + kk, mask=k_ok, other=0.0).to(tl.float32)
            x = ((x.to(tl.float32) * rstd).to(dtype).to(tl.float32) * g).to(dtype)
        x = x.to(tl.float32)[None, :]
        acc += w.to(tl.float32) * x
        w = w_next
        if SWIGLU:
            up_next = tl.load(up_rows + nxt, mask=nxt_ok, other=0.0)
            acc_up += w_up.to(tl.float32) * x
            w_up = up_next
    return tl.sum(acc, axis=1), tl.sum(acc_up, axis=1), rstd


@triton.jit
def _swiglu(gate, up, dtype):
    """silu(gate) * up of float32 sums, each rounded where the eager model rounds."""
    g = gate.to(dtype).to(tl.float32)
    return ((g / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32) * up.to(dtype).to(tl.float32)).to(dtype)


@triton.jit
def gemv_kernel(
    w_ptr,  # [N_rows, K] row-major (N_rows = 2N for SwiGLU: gate rows, then up rows)
    x_ptr,  # [K]
    norm_ptr,  # [K] RMSNorm scale (read when NORM)
    res_ptr,  # [N] residual (read when EPILOGUE_RESIDUAL)
    out_ptr,  # [N]
    best_ptr,  # [ARGMAX_SLOTS] int64 (written when EPILOGUE_ARGMAX)
    N,
    K: tl.constexpr,
    eps,
    NORM: tl.constexpr,
    EPILOGUE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PDL: tl.constexpr,
    EARLY: tl.constexpr,
    acc_ptr=None,  # [K] float32 MLP output to fold into x (read when FOLD)
    xout_ptr=None,  # [K] x with it folded in (written by program 0 when FOLD)
    FOLD: tl.constexpr = False,
):
    """out[n] = epilogue(sum_k W[n, k] * x'[k]), x' = RMSNorm(x) if NORM else x (x + the split-K
    MLP's output if FOLD). EPILOGUE_ARGMAX also folds this program's best (value, row) into
    best_ptr (see `_argmax_key`)."""
    dtype = out_ptr.dtype.element_ty
    if PDL and EARLY:  # the next kernel may start preloading while this one waits
        gdc_launch_dependents()
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    y, up, _ = _gemv_rows(
        w_ptr, x_ptr, norm_ptr, acc_ptr, xout_ptr, rows, N, K, eps,
        NORM, FOLD, EPILOGUE == 2, BLOCK_N, BLOCK_K, PDL, EARLY,
    )  # fmt: skip
    y = y.to(dtype).to(tl.float32)
    if EPILOGUE == 1:
        y = tl.load(res_ptr + rows, mask=rows < N, other=0.0).to(tl.float32) + y
    if EPILOGUE == 2:
        y = _swiglu(y, up, dtype).to(tl.float32)
    tl.store(out_ptr + rows, y.to(dtype), mask=rows < N)
    if EPILOGUE == 3:
        key = tl.max(_argmax_key(tl.where(rows < N, y, float("-inf")), rows), axis=0)
        tl.atomic_max(best_ptr + tl.program_id(0) % ARGMAX_SLOTS, key, sem="relaxed")


@triton.jit
def mlp_kernel(
    w_ptr,  # [2H, K] gate rows, then up rows
    wt_ptr,  # [H, K] down_proj's weight transposed: row j holds what hidden unit j adds to each output
    x_ptr,  # [K] the residual after attention
    norm_ptr,  # [K] RMSNorm scale
    acc_ptr,  # [K] float32, zero before: the down product is added here (atomically)
    zero_ptr,  # [K] float32: the other accumulator (read by the qkv kernel before), zeroed here
    H,
    K: tl.constexpr,
    eps,
    ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PDL: tl.constexpr,
    EARLY: tl.constexpr,
):
    """The MLP in one kernel: program p takes hidden units [p ROWS, (p + 1) ROWS), BLOCK_N at a
    time: h = silu(gate) * up of RMSNorm(x) as `gemv_kernel`'s SWIGLU epilogue, and their share
    of down_proj(h), sum_j h[j] * wt[j, :], summed over the program's units in registers
    ([BLOCK_D] >= K), then added to acc once (split-K over the hidden units: H / ROWS atomic
    adds per output; the next kernel rounds acc and adds it to the residual, see `_residual`).
    One kernel boundary fewer per layer than gate_up then down; the sums' order is the atomics'
    (not fixed)."""
    dtype = x_ptr.dtype.element_ty
    if PDL and EARLY:
        gdc_launch_dependents()
    cols = tl.arange(0, BLOCK_D)
    part = tl.zeros([BLOCK_D], tl.float32)
    rstd = 1.0
    for r0 in tl.static_range(0, ROWS, BLOCK_N):  # RMSNorm's 1 / rms computed by the first chunk only
        rows = tl.program_id(0) * ROWS + r0 + tl.arange(0, BLOCK_N)
        gate, up, rstd = _gemv_rows(
            w_ptr, x_ptr, norm_ptr, acc_ptr, x_ptr, rows, H, K, eps,
            True, False, True, BLOCK_N, BLOCK_K, PDL, EARLY, rstd, r0 > 0,
        )  # fmt: skip
        h = tl.where(rows < H, _swiglu(gate, up, dtype).to(tl.float32), 0.0)[:, None]
        ok = (rows[:, None] < H) & (cols[None, :] < K)
        w = tl.load(wt_ptr + rows.to(tl.int64)[:, None] * K + cols[None, :], mask=ok, other=0.0)
        part += tl.sum(w.to(tl.float32) * h, axis=0)
    tl.atomic_add(acc_ptr + cols, part, mask=cols < K, sem="relaxed")
    if tl.program_id(0) == 0:
        tl.store(zero_ptr + cols, tl.zeros([BLOCK_D], tl.float32), mask=cols < K)


@triton.jit
def _argmax_key(value, index):
    """int64 keys ordered as (value, -index): the largest key is the first index of the
    largest value (as torch.argmax). The float's bits, made to sort as signed integers, go
    in the high word (-0.0 counts as 0.0); 2^32 - 1 - index in the low word."""
    bits = (value + 0.0).to(tl.int32, bitcast=True)
    bits = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.to(tl.int64) << 32) | (0xFFFFFFFF - index.to(tl.int64))


@triton.jit
def greedy_advance_kernel(
    best_ptr,  # [ARGMAX_SLOTS] int64 keys of the LM head's programs; reset here
    tok_ptr,  # [1] int64: the next input token (written)
    pos_ptr,  # [1] int64 cache slot, advanced by one
    idx_ptr,  # [1] int64 column of out_ptr to write, advanced by one
    finished_ptr,  # [1] bool
    stop_ptr,  # [n_stop] int64 stop token ids
    out_ptr,  # [max_len] int64 generated tokens
    n_stop,
    pad_id,
    BLOCK_STOP: tl.constexpr,
    PDL: tl.constexpr,
):
    """One program ends a greedy decode step: the argmax token (pad_id once finished) goes
    to tok and out[idx]; finished |= it is a stop token; pos and idx advance."""
    _grid_dependency(PDL)
    slots = tl.arange(0, ARGMAX_SLOTS)
    key = tl.max(tl.load(best_ptr + slots), axis=0)
    tl.store(best_ptr + slots, tl.full([ARGMAX_SLOTS], -(2**63), tl.int64))
    tok = 0xFFFFFFFF - (key & 0xFFFFFFFF)
    finished = tl.load(finished_ptr) != 0
    tok = tl.where(finished, pad_id, tok)
    stops = tl.load(stop_ptr + tl.arange(0, BLOCK_STOP), mask=tl.arange(0, BLOCK_STOP) < n_stop, other=-1)
    stopped = tl.sum((stops == tok).to(tl.int32), axis=0) > 0
    idx = tl.load(idx_ptr)
    tl.store(tok_ptr, tok)
    tl.store(out_ptr + idx, tok)
    tl.store(finished_ptr, finished | stopped)
    tl.store(pos_ptr, tl.load(pos_ptr) + 1)
    tl.store(idx_ptr, idx + 1)


@triton.jit
def embed_kernel(
    table_ptr,
    tok_ptr,
    out_ptr,
    D,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
    zero_ptr=None,
    ZERO: tl.constexpr = False,
):
    """out[:] = table[tok]; ZERO: also zero the [2, D] float32 MLP accumulators at zero_ptr."""
    _grid_dependency(PDL)
    tok = tl.load(tok_ptr).to(tl.int64)
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + cols, tl.load(table_ptr + tok * D + cols, mask=cols < D), mask=cols < D)
    if ZERO:
        tl.store(zero_ptr + cols, tl.zeros([BLOCK], tl.float32), mask=cols < D)
        tl.store(zero_ptr + D + cols, tl.zeros([BLOCK], tl.float32), mask=cols < D)


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
    dtype = out_ptr.dtype.element_ty
    REP: tl.constexpr = H // KVH
    g = tl.program_id(0)
    split = tl.program_id(1)
    if PREFETCH:  # the first n_pf programs of each kv head prefetch (dispatched first)
        n_pf = tl.num_programs(1) - n_splits
        if split < n_pf:
            j, n_programs = g * n_pf + split, KVH * n_pf
            _prefetch_l2(pf0, pf0_bytes, j, n_programs, PF_LINES)
            _prefetch_l2(pf1, pf1_bytes, j, n_programs, PF_LINES)
            _prefetch_l2(pf2, pf2_bytes, j, n_programs, PF_LINES)
            return
        split -= n_pf
    pos = tl.load(pos_ptr).to(tl.int32)  # set before this decode step began
    n_tiles = tl.cdiv(pos, BLOCK_S)  # tiles holding earlier tokens
    n_active = tl.maximum(1, tl.minimum(n_tiles, n_splits))  # split 0 always runs
    if split >= n_active:
        return
    base = g.to(tl.int64) * S_max * HD
    k_e, k_o, v, slots = _cache_tile(k_cache, v_cache, base, split, pos, BLOCK_S, HD)
    half = tl.arange(0, HD // 2)
    cos = tl.zeros([1, HD // 2], tl.float32)
    sin = tl.zeros([1, HD // 2], tl.float32)
    if ROPE:  # the rotation depends on the position only: computed before the wait
        angle = pos.to(tl.float32) * tl.load(inv_freq_ptr + half)[None, :]
        cos, sin = tl.cos(angle), tl.sin(angle)
    _grid_dependency(PDL)

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
