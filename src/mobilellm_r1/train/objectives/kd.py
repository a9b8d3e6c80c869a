"""`objective: kd`: logit distillation from a teacher over a token mixture (paper: mid-training).

KL(teacher || student) at `distill.temperature`, mixed with `distill.alpha_ce` x cross-entropy
(paper: pure KL). The teacher is live (`distill.teacher`, its logits made one loss chunk at a
time, `train/teacher.py`) or its stored top-k (`distill.topk_dir`, written by `train
--dump-topk`, `train/topk_store.py`). Neither is a submodule: never sharded, trained or
checkpointed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ...data.mixture import Batch, MixtureLoader
from ..config import DistillSection
from ..losses import CE_CHUNK, kd_loss, topk_kd_loss
from ..teacher import Teacher, load_teacher
from ..topk_store import TopkStore
from .lm import LMObjective

if TYPE_CHECKING:
    from ...model import Transformer
    from ...tokenizer import Tokenizer
    from ..config import TrainConfig
    from ..parallel import DistInfo

TopkFn = Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]  # batch -> top-k ids, log-probs [B, T, k]


class KDObjective(LMObjective):
    """The LM objective's mixture with the distillation loss: from `teacher` when `topk` is
    None, else from `topk` (a stored top-k lookup)."""

    def __init__(
        self,
        model: Transformer,
        chunk_tokens: int = CE_CHUNK,
        document_mask: bool = False,
        teacher: Teacher | None = None,
        distill: DistillSection | None = None,
        topk: TopkFn | None = None,
        fused_loss: bool = False,
    ) -> None:
        super().__init__(model, chunk_tokens, document_mask, fused_loss)
        if teacher is None and topk is None:
            raise ValueError("objective kd needs a teacher or a top-k store")
        self.teacher, self.topk, self.distill = teacher, topk, distill or DistillSection()
        self.store: TopkStore | None = None

    loss_kernels = ("chunked",)  # its loss is not plain cross-entropy

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        if not (cfg.distill.teacher or cfg.distill.topk_dir):
            raise ValueError("objective kd needs distill.teacher or distill.topk_dir")

    @classmethod
    def build(cls, cfg: TrainConfig, model: Transformer, tokenizer: Tokenizer, dist: DistInfo) -> KDObjective:
        d = cfg.distill
        store = TopkStore(d.topk_dir) if d.topk_dir else None
        teacher = None if store else load_teacher(d.teacher, dist.device)
        topk = store.lookup if store else None
        objective = cls(
            model, cfg.loss_chunk_tokens, cfg.data.document_mask, teacher, d, topk, fused_loss=cfg.compile
        )
        objective.store = store
        return objective

    def batches(self, cfg: TrainConfig, tokenizer: Tokenizer, dist: DistInfo) -> tuple[MixtureLoader, int]:
        """The mixture loader; a top-k store must hold exactly the samples it will serve."""
        loader, seq_len = super().batches(cfg, tokenizer, dist)
        if self.store is not None:
            self.store.check_run(cfg, loader, dist.world_size, self.model.config.vocab_size)
        return loader, seq_len

    def head_loss(
        self, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        d = self.distill
        kd = {"alpha_ce": d.alpha_ce, "temperature": d.temperature}
        kd |= {"chunk_size": self.chunk_tokens, "reduction": "sum"}
        if self.topk is not None:
            ids, logprobs = self.topk(batch)
            return topk_kd_loss(hidden, weight, labels, ids.flatten(0, 1), logprobs.flatten(0, 1), **kd)
        teacher_logits = self.teacher.chunks(batch.input_ids)  # per loss chunk: [n, V]
        return kd_loss(hidden, weight, labels, teacher_logits, fused=self.fused_loss, **kd)
