"""AdamW with decoupled weight decay on matrices only, and the learning-rate schedules.

Schedules (`lr_factor(step)` multiplies the peak lr; `step` counts optimizer steps from 0):
  linear   : linear warmup to 1, then linear decay to `final_lr_ratio` at the last step
             (paper: pretraining decays to 10% of peak, mid-training and SFT to 0)
  cosine   : warmup, then cosine from 1 to `final_lr_ratio`
  wsd      : warmup, constant, then linear decay over the last `decay_fraction` of steps
  constant : warmup, then 1
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .config import OptimSection


def lr_factor(step: int, total: int, cfg: OptimSection) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` of `total`."""
    warmup = min(cfg.warmup_steps, max(total - 1, 0))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    end = cfg.final_lr_ratio
    if cfg.schedule == "wsd":
        decay_steps = max(1, round(cfg.decay_fraction * total))
        start = total - decay_steps
        if step < start:
            return 1.0
        progress = (step - start + 1) / decay_steps
    else:
        progress = (step - warmup + 1) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - (1.0 - end) * progress


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Matrices (ndim >= 2) decay, vectors (norm gains) do not; tied parameters appear once."""
    decay, no_decay = [], []
    for param in model.parameters():  # parameters() yields a tied tensor once
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.AdamW:
    """AdamW (fused kernel on CUDA) over `param_groups`."""
    on_cuda = next(model.parameters()).is_cuda
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        fused=on_cuda,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float | None) -> float:
    """Global L2 norm of the gradients before clipping; scales them to at most ``max_norm``
    unless it is None or 0 (no clipping: the norm is still computed, for the log and the
    non-finite check)."""
    params = [p for p in params if p.grad is not None]
    if max_norm:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP2: a DTensor
