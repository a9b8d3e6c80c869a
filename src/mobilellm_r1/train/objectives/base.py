"""The objective protocol: what the training loop needs from an objective (lm, kd, sft, grpo).

An objective is the `nn.Module` the trainer optimizes, shards (FSDP2) and checkpoints: it holds
the model as its one submodule (`model`), so its parameters and state-dict keys (`model.*`) are
the model's; anything else it uses (a teacher, a frozen reference) is kept outside the module
tree. The loop calls, in this order:

- `check_config(cfg)` (classmethod, via `objectives.objective_for`): refuse a config it cannot run;
- `prepare(cfg, tokenizer)` (classmethod, rank 0, before the trainer is built): make the data it
  reads and is missing (see `objectives.prepare_data`);
- `build(cfg, model, tokenizer, dist)` (classmethod): the objective around the model;
- `batches(cfg, tokenizer, dist)`: the loader of what it consumes (checkpointed through its
  `state_dict` / `load_state_dict`) and the row length (FLOPs, held-out NLL);
- `train_step(loop)`: one optimizer step, returning a `StepResult`;
- `forward(batch, output)`: `"loss"` (this objective's loss summed over tokens), `"nll"`
  (next-token cross-entropy whatever the objective: held-out NLL) or `"hidden"` (final hidden
  states, RankMe);
- `close()`: release what `build` started (judge workers).

The default step is the token mean over the whole global batch: `grad_accum` micro-batches per
rank, each rank's summed loss divided by the global count of trained tokens, so 1 rank and N ranks
at the same global batch make the same update; a step whose loss or gradient norm is not finite
is skipped (counted by the trainer). A new objective that only changes the loss overrides
`head_loss` (see `objectives/kd.py`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from ...data.mixture import Batch
from ...model import Transformer
from .. import parallel
from ..cut_ce import cut_cross_entropy
from ..losses import CE_CHUNK, chunked_cross_entropy
from ..optim import clip_gradients

if TYPE_CHECKING:
    from ...tokenizer import Tokenizer
    from ..config import TrainConfig
    from ..parallel import DistInfo


class Loader(Protocol):
    """What the loop needs of an objective's loader: its position, for checkpoints."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    tokens: int
    skipped: bool
    extra: dict[str, float] = field(default_factory=dict)  # objective-specific metrics (GRPO)


@dataclass
class Loop:
    """What an objective's `train_step` may use from the loop that runs it."""

    cfg: TrainConfig
    dist: DistInfo
    optimizer: torch.optim.Optimizer
    loader: Any  # the objective's own loader, from `batches`
    step: int  # optimizer steps done before this one

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.cfg, self.dist)


def autocast(cfg: TrainConfig, dist: DistInfo) -> contextlib.AbstractContextManager:
    """bf16 autocast in a single process with `precision: bf16` (FSDP2 casts itself)."""
    on = cfg.precision == "bf16" and not dist.distributed
    return torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=on)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """`batch` with every tensor moved to `device`."""
    moved = {f.name: getattr(batch, f.name) for f in fields(batch)}
    return Batch(**{k: None if t is None else t.to(device, non_blocking=True) for k, t in moved.items()})


