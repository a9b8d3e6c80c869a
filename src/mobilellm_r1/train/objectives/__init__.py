"""Training objectives behind one protocol (`base.Objective`), one module each, and their registry.

A new objective is one module with an `Objective` subclass and one line in `OBJECTIVES`; the
recipe's `objective:` is checked against this registry's keys and nothing else names them.
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

__all__ = ["OBJECTIVES", "Loop", "Objective", "StepResult", "objective_class", "prepare_data"]


def objective_class(name: str) -> type[Objective]:
    """The registered objective `name`; ValueError naming the field and the choices otherwise."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {list(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name]


def prepare_data(cfg: TrainConfig, device: str | None = None) -> None:
    """Make the data `cfg`'s objective reads and is missing (e.g. synthesise and tokenize the
    mixture) on rank 0 while the other ranks wait; call it before building the `Trainer`."""
    dist = parallel.init_distributed(device)
    if dist.is_main:
        objective_class(cfg.objective).prepare(cfg, cfg.model.tokenizer())
    parallel.barrier()
