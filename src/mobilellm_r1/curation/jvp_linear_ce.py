"""Exact forward-mode (JVP) LM-head cross-entropy for influence scoring, without tangent logits.

Influence scores are JVPs of per-sample losses (`influence.jvp_scores`). Through
``F.cross_entropy`` of ``F.linear`` logits, PyTorch's forward-mode rules form the tangent logits
dz = dh W^T + h dW^T, [N, V] like the logits, and run several float32 passes over both (upcast,
log-softmax, its tangent, the pick): on a 140M model with a 128k vocabulary those passes, not the
matrix products, were the top kernels of a scoring pass (benchmarks/results/
influence_jvp_profile_h100_140m_2026-12-05.json). Per position, with p = softmax(z) and target y:

    ce = lse(z) - z_y,   d lse = sum_v p_v dz_v = dh . (p W) + h . (p dW),   d ce = d lse - dz_y
    dz_y = dh . w_y + h . dw_y

so the tangent needs p (the forward's logits, one pass) and two [N, V] x [V, D] matrix products,
p W and p dW; dz itself is never formed. Under ``vmap`` over query directions (one dW per
query) p and p W are computed once and p dW per query.

`LinearCrossEntropy.apply(hidden [N, D], weight [V, D], targets [N])` -> (ce [N], lse [N]); rows
whose target is ``ignore_index`` get ce 0 and tangent 0. Forward mode only (no backward).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..train.losses import IGNORE_INDEX


def _wide(x: Tensor) -> Tensor:
    """Half precision upcast to float32 (float32 and float64 stay)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-row dot products of [N, D] tensors, at least in float32: [N]."""
    return (_wide(a) * _wide(b)).sum(-1)


class LinearCrossEntropy(torch.autograd.Function):
    """Per-position cross-entropy of ``hidden @ weight^T`` with an exact forward-mode rule that never
    forms the tangent logits (module docstring). ``torch.func.jvp`` (also under ``vmap``) uses it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(hidden: Tensor, weight: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        logits = _wide(F.linear(hidden, weight))  # [N, V]
        lse = torch.logsumexp(logits, dim=-1)
        valid = targets != IGNORE_INDEX
        picked = logits.gather(-1, targets.clamp(min=0)[:, None])[:, 0]
        return torch.where(valid, lse - picked, 0.0), lse

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        hidden, weight, targets = inputs
        ctx.save_for_forward(hidden, weight, targets, output[1])

    @staticmethod
    def jvp(ctx: Any, d_hidden: Tensor | None, d_weight: Tensor | None, _: None) -> tuple[Tensor, Tensor]:
        hidden, weight, targets, lse = ctx.saved_tensors
        valid = targets != IGNORE_INDEX
        rows = targets.clamp(min=0)
        # the logits again: forward mode saves only a Function's inputs and outputs, and the logits
        # as an output would need the very tangent this rule avoids
        p = (_wide(F.linear(hidden, weight)) - lse[:, None]).exp_()  # [N, V] softmax
        d_lse = torch.zeros_like(lse)
        d_pick = torch.zeros_like(lse)
        if d_hidden is not None:
            d_lse = d_lse + _rowdot(d_hidden, p.to(weight.dtype) @ weight)  # dh . (p W)
            d_pick = d_pick + _rowdot(d_hidden, weight[rows])  # dh . w_y
        if d_weight is not None:
            d_lse = d_lse + _rowdot(hidden, p.to(d_weight.dtype) @ d_weight)  # h . (p dW)
            d_pick = d_pick + _rowdot(hidden, d_weight[rows])  # h . dw_y
        return torch.where(valid, d_lse - d_pick, 0.0), d_lse

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> None:
        raise RuntimeError("LinearCrossEntropy has a forward-mode (jvp) rule only")
