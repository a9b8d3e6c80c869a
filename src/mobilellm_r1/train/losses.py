"""Chunked LM-head objectives that never build the full `[tokens, vocab]` logits.

With a 128,256-entry vocabulary the logits of a 16 x 2048 micro-batch are 16 GB in float32
(and as much again for their gradient). Every loss here takes the final hidden states
`hidden [N, d]` and the LM-head weight `weight [V, d]` instead, and walks the tokens in chunks
of `chunk_size` rows. For each chunk, one `torch.autograd.Function` forward pass

1. computes `logits = hidden_chunk @ weight.T` [n, V] in the *compute dtype* (the autocast
   dtype when autocast is on for the device, e.g. bf16; otherwise the inputs' promoted dtype),
2. converts the logits to float32 (float64 when the compute dtype is float64) for everything
   softmax-related: log-sum-exp, log-softmax, the loss and its gradient w.r.t. the logits,
3. casts that gradient back to the compute dtype and multiplies it out at once:
   `grad_hidden[chunk] = dlogits @ weight` ([n, d], stored in hidden's dtype) and
   `grad_weight += dlogits.T @ hidden_chunk` ([V, d], each chunk's product is a compute-dtype
   matmul, summed across chunks in float32, or in weight's dtype if that is wider).

So only one chunk's logits live at a time (peak extra memory measured on an H100: about 2.5
float32 `[chunk, V]` buffers for cross-entropy, about 4 for distillation), and backward merely scales the stored gradients by the incoming scalar `grad_output`. The loss is a
float32 scalar. Double backward is not supported. With `fused=True` (cross-entropy and
distillation; what the trainer uses under `compile: true`) steps 2-3 run as `torch.compile`d
reductions and one pointwise pass that reads the compute-dtype logits and writes their gradient
in that dtype, with float32 math in registers: no float32 `[chunk, V]` buffer at all (1.8x the
140M training step speed on an H100).

Reductions: "mean" divides by the number of tokens that count (labels != ignore_index, or
`mask`), and is 0 with zero gradients when none count; "sum" adds the per-token losses. For a
global mean over gradient-accumulation micro-batches, use "sum" and scale by one over the total
count (countable from the labels before any forward), or read `LossStats` via `return_stats`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

IGNORE_INDEX = -100
CE_CHUNK = 4096
KD_CHUNK = 2048  # distillation holds ~2 more float32 [chunk, V] buffers (the teacher's)

TeacherFn = Callable[[int, int], Tensor]
"""`teacher(start, stop) -> teacher logits [stop - start, V]` for tokens start..stop-1."""

ChunkFn = Callable[[int, int, Tensor, bool], "tuple[Tensor, Tensor | None]"]
"""`fn(start, stop, logits [n, V], need_grad) -> (weighted loss (0-dim), dloss/dlogits [n, V])`.

