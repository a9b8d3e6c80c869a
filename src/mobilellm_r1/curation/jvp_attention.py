"""Exact forward-mode (JVP) causal attention for influence scoring, flash style, in Triton.

Influence scores are JVPs of per-sample losses (`influence.jvp_scores`). PyTorch's SDPA has a
forward-mode rule only in its math backend, which materialises [B, H, T, T] scores; this module
gives causal GQA attention a tangent rule of its own. Per query row i over keys j <= i, scale c:

    s_ij = c q_i.k_j,   ds_ij = c (dq_i.k_j + q_i.dk_j),   p_ij = exp(s_ij - m_i)
    l = sum p,  A = sum p v_j,  r = sum p ds,  B = sum p ds v_j,  C = sum p dv_j
    O = A / l,  dO = (B + C) / l - (r / l) O

(the derivative of softmax(s) is P (ds - sum_j P ds); m_i, the running max, cancels). The Triton
kernel (`jvp_attention_kernel`) computes O and dO in one pass over the keys with an online
softmax: every accumulator is rescaled when the running max changes, all in float32, inputs and
outputs in the input dtype. Query head h reads kv head h // (H / KVH).

Pieces:

* `attention_jvp` (custom op ``mobilellm_r1::attention_jvp``): (O, dO) on the kernel (CUDA, a
  power-of-two head_dim 16..128, float32 / bfloat16 / float16) or `attention_jvp_reference` (the
  same math in PyTorch, chunked over query blocks). Its vmap rule folds a vmapped tangent dim into
  the batch dim without copying the primals: tangent row z pairs with primal row z % B, so K
  query directions share q, k, v in memory (the kernel re-reads them; the reference computes the
  softmax once).
* `JvpAttention`: an autograd.Function whose `jvp` calls `attention_jvp` (forward mode through
  `torch.func.jvp`; no backward). Under ``vmap(jvp(...))`` its `jvp` runs on batched tangents, which
  is where the custom op's vmap rule applies; its own `vmap` staticmethod covers batched primals.
* `jvp_sdpa()`: a TorchFunctionMode routing causal, unmasked, dropout-free square SDPA calls to
  `JvpAttention` (the model file stays as it is); every other SDPA call passes through unchanged.

Under ``TRITON_INTERPRET=1`` the kernel runs on CPU tensors (`attention_jvp_triton`, or
``CPU_KERNEL = True`` to route CPU tensors to it), which is how the tests check it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor
from torch.overrides import TorchFunctionMode

# Launch configuration (head_dim <= 64; BLOCK_N is halved above that). Module constants so a GPU
# benchmark can tune them: benchmarks/influence_jvp.py --block-m/--block-n/--warps/--stages.
BLOCK_M = 64  # query rows per program
BLOCK_N = 64  # keys per step
NUM_WARPS = 4
NUM_STAGES = 2
REFERENCE_BLOCK = 128  # query rows per chunk of the PyTorch reference
CPU_KERNEL = False  # tests: CPU tensors take the Triton kernel (interpreter) instead of the reference
NEG = tl.constexpr(-1.0e30)  # masked scores and the initial running max (finite: no inf - inf)
LOG2E = tl.constexpr(1.4426950408889634)
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


# ====================================================================== Triton kernel
@triton.jit
def _operand(x, UPCAST: tl.constexpr):
    """x as a tl.dot operand: widened to float32 under UPCAST (Triton's CPU interpreter multiplies
    bfloat16 operands as raw 16-bit integers; GPUs multiply them natively)."""
    if UPCAST:
        return x.to(tl.float32)
    return x


@triton.jit
def _rows(ptr, strides, z, h, rows, HD: tl.constexpr):
    """Pointers [N, HD] to rows ``rows`` of head h of batch row z of a [Z, heads, T, HD] tensor
    with strides (batch, head, row) and unit stride along HD."""
    d = tl.arange(0, HD)
    return ptr + z * strides[0] + h * strides[1] + rows[:, None] * strides[2] + d[None, :]


@triton.jit
def _tile(ptr, strides, z, h, rows, T, HD: tl.constexpr, UPCAST: tl.constexpr):
    """The [N, HD] tile at `_rows` as a dot operand; rows >= T read as 0."""
    x = tl.load(_rows(ptr, strides, z, h, rows, HD), mask=(rows < T)[:, None], other=0.0)
    return _operand(x, UPCAST)


@triton.jit
def jvp_attention_kernel(
    q_ptr,  # [ZP, H, T, HD] primal rows zp = z % ZP
    k_ptr,  # [ZP, KVH, T, HD]
    v_ptr,  # [ZP, KVH, T, HD]
    dq_ptr,  # [Z, H, T, HD] tangents (read only when TANGENT)
    dk_ptr,  # [Z, KVH, T, HD]
    dv_ptr,  # [Z, KVH, T, HD]
    o_ptr,  # [ZP, H, T, HD] out
    do_ptr,  # [Z, H, T, HD] out (written only when TANGENT)
    strides,  # 8 tuples (batch, head, row): q, k, v, dq, dk, dv, o, do
    T,
    ZP,
    scale,
    H: tl.constexpr,
    REP: tl.constexpr,  # query heads per kv head
    HD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    TANGENT: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Program (query block, z * H + h): O (and dO) of BLOCK_M query rows of head h of tangent row
    z over keys 0 .. last row (causal), online softmax in the log2 domain. The longest blocks run
    first (a causal grid's tail is its short blocks). O is stored by the programs z < ZP only."""
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    z, h = tl.program_id(1) // H, tl.program_id(1) % H
    zp, g = (z % ZP).to(tl.int64), h // REP
    z = z.to(tl.int64)
    dtype = o_ptr.dtype.element_ty
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = _tile(q_ptr, strides[0], zp, h, offs_m, T, HD, UPCAST)
    if TANGENT:
        dq = _tile(dq_ptr, strides[3], z, h, offs_m, T, HD, UPCAST)
    m = tl.full([BLOCK_M], NEG, tl.float32)
    l_sum = tl.zeros([BLOCK_M], tl.float32)
    r_sum = tl.zeros([BLOCK_M], tl.float32)
    acc_o = tl.zeros([BLOCK_M, HD], tl.float32)  # A
    acc_t = tl.zeros([BLOCK_M, HD], tl.float32)  # B + C
    for start_n in tl.range(0, tl.minimum(start_m + BLOCK_M, T), BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _tile(k_ptr, strides[1], zp, g, offs_n, T, HD, UPCAST)
        v = _tile(v_ptr, strides[2], zp, g, offs_n, T, HD, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * (scale * LOG2E)
        s = tl.where(offs_n[None, :] <= offs_m[:, None], s, NEG)
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])  # [BLOCK_M, BLOCK_N], 0 where masked
        p_op = _operand(p.to(dtype), UPCAST)
        l_sum = l_sum * alpha + tl.sum(p, axis=1)
        acc_o = tl.dot(p_op, v, acc_o * alpha[:, None], input_precision=PRECISION)
        if TANGENT:
            dk = _tile(dk_ptr, strides[4], z, g, offs_n, T, HD, UPCAST)
            dv = _tile(dv_ptr, strides[5], z, g, offs_n, T, HD, UPCAST)
            ds = tl.dot(dq, tl.trans(k), input_precision=PRECISION)
            ds = tl.dot(q, tl.trans(dk), ds, input_precision=PRECISION) * scale
            pds = (p * ds).to(dtype)  # r sums the rounded terms B multiplies: sum pds (v - O) stays exact
            r_sum = r_sum * alpha + tl.sum(pds.to(tl.float32), axis=1)
            pds_op = _operand(pds, UPCAST)
            acc_t = tl.dot(pds_op, v, acc_t * alpha[:, None], input_precision=PRECISION)
            acc_t = tl.dot(p_op, dv, acc_t, input_precision=PRECISION)
        m = m_new
    inv = 1.0 / l_sum  # every row has a term exp2(0) = 1
    o = acc_o * inv[:, None]
    rows_ok = (offs_m < T)[:, None]
    if z < ZP:
        tl.store(_rows(o_ptr, strides[6], zp, h, offs_m, HD), o.to(dtype), mask=rows_ok)
    if TANGENT:
        do = acc_t * inv[:, None] - (r_sum * inv)[:, None] * o
        tl.store(_rows(do_ptr, strides[7], z, h, offs_m, HD), do.to(dtype), mask=rows_ok)


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _precision(dtype: torch.dtype) -> str:
    """tl.dot precision: float32 inputs take TF32 tensor cores only where PyTorch's matmuls may
    (``torch.backends.cuda.matmul.allow_tf32``), else exact FMA products ("ieee"); 16-bit inputs
    ignore it. The interpreter computes in float32 throughout."""
    exact = _interpreted() or not torch.backends.cuda.matmul.allow_tf32
    return "ieee" if dtype == torch.float32 and exact else "tf32"


