"""Sampling parameters and next-token selection (greedy, temperature, top-k, top-p)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to continue each prompt.

    temperature 0 means greedy (argmax). `n` samples are drawn per prompt. `stop_token_ids`
    None means the model's end-of-sequence ids; `stop_strings` end a sample as soon as its
    decoded text contains one (the text is cut before it).
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int | None = None
    stop_token_ids: tuple[int, ...] | None = None
    stop_strings: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def sampling_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Filtered next-token distribution. logits [B, V] -> probs [B, V] (float32)."""
    logits = logits.float() / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= params.top_p, 0.0)  # smallest prefix >= p
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return probs


def argmax_last(x: torch.Tensor) -> torch.Tensor:
    """argmax over the last dim in two stages (groups, then their winners).

    A one-stage reduction over a 128k vocabulary runs one thread block per row; splitting it
    gives the GPU enough blocks for batch-1 decoding. Ties resolve to the lowest index."""
    v = x.shape[-1]
    groups = next((g for g in range(int(v**0.5), 1, -1) if v % g == 0), 1)
    if groups == 1:
        return x.argmax(dim=-1)
    vals, idx = x.unflatten(-1, (groups, v // groups)).max(dim=-1)  # [..., groups]
    best = vals.argmax(dim=-1, keepdim=True)
    return (best * (v // groups) + idx.gather(-1, best)).squeeze(-1)


def select_tokens(logits: torch.Tensor, params: SamplingParams, noise: torch.Tensor | None) -> torch.Tensor:
    """Next tokens [B] from logits [B, V].

    Sampling uses the exponential race: argmax(p / E) with E ~ Exp(1) draws from p. The
    noise is drawn by the caller from a seeded generator, so this function stays free of
    random state (and can be captured in a CUDA graph).
    """
    if params.greedy:
        return argmax_last(logits)
    return argmax_last(sampling_probs(logits, params) / noise)
