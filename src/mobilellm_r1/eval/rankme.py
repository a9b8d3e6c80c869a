"""RankMe effective rank of embeddings (Garrido et al. 2023, "RankMe: Assessing the Downstream
Performance of Pretrained Self-Supervised Representations by Their Rank"; MobileLLM-R1 Eq. 8).

``RankMe(Z) = exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / ||sigma||_1 + eps`` over the singular
values ``sigma`` of the embedding matrix Z [N, d] (not centred, as in the paper).  It lies in
[1, min(N, d)]: r for a rank-r matrix with equal singular values, near min(N, d) for well-spread
embeddings.  Use N >= d texts, or the value is capped at N.

:func:`embed_texts` gives the document embeddings used here and by semantic deduplication: the
final hidden states (after the last norm) of our Transformer, mean-pooled over each document's
tokens (the BOS position left out, whose state is the same for every document).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..model.model import module_device


def rankme(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe of an embedding matrix [N, d] (computed in float64)."""
    if embeddings.ndim != 2 or min(embeddings.shape) == 0:
        raise ValueError(f"embeddings must be a non-empty [N, d] matrix, got shape {tuple(embeddings.shape)}")
    sigma = torch.linalg.svdvals(embeddings.detach().to(torch.float64))
    p = sigma / sigma.sum().clamp(min=torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def _pooled_batch(
    model: nn.Module, rows: Sequence[Sequence[int]], pad_id: int, skip_first: bool
) -> torch.Tensor:
    """Mean of the final hidden states over each row's tokens (right padded, one forward)."""
    device = module_device(model)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    weights = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        start = 1 if skip_first and len(row) > 1 else 0
        weights[i, start : len(row)] = 1.0
    hidden = model(ids.to(device), return_hidden=True).float()  # [B, T, d]; causal: pads change nothing
    weights = weights.to(device)
    return (hidden * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True)


def embed_texts(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    max_tokens: int = 512,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Mean-pooled final hidden states [N, d] (float32, on the model's device) of texts.

    ``model``: our Transformer (any module with ``forward(ids, return_hidden=True) -> [B, T, d]``);
    ``tokenizer``: our tokenizer (``encode(text, bos=True)``, ``pad_id``).  Texts get BOS and are cut
    to ``max_tokens`` tokens; they are batched by length, right padded.  The model is run in eval mode
    and put back in its previous mode.  ``progress(k)`` is called after each batch of ``k`` texts
    (e.g. a tqdm bar's ``update``).
    """
    if not texts:
        return torch.zeros(0, model.config.hidden_size, device=module_device(model))
    rows = [tokenizer.encode(t, bos=True)[:max_tokens] for t in texts]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    was_training = model.training
    model.eval()
    try:
        parts = []
        for s in range(0, len(order), batch_size):
            batch = [rows[i] for i in order[s : s + batch_size]]
            parts.append(_pooled_batch(model, batch, tokenizer.pad_id, True))
            if progress is not None:
                progress(len(batch))
    finally:
        model.train(was_training)
    pooled = torch.cat(parts)
    out = torch.empty_like(pooled)
    out[torch.tensor(order, device=pooled.device)] = pooled
    return out


def rankme_of_model(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 16,
    *,
    max_tokens: int = 512,
    eps: float = 1e-7,
    progress: Callable[[int], None] | None = None,
) -> float:
    """RankMe of the model's mean-pooled final hidden states over ``texts`` (see :func:`embed_texts`)."""
    pooled = embed_texts(
        model, tokenizer, texts, batch_size=batch_size, max_tokens=max_tokens, progress=progress
    )
    return rankme(pooled, eps)
