"""`objective: sft`: cross-entropy on the assistant tokens of packed conversations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...data.packing import SFTLoader, build_sft_loader
from .base import Objective

if TYPE_CHECKING:
    from ...model import Transformer
    from ...tokenizer import Tokenizer
    from ..config import TrainConfig
    from ..parallel import DistInfo


class SFTObjective(Objective):
    """Supervised fine-tuning on `sft.sources`: chats packed into rows of `data.seq_len` tokens,
    only assistant tokens trained, attention always masked per conversation."""

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        if not cfg.sft.sources:
            raise ValueError("objective sft needs sft.sources (conversation files or hub datasets)")

    @classmethod
    def build(
        cls, cfg: TrainConfig, model: Transformer, tokenizer: Tokenizer, dist: DistInfo
    ) -> SFTObjective:
        return cls(  # packed chats never mix
            model,
            cfg.loss_chunk_tokens,
            document_mask=True,
            fused_loss=cfg.compile,
            loss_kernel=cfg.loss_kernel,
        )

    def batches(self, cfg: TrainConfig, tokenizer: Tokenizer, dist: DistInfo) -> tuple[SFTLoader, int]:
        if not cfg.data.seq_len:
            raise ValueError("objective sft needs data.seq_len (the packed row length)")
        loader = build_sft_loader(
            cfg.sft,
            tokenizer,
            seq_len=cfg.data.seq_len,
            batch_size=cfg.data.micro_batch,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        return loader, cfg.data.seq_len