def kernel_supported(q: Tensor) -> bool:
    """Whether the kernel takes q's head_dim (a power of two in 16..128) and dtype. Exact float32
    at head_dim 16 is left out: Triton 3.9's LLVM aborts compiling it for sm_90 (its SLP
    vectoriser asserts), which would end the process rather than raise."""
    hd = q.shape[-1]
    shape_ok = 16 <= hd <= 128 and hd & (hd - 1) == 0 and q.dtype in KERNEL_DTYPES
    return shape_ok and not (hd < 32 and _precision(q.dtype) == "ieee" and not _interpreted())


def _unit_stride(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _out_like(x: Tensor, batch: int) -> Tensor:
    """[batch, H, T, hd] stored as [batch, T, H, hd]: the model's out.transpose(1, 2) is then free."""
    _, h, t, hd = x.shape
    return x.new_empty(batch, t, h, hd).transpose(1, 2)


def attention_jvp_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    tangents: Sequence[Tensor] | None,
    scale: float,
) -> tuple[Tensor, Tensor | None]:
    """(O, dO) of causal GQA attention by the Triton kernel (dO None without ``tangents``).

    q [B, H, T, hd], k, v [B, KVH, T, hd]; ``tangents`` (dq, dk, dv) shaped as q, k, v but with a
    batch n * B (tangent row z pairs with primal row z % B). Arguments as `attention_jvp` checks."""
    q, k, v = map(_unit_stride, (q, k, v))
    zp, h, t, hd = q.shape
    dq, dk, dv = map(_unit_stride, tangents) if tangents is not None else (q, k, v)
    z = dq.shape[0]
    if z * h > 65535:
        raise ValueError(f"tangent batch x heads {z} x {h} exceeds the kernel grid's 65,535")
    o = _out_like(q, zp)
    do = _out_like(q, z) if tangents is not None else o
    block_n = BLOCK_N if hd <= 64 else max(16, BLOCK_N // 2)  # two [BLOCK_M, hd] accumulators
    meta = dict(
        H=h, REP=h // k.shape[1], HD=hd, BLOCK_M=BLOCK_M, BLOCK_N=block_n, TANGENT=tangents is not None
    )
    meta |= dict(PRECISION=_precision(q.dtype), UPCAST=_interpreted() and q.dtype != torch.float32)
    strides = tuple(x.stride()[:3] for x in (q, k, v, dq, dk, dv, o, do))
    grid = (triton.cdiv(t, BLOCK_M), z * h)
    jvp_attention_kernel[grid](
        q, k, v, dq, dk, dv, o, do, strides, t, zp, scale, **meta, num_warps=NUM_WARPS, num_stages=NUM_STAGES
    )
    return o, (do if tangents is not None else None)


# ====================================================================== PyTorch reference
def attention_jvp_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dq: Tensor | None = None,
    dk: Tensor | None = None,
    dv: Tensor | None = None,
    scale: float | None = None,
    block: int = REFERENCE_BLOCK,
) -> tuple[Tensor, Tensor | None]:
    """(O, dO) of causal GQA attention in plain PyTorch (dO None without tangents): the kernel's
    math, computed ``block`` query rows at a time so at most [..., H, block, T] scores exist.

    q [..., H, T, hd], k, v [..., KVH, T, hd]; tangents shaped as their primals, or with leading
    dims that broadcast against them (K directions [K, B, ...] over primals [B, ...]: the softmax
    is computed once). Computes in float32 (float64 for float64 inputs), autocast off; returns
    q's dtype."""
    acc = torch.promote_types(q.dtype, torch.float32)
    kvh, t, hd = k.shape[-3:]
    c = hd**-0.5 if scale is None else scale
    tangent = dq is not None

    def grouped(x: Tensor, kv: bool) -> Tensor:  # [..., KVH, rep or 1, T, hd]
        return x.to(acc).unflatten(-3, (kvh, 1 if kv else x.shape[-3] // kvh))

    qg, kg, vg = grouped(q, False), grouped(k, True), grouped(v, True)
    if tangent:
        dqg, dkg, dvg = grouped(dq, False), grouped(dk, True), grouped(dv, True)
    outs, touts = [], []
    with torch.autocast(q.device.type, enabled=False):
        for s in range(0, t, block):
            e = min(s + block, t)
            qs, ks, vs = qg[..., s:e, :], kg[..., :e, :], vg[..., :e, :]
            visible = torch.arange(s, e, device=q.device)[:, None] >= torch.arange(e, device=q.device)
            p = (c * qs @ ks.mT).masked_fill(~visible, float("-inf")).softmax(dim=-1)  # [..., e - s, e]
            o = p @ vs
            outs.append(o)
            if tangent:
                ds = c * (dqg[..., s:e, :] @ ks.mT + qs @ dkg[..., :e, :].mT)
                pds = p * ds
                touts.append(pds @ vs + p @ dvg[..., :e, :] - pds.sum(dim=-1, keepdim=True) * o)

    def heads(parts: list[Tensor]) -> Tensor:
        return torch.cat(parts, dim=-2).flatten(-4, -3).to(q.dtype)

    return heads(outs), (heads(touts) if tangent else None)


# ====================================================================== the custom op
def _check(q: Tensor, k: Tensor, v: Tensor, dq: Tensor, dk: Tensor, dv: Tensor) -> None:
    """Raise ValueError naming the first argument `attention_jvp` cannot take."""
    for name, x in zip(("q", "k", "v", "dq", "dk", "dv"), (q, k, v, dq, dk, dv), strict=True):
        if x.dim() != 4:
            raise ValueError(f"{name} must be 4-d [batch, heads, T, head_dim], got {tuple(x.shape)}")
        if x.dtype != q.dtype or x.device != q.device:
            raise ValueError(f"{name} is {x.dtype} on {x.device}, q is {q.dtype} on {q.device}")
    b, h, t, hd = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[2:] != (t, hd):
        raise ValueError(
            f"k {tuple(k.shape)} and v {tuple(v.shape)} must be [{b}, kv_heads, {t}, {hd}] (q {tuple(q.shape)})"
        )
    if h % k.shape[1]:
        raise ValueError(f"q's {h} heads are not a multiple of k's {k.shape[1]} kv heads")
    n = dq.shape[0] // b
    for name, x, primal in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v)):
        if x.shape != (n * b, *primal.shape[1:]) or n == 0:
            raise ValueError(
                f"{name} {tuple(x.shape)} must be shaped as its primal {tuple(primal.shape)} "
                f"with a batch that is one multiple of {b} for all tangents"
            )


