"""Persistent batch-1 decode step: every decoder layer of a step in one Triton launch.

With one kernel per operation the 140M step at a 1k context costs ~2.8 us per kernel beyond
the time its weight bytes take (README, Decoding), so kernel boundaries, not bytes, bound it.
`step_kernel` is launched with as many programs as the GPU holds at once; they walk the step's
phases together, waiting for each other at a grid barrier between phases:

  phase 0          embedding of the token (and zeroed MLP accumulators)
  then per layer   RMSNorm -> qkv; attention (RoPE or NoPE per layer, QK-norm, cache write,
                   split-KV); o_proj + residual; RMSNorm -> gate_up -> SwiGLU; down_proj +
                   residual (5 phases, PER_LAYER = 5), or with the MLP as one phase whose down
                   product goes to a float32 accumulator that the next qkv phase folds into x
                   (PER_LAYER = 4, as `mlp_kernel`)

Each phase hands its work items (row blocks; (kv head, split) pairs; slices of hidden units) to
the programs round-robin and runs the per-item functions of the separate kernels
(`decode_kernels.gemv_block`, `mlp_block`, `embed_block`, `decode_attention.attend_split`),
so a step computes what the separate kernels compute (5 per layer, or 4 with `fuse_mlp`). The
LM head stays a kernel of its own.

The grid barrier is a counter per phase: each program adds one (release: its writes are
visible first) and spins until all have arrived (acquire). The last to arrive zeroes the
previous barrier's counter, which every program has left, so the counters are zero again when
the next step reaches them. It needs every program resident at once: `FusedDecoder` sizes the
grid from the compiled kernel's registers and shared memory. A spin that lasts 2^20 polls
gives up and raises a flag (`FusedDecoder.barrier_timeouts`; later barriers then skip their
waits) rather than hang: the step's results are then wrong, not late.

Triton's CPU interpreter runs programs one after another, so a barrier would wait forever
there: under it the decoder launches the kernel once per phase (`lo`, `hi`) with the barrier
compiled out, which runs the same phase code. The barrier itself runs only on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from .decode_attention import attend_split
from .decode_kernels import embed_block, gemv_block, mlp_block, prefetch_l2

# per layer: qkv, input norm, o, gate_up, down (transposed if PER_LAYER is 4), post-attention
# norm, k cache, v cache
LAYER_POINTERS = tl.constexpr(8)
SPIN_LIMIT = tl.constexpr(1 << 20)  # polls (~1 s)


@triton.jit
def _grid_sync(bar_ptr, index, n_barriers, n_programs, BARRIER: tl.constexpr):
    """Wait until all n_programs programs reach barrier `index` (see the module docstring);
    bar_ptr[n_barriers] is set if a wait gave up."""
    if BARRIER:
        tl.debug_barrier()  # every thread of this program has stored its results
        arrived = tl.atomic_add(bar_ptr + index, 1, sem="acq_rel", scope="gpu")
        if arrived == n_programs - 1:  # the last one in: everyone has left the previous barrier
            tl.atomic_xchg(bar_ptr + (index + n_barriers - 1) % n_barriers, 0, sem="relaxed", scope="gpu")
        spins = 0
        seen = arrived + 1
        gave_up = tl.atomic_add(bar_ptr + n_barriers, 0, sem="relaxed", scope="gpu") != 0
        while (seen < n_programs) & (spins < SPIN_LIMIT) & ~gave_up:  # once one gave up, fail fast
            seen = tl.atomic_add(bar_ptr + index, 0, sem="acquire", scope="gpu")
            spins += 1
        if seen < n_programs:
            tl.atomic_xchg(bar_ptr + n_barriers, 1, sem="relaxed", scope="gpu")
        tl.debug_barrier()


@triton.jit
def _pointer(layers_ptr, layer, which, dtype):
    return tl.load(layers_ptr + layer * LAYER_POINTERS + which).to(tl.pointer_type(dtype))


@triton.jit
def step_kernel(
    layers_ptr,  # [L, LAYER_POINTERS] int64 addresses of each layer's tensors (see LAYER_POINTERS)
    rope_ptr,  # [L] int32: 1 where the layer uses RoPE, 0 on NoPE layers
    embed_ptr,  # [V, D] embedding table
    tok_ptr,  # [1] int64 token
    x_ptr,  # [D] the residual after the embedding / after attention
    xin_ptr,  # [D] the residual before attention
    qkv_ptr,  # [(H + 2 KVH) HD]
    attn_ptr,  # [H HD]
    h_ptr,  # [HIDDEN] SwiGLU output (PER_LAYER 5)
    acc_ptr,  # [2, D] float32 MLP accumulators (PER_LAYER 4: layer l adds to row l % 2)
    pos_ptr,  # [1] int64 cache slot of this token
    inv_freq_ptr,
    part_o,
    part_ml,
    tickets,
    bar_ptr,  # [n_barriers + 1] int32 barrier counters, then the gave-up flag
    lo,  # phases [lo, hi) run in this launch
    hi,
    n_barriers,
    S_max,
    n_splits,
    eps,
    sm_scale,
    attn_scale,
    floor_scale,
    D: tl.constexpr,
    HIDDEN: tl.constexpr,
    QKV_N: tl.constexpr,  # rows per qkv item
    QKV_K: tl.constexpr,
    O_N: tl.constexpr,
    O_K: tl.constexpr,
    MLP_ROWS: tl.constexpr,  # hidden units per MLP item (PER_LAYER 4)
    MLP_N: tl.constexpr,
    MLP_K: tl.constexpr,
    GU_N: tl.constexpr,  # rows per gate_up item (PER_LAYER 5)
    GU_K: tl.constexpr,
    DN_N: tl.constexpr,  # rows per down item (PER_LAYER 5)
    DN_K: tl.constexpr,
    PER_LAYER: tl.constexpr,  # phases per layer: 5, or 4 with the MLP as one phase
    BLOCK_D: tl.constexpr,
    EMBED: tl.constexpr,  # entries per embedding item
    H: tl.constexpr,
    KVH: tl.constexpr,
    HD: tl.constexpr,
    BLOCK_REP: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_S: tl.constexpr,
    MERGE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    QK_NORM: tl.constexpr,
    TEMP_TUNING: tl.constexpr,
    BARRIER: tl.constexpr,
    PDL: tl.constexpr,
    PF_BYTES: tl.constexpr,  # per barrier: bytes of the next phase's reads to ask L2 for (0: none)
    PF_QKV: tl.constexpr,  # bytes asked for of: the qkv weights, the o weights, each of gate / up /
    PF_O: tl.constexpr,  # down, and K and V of each kv head (a cap): `prefetch_sizes`
    PF_MLP: tl.constexpr,
    PF_KV: tl.constexpr,
    PF_LINES: tl.constexpr,
):
    """Phases [lo, hi) of a decode step (module docstring), a grid barrier after each but the
    last; program p takes items p, p + P, p + 2P, ... of each phase (P programs)."""
    dtype = x_ptr.dtype.element_ty
    p = tl.program_id(0)
    n_programs = tl.num_programs(0)
    NQKV: tl.constexpr = (H + 2 * KVH) * HD
    if PDL:  # the previous kernel (the last step's bookkeeping) wrote tok and pos
        gdc_wait()
    for i in range(0, hi - lo):
        phase = lo + i  # a tensor under the interpreter too (its range yields ints)
        layer = (phase - 1) // PER_LAYER
        kind = (phase - 1) % PER_LAYER
        if PDL:  # noqa: SIM102 (a compile-time branch around a run-time one)
            if phase == hi - 1:  # let the LM head launch and preload its weights
                gdc_launch_dependents()
        if phase == 0:
            for item in range(p, tl.cdiv(D, EMBED), n_programs):
                embed_block(embed_ptr, tok_ptr, x_ptr, D, item, EMBED, acc_ptr, True)
        elif kind == 0:  # RMSNorm -> qkv (PER_LAYER 4: x + the last MLP's output -> xin first)
            w = _pointer(layers_ptr, layer, 0, dtype)
            norm = _pointer(layers_ptr, layer, 1, dtype)
            acc_in = acc_ptr + ((layer + 1) % 2) * D
            for item in range(p, tl.cdiv(NQKV, QKV_N), n_programs):  # epilogue 0: store
                gemv_block(
                    w, x_ptr, norm, qkv_ptr, qkv_ptr, qkv_ptr, item, NQKV, D, eps,
                    True, 0, QKV_N, QKV_K, False, False, acc_in, xin_ptr, PER_LAYER == 4,
                )  # fmt: skip
        elif kind == 1:  # items (kv head, split) over the splits with work at this position
            k_cache = _pointer(layers_ptr, layer, 6, dtype)
            v_cache = _pointer(layers_ptr, layer, 7, dtype)
            pos = tl.load(pos_ptr).to(tl.int32)
            n_active = tl.maximum(1, tl.minimum(tl.cdiv(pos, BLOCK_S), n_splits))
            rope = tl.load(rope_ptr + layer) != 0  # RoPE + QK-norm, or NoPE + temperature tuning
            for item in range(p, KVH * n_active, n_programs):
                g, split = item // n_active, item % n_active
                if rope:
                    attend_split(
                        qkv_ptr, k_cache, v_cache, pos, inv_freq_ptr, part_o, part_ml, tickets, attn_ptr, g,
                        split, n_active, S_max, n_splits, eps, sm_scale, attn_scale, floor_scale, H, KVH, HD,
                        BLOCK_REP, BLOCK_Q, BLOCK_S, MERGE, DOT_PRECISION, True, QK_NORM, False, False,
                    )  # fmt: skip
                else:
                    attend_split(
                        qkv_ptr, k_cache, v_cache, pos, inv_freq_ptr, part_o, part_ml, tickets, attn_ptr, g,
                        split, n_active, S_max, n_splits, eps, sm_scale, attn_scale, floor_scale, H, KVH, HD,
                        BLOCK_REP, BLOCK_Q, BLOCK_S, MERGE, DOT_PRECISION, False, False, TEMP_TUNING, False,
                    )  # fmt: skip
        elif kind == 2:  # x (PER_LAYER 4: xin) + o_proj(attn) -> x
            w = _pointer(layers_ptr, layer, 2, dtype)
            res = xin_ptr if PER_LAYER == 4 else x_ptr
            for item in range(p, tl.cdiv(D, O_N), n_programs):  # epilogue 1: + residual
                gemv_block(
                    w, attn_ptr, attn_ptr, res, x_ptr, x_ptr, item, D, H * HD, eps,
                    False, 1, O_N, O_K, False, False, acc_ptr, x_ptr, False,
                )  # fmt: skip
        elif kind == 3:
            if PER_LAYER == 5:  # RMSNorm -> gate_up -> SwiGLU -> h (epilogue 2)
                w = _pointer(layers_ptr, layer, 3, dtype)
                norm = _pointer(layers_ptr, layer, 5, dtype)
                for item in range(p, tl.cdiv(HIDDEN, GU_N), n_programs):
                    gemv_block(
                        w, x_ptr, norm, h_ptr, h_ptr, h_ptr, item, HIDDEN, D, eps,
                        True, 2, GU_N, GU_K, False, False, acc_ptr, x_ptr, False,
                    )  # fmt: skip
            else:  # the MLP into accumulator layer % 2; the other one (read by this layer's qkv) zeroed
                gate_up = _pointer(layers_ptr, layer, 3, dtype)
                down_t = _pointer(layers_ptr, layer, 4, dtype)
                norm = _pointer(layers_ptr, layer, 5, dtype)
                acc_out = acc_ptr + (layer % 2) * D
                acc_old = acc_ptr + ((layer + 1) % 2) * D
                for item in range(p, tl.cdiv(HIDDEN, MLP_ROWS), n_programs):
                    mlp_block(
                        gate_up, down_t, x_ptr, norm, acc_out, acc_old, item, HIDDEN, D, eps,
                        MLP_ROWS, MLP_N, MLP_K, BLOCK_D, False, False,
                    )  # fmt: skip
        else:  # (PER_LAYER 5) x + down_proj(h) -> x
            w = _pointer(layers_ptr, layer, 4, dtype)
            for item in range(p, tl.cdiv(D, DN_N), n_programs):
                gemv_block(
                    w, h_ptr, h_ptr, x_ptr, x_ptr, x_ptr, item, D, HIDDEN, eps,
                    False, 1, DN_N, DN_K, False, False, acc_ptr, x_ptr, False,
                )  # fmt: skip
        if phase < hi - 1:
            if PF_BYTES > 0:  # the fetch overlaps the wait: weights do not depend on this phase
                _prefetch_next(
                    layers_ptr, phase + 1, pos_ptr, p, n_programs, S_max, D, HIDDEN, KVH, HD,
                    x_ptr.dtype.element_ty.primitive_bitwidth // 8, PF_QKV, PF_O, PF_MLP, PF_KV, PF_LINES,
                    PER_LAYER,
                )  # fmt: skip
            _grid_sync(bar_ptr, phase, n_barriers, n_programs, BARRIER)


@triton.jit
def _prefetch_next(
    layers_ptr,
    phase,
    pos_ptr,
    p,
    n_programs,
    S_max,
    D: tl.constexpr,
    HIDDEN: tl.constexpr,
    KVH: tl.constexpr,
    HD: tl.constexpr,
    ES: tl.constexpr,  # bytes per element
    PF_QKV: tl.constexpr,
    PF_O: tl.constexpr,
    PF_MLP: tl.constexpr,
    PF_KV: tl.constexpr,
    PF_LINES: tl.constexpr,
    PER_LAYER: tl.constexpr,
):
    """Ask L2 for the first bytes that phase `phase` reads (`prefetch_sizes`), spread over the
    programs: the qkv or o weights, the cache below the position (attention; equal shares per
    kv head and k / v), the gate and up rows (and with PER_LAYER 4 the transposed down rows) of
    the first MLP items, or the down rows."""
    layer = (phase - 1) // PER_LAYER
    kind = (phase - 1) % PER_LAYER
    if kind == 0:
        prefetch_l2(_pointer(layers_ptr, layer, 0, tl.uint8), PF_QKV, p, n_programs, PF_LINES)
    elif kind == 1:
        k_cache = _pointer(layers_ptr, layer, 6, tl.uint8)
        v_cache = _pointer(layers_ptr, layer, 7, tl.uint8)
        share = tl.minimum(tl.load(pos_ptr).to(tl.int32) * (HD * ES), PF_KV)
        for g in tl.static_range(KVH):
            head = g * S_max * (HD * ES)
            prefetch_l2(k_cache + head, share, p, n_programs, PF_LINES)
            prefetch_l2(v_cache + head, share, p, n_programs, PF_LINES)
    elif kind == 2:
        prefetch_l2(_pointer(layers_ptr, layer, 2, tl.uint8), PF_O, p, n_programs, PF_LINES)
    elif kind == 3:
        gate_up = _pointer(layers_ptr, layer, 3, tl.uint8)
        prefetch_l2(gate_up, PF_MLP, p, n_programs, PF_LINES)
        prefetch_l2(gate_up + HIDDEN * D * ES, PF_MLP, p, n_programs, PF_LINES)
        if PER_LAYER == 4:
            prefetch_l2(_pointer(layers_ptr, layer, 4, tl.uint8), PF_MLP, p, n_programs, PF_LINES)
    else:
        prefetch_l2(_pointer(layers_ptr, layer, 4, tl.uint8), PF_MLP, p, n_programs, PF_LINES)


def prefetch_sizes(cfg, element_size: int, budget: int) -> dict[str, int]:
    """`step_kernel`'s PF_* arguments: bytes it asks L2 for before each barrier, out of
    `budget`: of the qkv weights, of the o weights, of each of gate, up and down (a third each),
    and the cap per kv head of each of K and V (the cache below the position)."""
    d, hd, kv = cfg.hidden_size, cfg.head_dim, cfg.num_key_value_heads
    qkv = (cfg.num_attention_heads + 2 * kv) * hd * d * element_size
    o = d * cfg.num_attention_heads * hd * element_size
    mlp = cfg.intermediate_size_mlp * d * element_size
    return {
        "PF_QKV": min(qkv, budget),
        "PF_O": min(o, budget),
        "PF_MLP": min(mlp, budget // 3),
        "PF_KV": budget // (2 * kv),
    }


def n_phases(n_layers: int, per_layer: int) -> int:
    """Phases of one step: the embedding, then `per_layer` (5, or 4 with the one-phase MLP) per layer."""
    return 1 + per_layer * n_layers


@dataclass(frozen=True)
class SMLimits:
    """What one streaming multiprocessor holds: threads, 32-bit registers, shared memory bytes,
    blocks; and how many SMs the GPU has."""

    sms: int
    threads: int = 2048
    registers: int = 65536
    shared: int = 233472
    blocks: int = 32


def resident_programs(
    n_regs: int, shared: int, num_warps: int, limits: SMLimits, per_sm: int | None = None
) -> int:
    """Programs of a kernel (n_regs registers per thread, `shared` bytes of shared memory,
    num_warps warps) that the GPU holds at once: per SM the least of the thread, register
    (allocated per warp in units of 256) and shared-memory limits and the block limit (and
    `per_sm` if given), times the SMs."""
    by_threads = limits.threads // (32 * num_warps)
    regs_per_warp = -(-max(n_regs, 1) * 32 // 256) * 256
    by_regs = limits.registers // (regs_per_warp * num_warps)
    by_shared = limits.shared // shared if shared else limits.blocks
    fit = min(by_threads, by_regs, by_shared, limits.blocks, per_sm or limits.blocks)
    if fit < 1:
        raise ValueError(
            f"the persistent step kernel does not fit an SM ({n_regs} registers, {shared} B shared)"
        )
    return fit * limits.sms
