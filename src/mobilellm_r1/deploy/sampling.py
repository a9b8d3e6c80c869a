"""Sampling parameters and next-token selection (greedy, temperature, top-k, top-p), with
counter-based noise so that a seeded sample does not depend on the batch it runs in."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field

import torch

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class SamplingParams:
    """How to continue each prompt.

    temperature 0 means greedy (argmax). `n` samples are drawn per prompt. `stop_token_ids`
    None means the model's end-of-sequence ids; `stop_strings` end a sample as soon as its
    decoded text contains one (the text is cut before it). `seed` None draws a fresh seed per
    call (or per request); `logprobs` k returns, per generated token, its log-probability under
    the model and the k most likely tokens' (OpenAI semantics; engines that support it).
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int | None = None
    stop_token_ids: tuple[int, ...] | None = None
    stop_strings: tuple[str, ...] = field(default_factory=tuple)
    logprobs: int | None = None

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
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError(f"logprobs must be None or >= 0, got {self.logprobs}")

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
    caller passes the noise [B, V] (`exponential_noise`), so this function stays free of
    random state (and can be captured in a CUDA graph).
    """
    if params.greedy:
        return argmax_last(logits)
    return argmax_last(sampling_probs(logits, params) / noise)


def resolve_seed(seed: int | None) -> int:
    """`seed`, or a fresh random one when it is None."""
    return secrets.randbits(63) if seed is None else seed


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The noise seed of one sample (in [0, 2^63)): the call's seed, the prompt's index in the
    call and the sample's index among its prompt's n, hashed together (splitmix64). Every engine
    derives a sample's noise from this alone, never from its batch."""
    h = _splitmix64(seed & MASK64)
    h = _splitmix64(h ^ (prompt_index & MASK64))
    return _splitmix64(h ^ (sample_index & MASK64)) >> 1


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply, multiplier 0x45D9F3B), elementwise on int64
    tensors holding values in [0, 2^32): the multiplier is below 2^27, so no product overflows
    int64 and the result is exact on every device."""
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & MASK32
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & MASK32
    return x ^ (x >> 16)


def mix32_int32(x: torch.Tensor) -> torch.Tensor:
    """`mix32` on int32 tensors holding the same 32 bits (two's complement): products wrap to the
    same low 32 bits, and each right shift is masked so it acts as the unsigned (logical) one.
    Bit-identical to `mix32`, with half the memory traffic over [B, V] tensors."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x45D9F3B
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x45D9F3B
    return x ^ ((x >> 16) & 0xFFFF)


def _as_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) -> int32 with the same bits."""
    return (x - ((x >> 31) << 32)).int()


@functools.lru_cache(maxsize=8)
def token_hashes(vocab: int, device: torch.device) -> torch.Tensor:
    """The per-token half of the noise hash [V] (int32), the same at every decode step."""
    return _as_int32(mix32(torch.arange(vocab, device=device) * 0x9E3779B9 & MASK32))


def exponential_noise(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """Exp(1) draws [B, V] (float32) for the exponential race of `select_tokens`.

    Entry (b, v) is a hash of (seeds[b], steps[b], v) turned into a uniform u in (0, 1) and
    then -log(u): counter-based, so a sample's draws depend only on its seed and the index
    of the token being drawn (steps [B]), not on which rows share its batch. Pure tensor ops
    (the per-row key in int64 holding 32-bit values, the [B, V] part in int32), so it runs
    inside compiled steps and CUDA graphs."""
    seeds, steps = seeds.long(), steps.long()
    key = mix32(mix32(mix32(seeds & MASK32) ^ ((seeds >> 32) & MASK32)) ^ (steps & MASK32))  # [B]
    token = token_hashes(vocab, seeds.device)  # [V]
    bits = (mix32_int32(_as_int32(key)[:, None] ^ token[None, :]) >> 8) & 0xFFFFFF  # [B, V], 24 bits
    return -torch.log((bits.float() + 0.5) * 2.0**-24)


@dataclass
class TopLogprobs:
    """Log-probabilities of a window of steps: chosen [S, B] (the picked token's), and the `k`
    most likely tokens' values and ids [S, B, k], as host lists."""

    chosen: list[list[float]]
    values: list[list[list[float]]]
    ids: list[list[list[int]]]


class RowSampler:
    """Next-token selection for a fixed set of rows over several steps, on the device and
    without a host sync, so a window of decode steps can be queued back to back.

    Rows are grouped by sampling settings once (index tensors built up front); seeded rows draw
    the counter-based noise of `exponential_noise` from their seed and the index of the token
    being drawn (`first_steps[b]` at step 0 of the window, then one more per step). With
    `logprobs` it also records each step's log-softmax of the picked token and the top-k."""

    def __init__(
        self,
        params: list[SamplingParams],
        seeds: list[int],
        first_steps: list[int],
        device: torch.device,
    ) -> None:
        self.rows = len(params)
        by_setting: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            by_setting.setdefault((p.temperature, p.top_p, p.top_k), []).append(i)
        whole = len(by_setting) == 1
        self.groups = []  # (params, row index tensor or None for all rows, seeds, first steps)
        for rows in by_setting.values():
            p = params[rows[0]]
            idx = None if whole else torch.tensor(rows, device=device)
            seed_t = steps_t = None
            if not p.greedy:
                seed_t = torch.tensor([seeds[i] for i in rows], device=device)
                steps_t = torch.tensor([first_steps[i] for i in rows], device=device)
            self.groups.append((p, idx, seed_t, steps_t))
        wanted = [p.logprobs for p in params if p.logprobs is not None]
        self.top_k = max(wanted) if wanted else None
        self._logprobs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """Tokens [rows] for window step `step` from logits [rows, V] (float32)."""
        if len(self.groups) == 1:
            params, _, seeds, steps = self.groups[0]
            picked = self._pick(logits, params, seeds, steps, step)
        else:
            picked = torch.empty(self.rows, dtype=torch.long, device=logits.device)
            for p, idx, seeds, steps in self.groups:
                picked[idx] = self._pick(logits[idx], p, seeds, steps, step)
        if self.top_k is not None:
            logprobs = torch.log_softmax(logits, dim=-1)
            top = torch.topk(logprobs, self.top_k, dim=-1)
            self._logprobs.append((logprobs.gather(1, picked[:, None])[:, 0], top.values, top.indices))
        return picked

    @staticmethod
    def _pick(logits, params, seeds, steps, step: int) -> torch.Tensor:
        noise = None if params.greedy else exponential_noise(seeds, steps + step, logits.shape[-1])
        return select_tokens(logits, params, noise)

    def logprobs(self) -> TopLogprobs | None:
        """The recorded steps' log-probabilities (one host sync), or None without `logprobs`."""
        if self.top_k is None:
            return None
        chosen, values, ids = (torch.stack(t) for t in zip(*self._logprobs, strict=True))
        return TopLogprobs(chosen.tolist(), values.tolist(), ids.tolist())
