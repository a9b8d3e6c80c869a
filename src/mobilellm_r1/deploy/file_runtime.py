"""Generation from an exported file (`.pte`, `.gguf`) with the PyTorch engine's rules.

A format's runtime (`FileRuntime`) only runs the network: `forward(ids, start)` writes `ids`
into its KV cache from position `start` (dropping whatever the cache held from there on) and
returns the next-token logits after the last of them. `FileGenerator` does everything around
it exactly as `deploy.generate.Generator` does: the same `SamplingParams` (greedy, temperature,
top-k, top-p through `select_tokens`, with the same counter-based noise per sample, so a seed
gives the same tokens), stop ids, stop strings, `n` samples, streaming callback and
`Completion`s. The prompt is prefilled once and its `n` samples continue from it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from ..tokenizer import Tokenizer
from .generate import Completion, StreamFn, encode_prompts, first_stop, make_completion
from .sampling import SamplingParams, exponential_noise, resolve_seed, sample_seed, select_tokens


class FileRuntime(Protocol):
    """An exported model loaded in its runtime (batch 1)."""

    path: str
    metadata: dict[str, str]  # export metadata without the `mobilellm_r1.` prefix
    tokenizer: Tokenizer  # rebuilt from the file, checked against metadata["tokenizer_sha256"]
    max_context: int  # positions the file's KV cache holds
    vocab_size: int
    eos_token_id: list[int]

    def forward(self, ids: Sequence[int], start: int) -> torch.Tensor:
        """Logits [vocab] (float32) after `ids`, written at positions start .. start+len-1."""
        ...


def check_forward_input(runtime: FileRuntime, ids: Sequence[int], start: int, cached: int) -> None:
    """ValueError naming the problem when `forward(ids, start)` cannot run: no ids, a start past
    the `cached` positions, positions past the file's context, or an id outside its vocabulary."""
    if not ids:
        raise ValueError("forward() needs at least one token id")
    if not 0 <= start <= cached:
        raise ValueError(f"start {start} must be between 0 and the {cached} cached positions")
    if start + len(ids) > runtime.max_context:
        raise ValueError(
            f"positions up to {start + len(ids)} exceed the context of {runtime.path} ({runtime.max_context})"
        )
    bad = [t for t in ids if not 0 <= t < runtime.vocab_size]
    if bad:
        raise ValueError(
            f"token id {bad[0]} is outside the vocabulary of {runtime.path} ({runtime.vocab_size})"
        )


class FileGenerator:
    """`Generator.generate`'s interface over a `FileRuntime`, one sample at a time."""

    def __init__(self, runtime: FileRuntime) -> None:
        self.runtime = runtime
        self.tokenizer = runtime.tokenizer

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams | None = None,
        stream: StreamFn | None = None,
    ) -> list[list[Completion]]:
        """Continue every prompt `params.n` times -> completions[prompt][sample]."""
        params = params or SamplingParams()
        encoded = encode_prompts(prompts, self.tokenizer)
        longest = max(len(p) for p in encoded) + params.max_new_tokens
        if longest > self.runtime.max_context:
            raise ValueError(
                f"prompt + max_new_tokens = {longest} exceeds the context of {self.runtime.path} "
                f"({self.runtime.max_context}; export it with a larger --max-context)"
            )
        default = self.runtime.eos_token_id
        stop_ids = set(default if params.stop_token_ids is None else params.stop_token_ids)
        base = resolve_seed(params.seed)
        result = []
        for i, ids in enumerate(encoded):
            prompt_logits = self.runtime.forward(ids, 0)
            samples = []
            for j in range(params.n):
                emit = functools.partial(stream, i, j) if stream is not None else None
                seed = None if params.greedy else sample_seed(base, i, j)
                new = self._sample(ids, prompt_logits, params, stop_ids, seed, emit)
                samples.append(make_completion(i, j, new, self.tokenizer, params, stop_ids))
            result.append(samples)
        return result

    def _sample(
        self,
        prompt: list[int],
        logits: torch.Tensor,
        params: SamplingParams,
        stop_ids: set[int],
        seed: int | None,
        emit: Callable[[list[int]], object] | None,
    ) -> list[int]:
        """One sample's new ids (its stop token included); `seed` None: greedy."""
        out: list[int] = []
        tail = 4 * max((len(s) for s in params.stop_strings), default=0) + 4
        while True:
            noise = None
            if seed is not None:
                noise = exponential_noise(torch.tensor([seed]), torch.tensor([len(out)]), logits.shape[-1])
            tok = int(select_tokens(logits[None].float(), params, noise)[0])
            out.append(tok)
            if emit is not None:
                emit([tok])
            if tok in stop_ids or len(out) == params.max_new_tokens:
                return out
            recent = self.tokenizer.decode(out[-tail:]) if params.stop_strings else ""
            if first_stop(recent, params.stop_strings) is not None:
                return out
            logits = self.runtime.forward([tok], len(prompt) + len(out) - 1)


@torch.no_grad()
def top1_agreement(runtime: FileRuntime, model: torch.nn.Module, ids: Sequence[int]) -> float:
    """Fraction of the positions of `ids` (teacher-forced, at most the file's context) where the
    file's next-token argmax equals `model`'s, e.g. an 8da4w file against the float model. The
    file reads `ids` one token at a time through its KV cache."""
    ids = list(ids)[: runtime.max_context]
    if not ids:
        raise ValueError("top1_agreement() needs at least one token id")
    ref = model(torch.tensor([ids], device=next(model.parameters()).device))[0].argmax(-1).tolist()
    same = sum(int(runtime.forward([tok], i).argmax()) == ref[i] for i, tok in enumerate(ids))
    return same / len(ids)


def measure_speed(runtime: FileRuntime, prompt_tokens: int = 128, new_tokens: int = 64) -> dict[str, float]:
    """Prefill and greedy-decode rates of a loaded file: `prompt_tokens` token ids (the tokenizer's
    encoding of a fixed text, repeated) prefilled at once, then `new_tokens` decoded one by one.
    Returns {prompt_tokens, new_tokens, prefill_tok_s, decode_tok_s}."""
    import time

    text = "The quick brown fox jumps over the lazy dog while a student adds 17 and 25. "
    ids = runtime.tokenizer.encode(text * (prompt_tokens // 8 + 1), bos=True)[:prompt_tokens]
    new_tokens = min(new_tokens, runtime.max_context - len(ids))
    if new_tokens < 1:
        raise ValueError(f"{runtime.path}: a context of {runtime.max_context} leaves no room to decode")
    start = time.perf_counter()
    logits = runtime.forward(ids, 0)
    prefill_s = time.perf_counter() - start
    position = len(ids)
    start = time.perf_counter()
    for _ in range(new_tokens):
        logits = runtime.forward([int(logits.argmax())], position)
        position += 1
    decode_s = time.perf_counter() - start
    return {
        "prompt_tokens": len(ids),
        "new_tokens": new_tokens,
        "prefill_tok_s": len(ids) / prefill_s,
        "decode_tok_s": new_tokens / decode_s,
    }