def _use_kernel(q: Tensor) -> bool:
    return (q.is_cuda or (CPU_KERNEL and q.device.type == "cpu")) and kernel_supported(q)


@torch.library.custom_op("mobilellm_r1::attention_jvp", mutates_args=())
def attention_jvp(
    q: Tensor, k: Tensor, v: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """(O [B, H, T, hd], dO [n * B, H, T, hd]) of causal GQA attention ``softmax(scale q k^T) v``
    and its JVP along (dq, dk, dv).

    q [B, H, T, hd], k, v [B, KVH, T, hd] (H a multiple of KVH); the tangents are shaped as their
    primals with batch n * B: tangent row z pairs with primal row z % B (n directions at once).
    The Triton kernel on CUDA (`kernel_supported` shapes and dtypes), else the reference."""
    _check(q, k, v, dq, dk, dv)
    if _use_kernel(q):
        return attention_jvp_triton(q, k, v, (dq, dk, dv), scale)  # type: ignore[return-value]
    b = q.shape[0]
    split = [x.unflatten(0, (-1, b)) for x in (dq, dk, dv)]  # [n, B, ...] broadcast over primals
    o, do = attention_jvp_reference(q, k, v, *split, scale=scale)
    return o, do.flatten(0, 1)


def _batch_first(x: Tensor, dim: int | None, n: int) -> Tensor:
    """x with its vmapped dim first ([n, ...]; an unbatched x is expanded, not copied)."""
    return x.movedim(dim, 0) if dim is not None else x.expand(n, *x.shape)


@attention_jvp.register_vmap
def _attention_jvp_vmap(info: Any, in_dims: tuple, q, k, v, dq, dk, dv, scale):
    """Fold the vmapped dim into the batch dim. Unbatched primals stay as they are (tangent row
    z pairs with primal row z % B); batched ones are folded too, tangents reordered to match."""
    n = info.batch_size
    tangents = [_batch_first(x, d, n) for x, d in zip((dq, dk, dv), in_dims[3:6], strict=True)]
    if all(d is None for d in in_dims[:3]):
        o, do = attention_jvp(q, k, v, *(x.flatten(0, 1) for x in tangents), scale)
        return (o, do.unflatten(0, (n, -1))), (None, 0)
    primals = [_batch_first(x, d, n) for x, d in zip((q, k, v), in_dims[:3], strict=True)]
    b = primals[0].shape[1]
    # [n, m * B, ...] -> [m, n, B, ...] -> [m * n * B]: row z pairs with folded primal row z % (n * B)
    folded = [x.unflatten(1, (-1, b)).transpose(0, 1).flatten(0, 2) for x in tangents]
    o, do = attention_jvp(*(x.flatten(0, 1) for x in primals), *folded, scale)
    do = do.unflatten(0, (-1, n, b)).transpose(0, 1).flatten(1, 2)
    return (o.unflatten(0, (n, b)), do), (0, 0)


# ====================================================================== autograd.Function
def attention_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """O of causal GQA attention (the kernel without its tangent part, or the reference)."""
    if _use_kernel(q):
        return attention_jvp_triton(q, k, v, None, scale)[0]
    return attention_jvp_reference(q, k, v, scale=scale)[0]


class JvpAttention(torch.autograd.Function):
    """Causal GQA attention with an exact forward-mode rule: ``apply(q, k, v, scale)`` -> O;
    ``torch.func.jvp`` (also under ``vmap``) gets dO from `attention_jvp`. No backward."""

    @staticmethod
    def forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        return attention_forward(q, k, v, scale)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        q, k, v, scale = inputs
        ctx.save_for_forward(q, k, v)
        ctx.scale = scale

    @staticmethod
    def jvp(ctx: Any, dq: Tensor | None, dk: Tensor | None, dv: Tensor | None, _: None) -> Tensor:
        q, k, v = ctx.saved_tensors
        dq, dk, dv = (
            torch.zeros_like(p) if d is None else d for p, d in zip((q, k, v), (dq, dk, dv), strict=True)
        )
        return attention_jvp(q, k, v, dq, dk, dv, ctx.scale)[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> None:
        raise RuntimeError(
            "JvpAttention has a forward-mode (jvp) rule only: run backward passes outside jvp_sdpa()"
        )

    @staticmethod
    def vmap(info: Any, in_dims: tuple, q: Tensor, k: Tensor, v: Tensor, scale: float):
        """Batched primals: fold the vmapped dim into the batch dim (unbatched ones expanded)."""
        n = info.batch_size
        folded = [_batch_first(x, d, n).flatten(0, 1) for x, d in zip((q, k, v), in_dims[:3], strict=True)]
        return JvpAttention.apply(*folded, scale).unflatten(0, (n, -1)), 0


# ====================================================================== routing SDPA calls
def _routable(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> tuple[Tensor, Tensor, Tensor, float] | None:
    """(q, k, v, scale) for JvpAttention when the SDPA call is causal self-attention over
    [B, heads, T, hd] with no mask and no dropout, else None. Inputs are cast as autocast would
    cast them for SDPA (autocast acts below torch-function modes)."""
    if attn_mask is not None or dropout_p != 0.0 or not is_causal:
        return None
    if any(x.dim() != 4 or not x.is_floating_point() for x in (query, key, value)):
        return None
    (b, h, t, hd), kvh = query.shape, key.shape[1]
    if key.shape != value.shape or key.shape != (b, kvh, t, hd) or h % kvh or (h != kvh and not enable_gqa):
        return None
    device = query.device.type
    if torch.is_autocast_enabled(device):
        low = torch.get_autocast_dtype(device)
        query, key, value = (x if x.dtype == torch.float64 else x.to(low) for x in (query, key, value))
    if len({query.dtype, key.dtype, value.dtype}) != 1:
        return None
    return query, key, value, hd**-0.5 if scale is None else float(scale)


class JvpSdpaMode(TorchFunctionMode):
    """Routes routable `F.scaled_dot_product_attention` calls to `JvpAttention`; counts them
    (``routed``) and the calls passed through unchanged (``passed``)."""

    def __init__(self) -> None:
        super().__init__()
        self.routed = self.passed = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            call = _routable(*args, **kwargs)
            if call is not None:
                self.routed += 1
                return JvpAttention.apply(*call)
            self.passed += 1
        return func(*args, **kwargs)


def jvp_sdpa() -> JvpSdpaMode:
    """Context manager: while active, causal unmasked SDPA calls take `JvpAttention` (exact
    forward-mode rule, flash-style kernel on CUDA); masked, non-causal, dropout or cross-length
    calls go to PyTorch's SDPA unchanged. ``with jvp_sdpa() as mode:`` exposes the counts."""
    return JvpSdpaMode()
