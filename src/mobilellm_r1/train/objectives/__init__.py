"""Training objectives behind one protocol (`base.Objective`), one module each, and their registry.

A new objective is one module with an `Objective` subclass and one line in `OBJECTIVES`. A
recipe's `objective:` is checked against this registry's keys (`objective_for`, when the run is
prepared or built; `train/config.py` sits below the objectives and does not import them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import parallel
from .base import Loop, Objective, StepResult
from .grpo import GRPOObjective
from .kd import KDObjective
from .lm import LMObjective
from .sft import SFTObjective

if TYPE_CHECKING:
    from ..config import TrainConfig

OBJECTIVES: dict[str, type[Objective]] = {
    "lm": LMObjective,  # pretraining, mid-training
    "kd": KDObjective,  # logit distillation (live teacher or stored top-k)
    "sft": SFTObjective,  # packed chats, assistant-only loss
    "grpo": GRPOObjective,  # RL from verifiable rewards
}

__all__ = ["OBJECTIVES", "Loop", "Objective", "StepResult", "objective_for", "prepare_data"]


def objective_for(cfg: TrainConfig) -> type[Objective]:
    """The registered objective class of the run `cfg`, once it has checked `cfg`; otherwise a
    ValueError naming the run and the field (`objective`, or what the objective lacks)."""
    if cfg.objective not in OBJECTIVES:
        raise ValueError(
            f"run {cfg.name}: objective: expected one of {list(OBJECTIVES)}, got {cfg.objective!r}"
        )
    cls = OBJECTIVES[cfg.objective]
    try:
        if cfg.loss_kernel not in cls.loss_kernels:
            kernels = " or ".join(cls.loss_kernels)
            raise ValueError(
                f"objective {cfg.objective} takes loss_kernel: {kernels}, got loss_kernel: {cfg.loss_kernel}"
            )
        cls.check_config(cfg)
    except ValueError as err:
        raise ValueError(f"run {cfg.name}: {err}") from None
    return cls


def prepare_data(cfg: TrainConfig, device: str | None = None) -> None:
    """Make the data `cfg`'s objective reads and is missing (e.g. synthesise and tokenize the
    mixture) on rank 0 while the other ranks wait; call it before building the `Trainer`."""
    dist = parallel.init_distributed(device)
    if dist.is_main:
        objective_for(cfg).prepare(cfg, cfg.model.tokenizer())
    parallel.barrier()
