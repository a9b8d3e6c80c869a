"""Scale-out from outside the model: process group from torchrun, FSDP2, activation checkpointing.

Single process: `python -m mobilellm_r1.cli train ...`. Several: `torchrun --nproc-per-node N
-m mobilellm_r1.cli train ...` (multi-node: add `--nnodes`, `--rdzv-endpoint`). NCCL on CUDA,
gloo on CPU.
"""

from __future__ import annotations

import datetime
import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if there is one; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (identity in a single process)."""
    if dist.is_initialized():
        dist.all_reduce(value)
    return value


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer in the backward pass instead of storing its activations.

    The layer's `forward` is replaced in place (no wrapper module), so parameter names and
    checkpoints are unchanged."""
    for layer in model.layers:
        layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)


def apply_fsdp(
    root: nn.Module, layers: nn.ModuleList, bf16: bool, reshard_after_forward: bool = True
) -> None:
    """FSDP2: shard every decoder layer, then the root (embedding/LM head, final norm).

    With bf16, parameters are gathered in bf16 and gradients reduced in fp32; the sharded
    master weights and optimizer state stay fp32. `reshard_after_forward=False` keeps each
    layer's gathered parameters from its forward to its backward (no second all-gather, one
    unsharded copy of the layers in memory: ZeRO-2 style); the root is never resharded after
    forward (FSDP2's default for the root)."""
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mp_policy": mp} if mp is not None else {}
    for layer in layers:
        fully_shard(layer, reshard_after_forward=reshard_after_forward, **kwargs)
    fully_shard(root, **kwargs)