May overwrite `logits`; returns a float32 (or wider) loss and a float32 or compute-dtype
gradient (None if not needed).
"""


class LossStats(NamedTuple):
    """Per-call totals for accumulating a global mean across micro-batches (no host sync)."""

    loss_sum: Tensor  # 0-dim, detached: sum of the per-token losses (before reduction)
    count: Tensor  # 0-dim int64: number of tokens that count


# --------------------------------------------------------------------------- core


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax / accumulation dtype: float32, or float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The matmul dtype: autocast's for the device if enabled (and inputs are <= fp32)."""
    device = hidden.device.type
    low = (torch.float32, torch.float16, torch.bfloat16)
    if torch.is_autocast_enabled(device) and hidden.dtype in low and weight.dtype in low:
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _forward_chunks(
    hidden: Tensor,
    weight: Tensor,
    fn: ChunkFn,
    chunk_size: int,
    cdtype: torch.dtype,
    need_h: bool,
    need_w: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Loss (0-dim) and grads w.r.t. hidden [N, d] / weight [V, d] (None where not needed)."""
    w = weight.to(cdtype)
    loss = torch.zeros((), dtype=_acc_dtype(cdtype), device=hidden.device)
    grad_h = torch.empty_like(hidden) if need_h else None
    grad_w = (
        torch.zeros(weight.shape, dtype=_acc_dtype(weight.dtype), device=weight.device) if need_w else None
    )
    for start in range(0, hidden.shape[0], chunk_size):
        stop = min(start + chunk_size, hidden.shape[0])
        h = hidden[start:stop].to(cdtype)
        part, dlogits = fn(start, stop, h @ w.T, need_h or need_w)
        loss += part
        if dlogits is None:
            continue
        dl = dlogits.to(cdtype)
        del dlogits
        if grad_h is not None:
            grad_h[start:stop] = dl @ w
        if grad_w is not None:
            if grad_w.dtype == cdtype:
                grad_w.addmm_(dl.T, h)
            else:
                grad_w += dl.T @ h
    return loss, grad_h, grad_w


class _ChunkedHeadLoss(torch.autograd.Function):
    """loss = sum over chunks of fn(hidden_chunk @ weight.T); grads computed in forward."""

    @staticmethod
    def forward(
        ctx, hidden, weight, fn: ChunkFn, chunk_size: int, cdtype: torch.dtype, need_h: bool, need_w: bool
    ):
        with torch.autocast(hidden.device.type, enabled=False):  # matmul dtype is `cdtype`, explicitly
            loss, grad_h, grad_w = _forward_chunks(hidden, weight, fn, chunk_size, cdtype, need_h, need_w)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (
            _scaled(grad_h, grad_out, h_dtype),
            _scaled(grad_w, grad_out, w_dtype),
            None,
            None,
            None,
            None,
            None,
        )


def _scaled(grad: Tensor | None, grad_out: Tensor, dtype: torch.dtype) -> Tensor | None:
    """grad * grad_out (scalar), computed in the wider of their dtypes, returned as `dtype`."""
    if grad is None:
        return None
    return (grad.to(torch.promote_types(grad.dtype, grad_out.dtype)) * grad_out).to(dtype)


def _apply(hidden: Tensor, weight: Tensor, fn: ChunkFn, chunk_size: int) -> Tensor:
    """Run `fn` over the chunks; gradients only for inputs that need them."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"need hidden [N, d] and weight [V, d], got {tuple(hidden.shape)}, {tuple(weight.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    grad = torch.is_grad_enabled()
    need_h, need_w = grad and hidden.requires_grad, grad and weight.requires_grad
    cdtype = compute_dtype(hidden, weight)
    return _ChunkedHeadLoss.apply(hidden, weight, fn, chunk_size, cdtype, need_h, need_w)


def _token_weights(keep: Tensor, reduction: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Per-token reduction weights [N] (1/count or 1 where kept, else 0) and the count (0-dim)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    count = keep.sum()
    weights = keep.to(dtype)
    if reduction == "mean":
        weights = weights / count.clamp_min(1).to(dtype)
    return weights, count


def _finish(
    loss: Tensor, count: Tensor, reduction: str, return_stats: bool
) -> Tensor | tuple[Tensor, LossStats]:
    """Attach `LossStats` if asked for."""
    if not return_stats:
        return loss
    total = loss.detach() * count if reduction == "mean" else loss.detach()
    return loss, LossStats(total, count)


# --------------------------------------------------------------------------- per-chunk objectives


def _scaled_log_softmax(x: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    """log_softmax(x / T) [n, V] in `dtype`, in one new buffer (x is left untouched)."""
    z = x.to(dtype, copy=True).div_(temperature)
    return z.sub_(torch.logsumexp(z, dim=-1, keepdim=True))


def cross_entropy_rows(logits: Tensor, y: Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """Per-row cross-entropy [n] and its gradient in the logits, softmax - onehot(y) [n, V], both in
    the accumulation dtype (float32, or float64); rows whose target is `ignore_index` get loss 0 and
    the softmax alone as gradient (callers weight them out). Written out of place for
    `torch.compile`, which fuses it into a log-sum-exp reduction and one pointwise pass."""
    z = logits.to(_acc_dtype(logits.dtype))  # [n, V]
    valid = y != ignore_index
    safe = torch.where(valid, y, 0)[:, None]  # [n, 1]
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # [n, 1]
    per_token = torch.where(valid, (lse - z.gather(1, safe)).squeeze(1), 0.0)
    target = (torch.arange(z.shape[1], device=z.device) == safe) & valid[:, None]  # one-hot [n, V]
    return per_token, torch.exp(z - lse) - target.to(z.dtype)


def _ce_chunk(
    logits: Tensor, y: Tensor, w: Tensor, ignore_index: int, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """One weighted cross-entropy chunk for `torch.compile` (`cross_entropy_rows`): it reads the
    compute-dtype logits [n, V] and writes the gradient in the same dtype (the eager `_ce_fn` makes
    ~7 float32 passes instead); without `need_grad` the gradient is traced away."""
    per_token, grad = cross_entropy_rows(logits, y, ignore_index)
    loss = (per_token * w).sum()
    if not need_grad:
        return loss, None
    return loss, (grad * w[:, None]).to(logits.dtype)


CHUNK_COMPILE_OPTIONS: dict = {"dynamic": True}  # `torch.compile` options of the fused chunks


def set_chunk_compile_options(**options) -> None:
    """`torch.compile` options of the fused chunk functions (none given: dynamic shapes, the
    default); chunks compiled before are compiled again on next use."""
    CHUNK_COMPILE_OPTIONS.clear()
    CHUNK_COMPILE_OPTIONS.update(options or {"dynamic": True})
    _compiled.cache_clear()


@functools.cache
def _compiled(chunk_fn: Callable) -> Callable:
    """`torch.compile` of a chunk function, made on first use (importing dynamo costs ~1 s)."""
    return torch.compile(chunk_fn, **CHUNK_COMPILE_OPTIONS)


def _ce_fn(labels: Tensor, weights: Tensor, ignore_index: int, fused: bool = False) -> ChunkFn:
    """Cross-entropy chunk: loss_i = lse_i - z_i[y_i]; dloss/dz_i = softmax(z_i) - onehot(y_i).

    `fused`: the `torch.compile`d `_ce_chunk` (GPU training); else in place, eager, lean."""
    if fused:
        return lambda start, stop, logits, need_grad: _compiled(_ce_chunk)(
            logits, labels[start:stop], weights[start:stop], ignore_index, need_grad
        )

    def fn(start: int, stop: int, logits: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        z = logits.to(_acc_dtype(logits.dtype))  # may alias logits (then overwritten in place)
        del logits
        y, w = labels[start:stop], weights[start:stop].to(z.dtype)
        valid = y != ignore_index
        safe = torch.where(valid, y, 0)[:, None]  # [n, 1]
        lse = torch.logsumexp(z, dim=-1)  # [n]
        per_token = torch.where(valid, lse - z.gather(1, safe).squeeze(1), 0.0)
        loss = (per_token * w).sum()
        if not need_grad:
            return loss, None
        grad = z.sub_(lse[:, None]).exp_()  # softmax, in place
        grad.scatter_add_(1, safe, -valid.to(z.dtype)[:, None])
        return loss, grad.mul_(w[:, None])

    return fn


def _check_teacher(teacher_logits: Tensor, logits: Tensor, start: int, stop: int) -> None:
    if teacher_logits.shape != logits.shape:
        raise ValueError(
            f"teacher logits for [{start}, {stop}) have shape {tuple(teacher_logits.shape)}, "
            f"expected {tuple(logits.shape)}"
        )


def _kl_chunk(
    logits: Tensor, teacher_logits: Tensor, w: Tensor, t: float, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """One distillation chunk written out of place for `torch.compile` (cf. `_ce_chunk`): the two
    log-sum-exps and the KL sum as reductions, the gradient T (p_s - p_t) w in one pointwise pass
    in logits' dtype."""
    acc = _acc_dtype(logits.dtype)
    s, u = logits.to(acc) / t, teacher_logits.to(acc) / t  # [n, V]
    log_ps = s - torch.logsumexp(s, dim=-1, keepdim=True)
    log_pt = u - torch.logsumexp(u, dim=-1, keepdim=True)
    p_t = log_pt.exp()
    diff = log_pt.clamp(min=torch.finfo(acc).min) - log_ps  # -inf teacher log-probs: 0 * finite
    loss = ((p_t * diff).sum(-1) * w).sum() * (t * t)
    if not need_grad:
        return loss, None
    return loss, ((log_ps.exp() - p_t) * (w * t)[:, None]).to(logits.dtype)


def _kl_fn(teacher: TeacherFn, weights: Tensor, temperature: float, fused: bool = False) -> ChunkFn:
    """Distillation chunk: T^2 * KL(p_t || p_s) per token; dloss/ds = T * (p_s - p_t).

    `fused`: the `torch.compile`d `_kl_chunk`; else eager, in place."""
    t = float(temperature)

    def fused_fn(start: int, stop: int, logits: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        teacher_logits = teacher(start, stop).detach()
        _check_teacher(teacher_logits, logits, start, stop)
        w = weights[start:stop].to(_acc_dtype(logits.dtype))
        return _compiled(_kl_chunk)(logits, teacher_logits, w, t, need_grad)

    if fused:
        return fused_fn

    def fn(start: int, stop: int, logits: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        acc = _acc_dtype(logits.dtype)
        log_ps = _scaled_log_softmax(logits, t, acc)  # a copy: `logits` kept intact
        del logits
        teacher_logits = teacher(start, stop)
        _check_teacher(teacher_logits, log_ps, start, stop)
        log_pt = _scaled_log_softmax(teacher_logits.detach(), t, acc)
        del teacher_logits
        p_t = log_pt.exp()
        # -inf teacher log-probs (p_t = 0) would give 0 * -inf: clamp so those terms are exactly 0.
        diff = log_pt.clamp_(min=torch.finfo(acc).min).sub_(log_ps)  # log p_t - log p_s, in place
        w = weights[start:stop].to(acc)
        loss = (diff.mul_(p_t).sum(-1) * w).sum() * (t * t)
        if not need_grad:
            return loss, None
        return loss, log_ps.exp_().sub_(p_t).mul_((w * t)[:, None])

    return fn


def _topk_fn(ids: Tensor, logprobs: Tensor, keep: Tensor, weights: Tensor, temperature: float) -> ChunkFn:
    """Top-k chunk: T^2 * sum_j q_j (log q_j - log p_s[id_j]); dloss/ds = T * (p_s - scatter(q))."""
    t = float(temperature)

    def fn(start: int, stop: int, logits: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        acc = _acc_dtype(logits.dtype)
        log_ps = _scaled_log_softmax(logits, t, acc)
        del logits
        idx = ids[start:stop]
        lp = torch.where(keep[start:stop, None], logprobs[start:stop].to(acc), 0.0)  # ignored rows: finite
        log_q = lp - torch.logsumexp(lp, dim=-1, keepdim=True)  # renormalised over the top-k [n, k]
        q = log_q.exp()
        neg_entropy = torch.where(q > 0, q * log_q, 0.0).sum(-1)
        cross = (q * log_ps.gather(1, idx)).sum(-1)
        w = weights[start:stop].to(acc)
        loss = ((neg_entropy - cross) * w).sum() * (t * t)
        if not need_grad:
            return loss, None
        grad = log_ps.exp_().scatter_add_(1, idx, -q)
        return loss, grad.mul_((w * t)[:, None])

    return fn


def _both(first: ChunkFn, second: ChunkFn) -> ChunkFn:
    """Sum of two objectives on the same logits (`first` must not overwrite them)."""

    def fn(start: int, stop: int, logits: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        loss_a, grad_a = first(start, stop, logits, need_grad)
        loss_b, grad_b = second(start, stop, logits, need_grad)
        return loss_a + loss_b, None if grad_a is None else grad_a.add_(grad_b)

    return fn


def _as_teacher_fn(teacher: Tensor | TeacherFn) -> TeacherFn:
    """A tensor [N, V] becomes `lambda start, stop: teacher[start:stop]`."""
    if isinstance(teacher, Tensor):
        return lambda start, stop: teacher[start:stop]
    return teacher


def _mask_or_all(mask: Tensor | None, hidden: Tensor) -> Tensor:
    """Boolean keep-mask [N] (all True when None)."""
    if mask is None:
        return torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    if mask.shape != hidden.shape[:1]:
        raise ValueError(f"mask must be [N={hidden.shape[0]}], got {tuple(mask.shape)}")
    return mask.bool()


def _label_weights(
    hidden: Tensor, weight: Tensor, labels: Tensor, reduction: str, ignore_index: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(keep [N], reduction weights [N], count) of the tokens whose label is not `ignore_index`."""
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels must be [N={hidden.shape[0]}], got {tuple(labels.shape)}")
    keep = labels != ignore_index
    return keep, *_token_weights(keep, reduction, _acc_dtype(compute_dtype(hidden, weight)))


def _with_ce(
    fn: ChunkFn, labels: Tensor, weights: Tensor, alpha_ce: float, ignore_index: int, fused: bool = False
) -> ChunkFn:
    """`fn` plus alpha_ce x cross-entropy on the same logits (just `fn` when alpha_ce is 0)."""
    return _both(fn, _ce_fn(labels, weights * alpha_ce, ignore_index, fused)) if alpha_ce != 0.0 else fn


def _check_topk(hidden: Tensor, topk_ids: Tensor, topk_logprobs: Tensor) -> None:
    """topk_ids and topk_logprobs must both be [N, k] for hidden [N, d]."""
    if topk_ids.dim() != 2 or topk_ids.shape != topk_logprobs.shape or topk_ids.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"topk_ids / topk_logprobs must both be [N={hidden.shape[0]}, k], got "
            f"{tuple(topk_ids.shape)}, {tuple(topk_logprobs.shape)}"
        )


# --------------------------------------------------------------------------- public API


def chunked_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    chunk_size: int = CE_CHUNK,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
    return_stats: bool = False,
    fused: bool = False,
) -> Tensor | tuple[Tensor, LossStats]:
    """Cross-entropy of `hidden @ weight.T` against `labels`, never materialising all logits.

    hidden [N, d], weight [V, d] (the LM head; tied embeddings are fine), labels [N] long with
    `ignore_index` for tokens that do not count. Equals
    `F.cross_entropy(hidden @ weight.T, labels, ignore_index=..., reduction=...)` (mean over
    counted tokens; 0 with zero grads when none count). Returns a float32 0-dim loss, and with
    `return_stats` also `LossStats(loss_sum, count)`. `fused` runs each chunk's softmax and
    gradient as `torch.compile`d kernels (same values within float32 rounding; compiles once).
    """
    _, weights, count = _label_weights(hidden, weight, labels, reduction, ignore_index)
    loss = _apply(hidden, weight, _ce_fn(labels, weights, ignore_index, fused), chunk_size)
    return _finish(loss, count, reduction, return_stats)


def chunked_kl_distill(
    hidden: Tensor,
    weight: Tensor,
    teacher_logits: Tensor | TeacherFn,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    chunk_size: int = KD_CHUNK,
    reduction: str = "mean",
    return_stats: bool = False,
    fused: bool = False,
) -> Tensor | tuple[Tensor, LossStats]:
    """Logit distillation, T^2 * KL(p_t || p_s), chunked like `chunked_cross_entropy`.

    Per token i: p_s = softmax(s_i / T) with s_i = hidden_i @ weight.T, p_t = softmax(t_i / T),
    loss_i = T^2 * sum_v p_t(v) * (log p_t(v) - log p_s(v)). The T^2 factor (Hinton et al.) keeps
    the gradient scale independent of T: dloss_i/ds_i = T * (p_s - p_t). Tokens with mask False
    contribute nothing; "mean" divides by the number of masked-in tokens.

    teacher_logits: a tensor [N, V] (any float dtype; sliced per chunk) or a callable
    `teacher(start, stop) -> [stop - start, V]` (e.g. running the teacher's head on its hidden
    states per chunk). They are detached, and must be finite except for -inf (p_t = 0), also on
    masked-out rows. Both log-softmaxes are float32. `fused`: compiled chunks, as for
    `chunked_cross_entropy`.
    """
    keep = _mask_or_all(mask, hidden)
    weights, count = _token_weights(keep, reduction, _acc_dtype(compute_dtype(hidden, weight)))
    fn = _kl_fn(_as_teacher_fn(teacher_logits), weights, temperature, fused)
    loss = _apply(hidden, weight, fn, chunk_size)
    return _finish(loss, count, reduction, return_stats)


def kd_loss(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    teacher_logits: Tensor | TeacherFn,
    *,
    alpha_ce: float = 0.0,
    temperature: float = 1.0,
    chunk_size: int = KD_CHUNK,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
    return_stats: bool = False,
    fused: bool = False,
) -> Tensor | tuple[Tensor, LossStats]:
    """(1 - alpha_ce) * T^2 KL(p_t || p_s) + alpha_ce * CE(labels), from one pass over the logits.

    Tokens count where `labels != ignore_index`, for both terms (the KL ignores the label value).
    alpha_ce = 0 (the default) is the paper's pure-KL mid-training objective; the CE term is at
    temperature 1. Arguments as for `chunked_kl_distill` / `chunked_cross_entropy`.
    """
    _, weights, count = _label_weights(hidden, weight, labels, reduction, ignore_index)
    fn = _kl_fn(_as_teacher_fn(teacher_logits), weights * (1.0 - alpha_ce), temperature, fused)
    fn = _with_ce(fn, labels, weights, alpha_ce, ignore_index, fused)
    return _finish(_apply(hidden, weight, fn, chunk_size), count, reduction, return_stats)


def topk_kl_distill(
    hidden: Tensor,
    weight: Tensor,
    topk_ids: Tensor,
    topk_logprobs: Tensor,
    *,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    chunk_size: int = KD_CHUNK,
    reduction: str = "mean",
    return_stats: bool = False,
) -> Tensor | tuple[Tensor, LossStats]:
    """Offline distillation from stored teacher top-k log-probs: KL on the top-k support.

    topk_ids [N, k] long: the teacher's k most likely tokens per position (distinct);
    topk_logprobs [N, k]: the teacher's log-probs of those tokens at temperature T, taken from
    its *full* softmax (so their exp sums to the top-k mass m_i <= 1; -inf entries are allowed).

    Approximation. The teacher is truncated to its top-k S and renormalised,
    q(v) = p_t(v) / m for v in S; the student keeps its full-vocabulary log-softmax
    log p_s = log_softmax(s / T), gathered at S. Per token
        loss = T^2 * sum_{v in S} q(v) * (log q(v) - log p_s(v))
             = T^2 * (H(q, p_s restricted to S) - H(q)),
    i.e. cross-entropy against the renormalised truncated teacher minus its entropy; it is >= 0
    (as p_s sums to <= 1 on S) and its gradient is T * (p_s - q) with q scattered into [V].
    Relation to the exact loss T^2 * KL(p_t || p_s): with eps = 1 - m and the tail term
    R = sum_{v not in S} p_t(v) log(p_t(v) / p_s(v)), per token (dropping the T^2)
        KL = m * loss + m * log m + R,   0 <= -m log m <= eps,
    so the two are equal when the top-k mass is 1 (eps = 0, e.g. k = V), and
    |KL - loss| <= eps * (loss + 1) + |R|, where |R| <= eps * max_{v not in S} |log(p_t(v) / p_s(v))|.
    The error is thus controlled by the missing mass eps, times the student's and teacher's
    log-ratio on the tail (the tail itself is not seen: the gradient pushes the student's tail
    mass towards 0 instead of towards the teacher's eps).
    """
    _check_topk(hidden, topk_ids, topk_logprobs)
    keep = _mask_or_all(mask, hidden)
    weights, count = _token_weights(keep, reduction, _acc_dtype(compute_dtype(hidden, weight)))
    fn = _topk_fn(topk_ids.long(), topk_logprobs.detach(), keep, weights, temperature)
    return _finish(_apply(hidden, weight, fn, chunk_size), count, reduction, return_stats)


def topk_kd_loss(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    topk_ids: Tensor,
    topk_logprobs: Tensor,
    *,
    alpha_ce: float = 0.0,
    temperature: float = 1.0,
    chunk_size: int = KD_CHUNK,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
    return_stats: bool = False,
) -> Tensor | tuple[Tensor, LossStats]:
    """`kd_loss` with stored teacher top-k: (1 - alpha_ce) * `topk_kl_distill` + alpha_ce * CE.

    One pass over the logits; tokens count where `labels != ignore_index`, for both terms.
    The top-k term's approximation of the full KL is stated in `topk_kl_distill`.
    """
    keep, weights, count = _label_weights(hidden, weight, labels, reduction, ignore_index)
    _check_topk(hidden, topk_ids, topk_logprobs)
    fn = _topk_fn(topk_ids.long(), topk_logprobs.detach(), keep, weights * (1.0 - alpha_ce), temperature)
    fn = _with_ce(fn, labels, weights, alpha_ce, ignore_index)
    return _finish(_apply(hidden, weight, fn, chunk_size), count, reduction, return_stats)
