"""Batching token-id rows of different lengths: the one padding helper of the project."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> torch.Tensor:
    """Rows as one long tensor [B, T] (T: the longest row, at least 1), filled with ``pad_id`` on
    ``side`` (``"right"``: rows start at column 0; ``"left"``: rows end at the last column)."""
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    width = max(1, max((len(r) for r in rows), default=0))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            start = 0 if side == "right" else width - len(row)
            ids[i, start : start + len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return ids
