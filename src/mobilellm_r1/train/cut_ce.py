"""Cut cross-entropy: the LM-head loss without logits in memory (`loss_kernel: cce`).

`losses.chunked_cross_entropy` writes each chunk's `[n, V]` logits and reads them back for the
softmax and its gradient. At the 140M's d = 576 that traffic, not the matmuls, is most of the
head's time (README, Training throughput: 15.2 of 97.7 ms per step in the fused softmax pass).
Cut cross-entropy (Wijmans et al., 2024, "Cut Your Losses in Large-Vocabulary Language Models";
the `cut-cross-entropy` package) computes the log-sum-exp over blocks of the vocabulary in
on-chip memory and recomputes the logits blockwise in backward, so no `[N, V]` tensor is
stored; it trades one more matmul for that traffic.

Here every gradient entry is kept (`filter_eps=None`; the package's default skips entries
below bf16 resolution, a setting a recipe may choose). On CUDA the package's Triton kernels
run; on other devices its `torch_compile` reference (whole logits: for tests and CPU runs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .losses import IGNORE_INDEX, compute_dtype


def cut_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
    filter_eps: float | str | None = None,
) -> Tensor:
    """Cross-entropy of `hidden @ weight.T` [N, V] against `labels` [N] (hidden [N, d], weight
    [V, d]), as `chunked_cross_entropy` computes it: the matmuls in autocast's dtype when
    autocast is on (else the inputs'), the softmax in float32; "mean" over the tokens that
    count, "sum" of their losses (0 when none count). A float32 0-dim tensor."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    try:
        from cut_cross_entropy import linear_cross_entropy
    except ImportError as err:  # a dependency of the package; say what to install
        raise ImportError("loss_kernel: cce needs the cut-cross-entropy package") from err
    if not bool((labels != ignore_index).any()):  # nothing counts: 0, gradients zero (as chunked)
        return (hidden[:0].sum() + weight[:0].sum()).float()
    dtype = compute_dtype(hidden, weight)
    cuda = hidden.device.type == "cuda"
    options = {"impl": "cce", "filter_eps": filter_eps} if cuda else {"impl": "torch_compile"}
    with torch.autocast(hidden.device.type, enabled=False):  # the kernels take one dtype
        loss = linear_cross_entropy(
            hidden.to(dtype),
            weight.to(dtype),
            labels,
            ignore_index=ignore_index,
            reduction=reduction,
            **options,
        )
    return loss.float()
