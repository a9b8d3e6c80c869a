"""`objective: lm`: next-token cross-entropy over a token mixture (pretraining, mid-training)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...data.mixture import MixtureLoader
from ...data.recipes import build_loader, prepare
from .base import Objective

if TYPE_CHECKING:
    from ...tokenizer import Tokenizer
    from ..config import TrainConfig
    from ..parallel import DistInfo


class LMObjective(Objective):
    """Language modelling on `data.recipe`'s mixture: the base class's cross-entropy over its
    packed rows."""

    @classmethod
    def prepare(cls, cfg: TrainConfig, tokenizer: Tokenizer) -> None:
        """Synthesise the corpus and tokenize the sources the mixture needs and are missing."""
        prepare(cfg.data.mixture(), tokenizer)

    def batches(self, cfg: TrainConfig, tokenizer: Tokenizer, dist: DistInfo) -> tuple[MixtureLoader, int]:
        recipe = cfg.data.mixture()
        loader = build_loader(
            recipe,
            batch_size=cfg.data.micro_batch,
            eos_id=tokenizer.eos_id,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        return loader, recipe.seq_len