class Objective(nn.Module):
    """Model + loss in one forward, so a sharded LM head is gathered inside the forward like
    every other parameter (see the module docstring for the protocol). This base trains
    next-token cross-entropy, computed in chunks of `chunk_tokens` (`fused_loss`: compiled
    chunk kernels, on with `compile`) or, with `loss_kernel="cce"`, by cut cross-entropy
    (`cut_ce.py`); `document_mask`: attend within packed documents only."""

    def __init__(
        self,
        model: Transformer,
        chunk_tokens: int = CE_CHUNK,
        document_mask: bool = False,
        fused_loss: bool = False,
        loss_kernel: str = "chunked",
    ) -> None:
        super().__init__()
        self.model, self.chunk_tokens, self.document_mask = model, chunk_tokens, document_mask
        self.fused_loss, self.loss_kernel = fused_loss, loss_kernel

    # LM-head loss kernels (`TrainConfig.loss_kernel`) this objective's loss can use
    loss_kernels: tuple[str, ...] = ("chunked", "cce")

    # ------------------------------------------------------------------ building
    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """Raise ValueError naming the field when `cfg` lacks what this objective needs."""

    @classmethod
    def prepare(cls, cfg: TrainConfig, tokenizer: Tokenizer) -> None:
        """Make the data this objective reads and is missing (rank 0, before `build`)."""

    @classmethod
    def build(cls, cfg: TrainConfig, model: Transformer, tokenizer: Tokenizer, dist: DistInfo) -> Objective:
        """The objective around `model` for the run `cfg`."""
        return cls(
            model,
            cfg.loss_chunk_tokens,
            cfg.data.document_mask,
            fused_loss=cfg.compile,
            loss_kernel=cfg.loss_kernel,
        )

    def batches(self, cfg: TrainConfig, tokenizer: Tokenizer, dist: DistInfo) -> tuple[Loader, int]:
        """This rank's loader of what the objective consumes, and the row length."""
        raise NotImplementedError(f"{type(self).__name__} does not say what it trains on")

    def close(self) -> None:
        """Release what `build` started."""

    # ------------------------------------------------------------------ loss
    def forward(self, batch: Batch, output: str = "loss") -> torch.Tensor:
        kwargs = {}
        if self.document_mask:
            kwargs = {"position_ids": batch.position_ids, "doc_ids": batch.doc_ids}
        hidden = self.model(batch.input_ids, return_hidden=True, **kwargs)
        if output == "hidden":
            return hidden
        hidden, weight, labels = hidden.flatten(0, 1), self.model.lm_head.weight, batch.labels.flatten()
        if output == "nll":
            return self.cross_entropy(hidden, weight, labels)
        return self.head_loss(hidden, weight, labels, batch)

    def cross_entropy(self, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy summed over the tokens whose label counts."""
        if self.loss_kernel == "cce":
            return cut_cross_entropy(hidden, weight, labels, reduction="sum")
        return chunked_cross_entropy(
            hidden, weight, labels, chunk_size=self.chunk_tokens, reduction="sum", fused=self.fused_loss
        )

    def head_loss(
        self, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        """The training loss summed over tokens, from the final hidden states [N, d], the LM head
        [V, d] and the labels [N]; here next-token cross-entropy."""
        return self.cross_entropy(hidden, weight, labels)

    # ------------------------------------------------------------------ one step
    def train_step(self, loop: Loop) -> StepResult:
        """One optimizer step over `grad_accum` micro-batches on every rank (module docstring)."""
        device, world = loop.dist.device, loop.dist.world_size
        batches = [to_device(loop.loader.next_batch(), device) for _ in range(loop.cfg.data.grad_accum)]
        local = sum(int((b.labels != -100).sum()) for b in batches)
        tokens = int(parallel.all_reduce_sum(torch.tensor(float(local), device=device)).item())
        # Each rank's loss is divided by the global token count; FSDP averages gradients over
        # ranks, so multiplying by world_size makes the update the global token mean.
        scale = world / max(tokens, 1)
        loss_sum = torch.zeros((), device=device)
        for batch in batches:
            with loop.autocast():
                loss = self(batch)
            (loss * scale).backward()
            loss_sum += loss.detach().float()
        mean_loss = float(parallel.all_reduce_sum(loss_sum).item()) / max(tokens, 1)
        grad_norm = clip_gradients(self.parameters(), loop.cfg.optim.grad_clip)
        skipped = not (math.isfinite(mean_loss) and math.isfinite(grad_norm))
        if not skipped:
            loop.optimizer.step()
        loop.optimizer.zero_grad(set_to_none=True)
        return StepResult(mean_loss, grad_norm, tokens, skipped)
