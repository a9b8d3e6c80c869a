"""Exact forward-mode (JVP) LM-head cross-entropy for influence scoring, without tangent logits.

Influence scores are JVPs of per-sample losses (`influence.jvp_scores`). Through
``F.cross_entropy`` of ``F.linear`` logits, PyTorch's forward-mode rules form the tangent logits
dz = dh W^T + h dW^T, [N, V] like the logits, and run several float32 passes over both. Per
position, with p = softmax(z), target y and g = p - onehot(y) (the loss's gradient in the logits):

    ce = lse(z) - z_y,   d ce = g . dz = dh . (g W) + h . (g dW)

so the tangent needs g and two [N, V] x [V, D] matrix products, g W and g dW; dz is never formed.
Under ``vmap`` over query directions (one dW per query) g and g W are computed once, g dW per query.

The forward computes the logits once and `ce_rows` turns them into ce [N] and g [N, V] in the
logits' dtype (bf16 under autocast). On CUDA `ce_rows` runs `torch.compile`d: one log-sum-exp
reduction and one pointwise pass over the half-precision logits instead of the ~8 eager float32
passes an earlier form of this rule made per chunk (at 1.7 ms each for an 8,192-token chunk of a
128k vocabulary on an H100: benchmarks/results/influence_jvp_140m_2026-12-06.json). `ce_rows` is a
custom op because `torch.compile` is skipped inside functorch transforms; an op is opaque to them.

`LinearCrossEntropy.apply(hidden [N, D], weight [V, D], targets [N])` -> (ce [N], g [N, V]); rows
whose target is ``ignore_index`` get ce 0 and tangent 0; g carries no tangent. Forward mode
only (no backward).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.model import upcast
from ..train.losses import IGNORE_INDEX, cross_entropy_rows


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-row dot products of [N, D] tensors, at least in float32: [N]."""
    return (upcast(a) * upcast(b)).sum(-1)


def ce_rows_eager(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row cross-entropy [N] (at least float32) and g = softmax - onehot(target) [N, V] in the
    logits' dtype (for ignored rows the softmax alone: the tangent rule zeroes those rows). Lean in
    eager mode: two passes after the log-sum-exp, the target picks scattered in place."""
    z = upcast(logits)  # [N, V]; may alias logits (not written)
    valid = targets != IGNORE_INDEX
    safe = torch.where(valid, targets, 0)[:, None]  # [N, 1]
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # [N, 1]
    ce = torch.where(valid, (lse - z.gather(1, safe)).squeeze(1), 0.0)
    g = (z - lse).exp_()  # softmax, a new buffer
    g.scatter_add_(1, safe, -valid.to(g.dtype)[:, None])
    return ce, g.to(logits.dtype)


def ce_rows_fusable(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """`ce_rows_eager` as the training loss's out-of-place form (`losses.cross_entropy_rows`), which
    `torch.compile` fuses into one reduction and one pointwise pass over the logits."""
    ce, g = cross_entropy_rows(logits, targets)
    return ce, g.to(logits.dtype)


@functools.cache
def _compiled_ce_rows() -> Any:
    return torch.compile(ce_rows_fusable, dynamic=True)


@torch.library.custom_op("mobilellm_r1::ce_rows", mutates_args=())
def ce_rows(logits: Tensor, targets: Tensor, compiled: bool) -> tuple[Tensor, Tensor]:
    """Per-row loss and g (`ce_rows_eager`); `compiled`: `ce_rows_fusable` through `torch.compile`."""
    return (_compiled_ce_rows() if compiled else ce_rows_eager)(logits, targets)


@ce_rows.register_fake
def _ce_rows_fake(logits: Tensor, targets: Tensor, compiled: bool) -> tuple[Tensor, Tensor]:
    return logits.new_empty(logits.shape[0], dtype=upcast(logits).dtype), torch.empty_like(logits)


class LinearCrossEntropy(torch.autograd.Function):
    """Per-position cross-entropy of ``hidden @ weight^T`` with an exact forward-mode rule that never
    forms the tangent logits (module docstring). ``torch.func.jvp`` (also under ``vmap``) uses it.
    `compiled`: `ce_rows` through `torch.compile` (default: on CUDA)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        hidden: Tensor, weight: Tensor, targets: Tensor, compiled: bool | None = None
    ) -> tuple[Tensor, Tensor]:
        logits = F.linear(hidden, weight)  # [N, V]
        return ce_rows(logits, targets, logits.is_cuda if compiled is None else compiled)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        hidden, weight, targets = inputs[:3]
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_forward(hidden, weight, targets, output[1])

    @staticmethod
    def jvp(ctx: Any, d_hidden: Tensor | None, d_weight: Tensor | None, *_: None) -> tuple[Tensor, None]:
        hidden, weight, targets, g = ctx.saved_tensors
        d_ce = torch.zeros(hidden.shape[0], dtype=upcast(hidden).dtype, device=hidden.device)
        if d_hidden is not None:
            d_ce = d_ce + _rowdot(d_hidden, g @ weight.to(g.dtype))  # dh . (g W)
        if d_weight is not None:
            d_ce = d_ce + _rowdot(hidden, g @ d_weight.to(g.dtype))  # h . (g dW)
        return torch.where(targets != IGNORE_INDEX, d_ce, 0.0), None

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> None:
        raise RuntimeError("LinearCrossEntropy has a forward-mode (jvp) rule only")
