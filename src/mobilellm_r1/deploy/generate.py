"""Batched generation with a preallocated KV cache.

`Generator.generate` left-pads the prompts (x `n` samples each) into one batch, prefills
the cache in one forward pass, then decodes one token per step. A decode step (model +
logits processing + stop bookkeeping) reads and advances fixed device tensors in place
(`_StepState`), so it can be replayed from CUDA graphs:
  * batch 1 on a GPU (with `compile=True`, or `fused=True`): the forward is the fused
    Triton step (`fused_decode.py`) and `sync_every` whole steps are captured in one CUDA
    graph of our own; greedy steps fold the argmax and the bookkeeping into those kernels
    (`fused_options` go to `FusedDecoder`, e.g. `{"fuse_mlp": True}`);
  * otherwise, with `compile=True`, the step runs under `torch.compile` with CUDA graphs
    (mode="reduce-overhead"), one replay per token.
The host reads tokens every `sync_every` steps, to stream them, check stop strings and stop
early when every row has finished; it reads each such block while the GPU decodes the next,
so a stop is seen one block late (the tokens past it are dropped).
Sampling noise is counter-based (`sampling.exponential_noise` of each row's `sample_seed` and
token index), computed inside the step, so a seeded sample gets the same tokens here, in the
continuous-batching engine and in `FileGenerator`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..model.model import KVCache, Transformer
from ..model.padding import pad_rows
from . import fused_decode
from .sampling import SamplingParams, exponential_noise, resolve_seed, sample_seed, select_tokens

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

CACHE_BUCKET = 256  # cache lengths are rounded up to this, so compiled graphs get reused
# Inductor options of the compiled decode step: CUDA graphs, as mode="reduce-overhead" sets.
DEFAULT_COMPILE_OPTIONS = {"triton.cudagraphs": True}
# Narrow models also get horizontal kernel fusion + coordinate-descent tuning: on an H100 that
# made 140m (576 wide) decode 21% faster at batch 1 (1,218 -> 1,478 steps/s, 1k prompt) and 23%
# at batch 16, but 360m 6% and 950m 12% slower (benchmarks/diag/NOTES.md).
NARROW_COMPILE_OPTIONS = {"combo_kernels": True, "coordinate_descent_tuning": True}
NARROW_MAX_WIDTH = 768
StreamFn = Callable[[int, int, list[int]], None]  # (prompt index, sample index, new token ids)


@dataclass
class Completion:
    """One sample: generated ids (stop token included if one ended it) and its text."""

    prompt_index: int
    sample_index: int
    token_ids: list[int]
    text: str | None
    finish_reason: str  # "stop" | "length"


def prefill_mask(pads: torch.Tensor, width: int) -> torch.Tensor:
    """[B, 1, P, P]: causal over real tokens; pad rows see only themselves (keeps them finite)."""
    q = torch.arange(width, device=pads.device)
    allowed = (q[None, :] <= q[:, None])[None] & (q[None, None, :] >= pads[:, None, None])
    return (allowed | torch.eye(width, dtype=torch.bool, device=pads.device))[:, None]


class _DecodeStep(nn.Module):
    """One decode step as a module, so the model's weights and the cache's buffers are
    module state to `torch.compile` (static, mutated in place) rather than graph inputs.

    With a `FusedDecoder` (batch 1) the model's forward is the opaque `fused_decode` op."""

    def __init__(
        self,
        model: Transformer,
        cache: KVCache,
        params: SamplingParams,
        pad_id: int,
        fused: fused_decode.FusedDecoder | None = None,
    ) -> None:
        super().__init__()
        self.model, self.cache, self.params, self.pad_id = model, cache, params, pad_id
        self.fused = fused
        self.fused_handle = fused_decode.register(fused) if fused is not None else 0

    def _logits(self, tok: torch.Tensor, pos: torch.Tensor, pads: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, V] of tok [B, 1] at cache slot pos [1]."""
        if self.fused is not None:  # batch 1: no padding, so the position is the slot
            buffers = list(self.cache.buffers())
            return torch.ops.mobilellm_r1.fused_decode(tok.view(1), pos, buffers, self.fused_handle)
        slots = torch.arange(self.cache.max_len, device=tok.device)
        mask = ((slots[None, :] <= pos) & (slots[None, :] >= pads[:, None]))[:, None, None, :]
        logits = self.model(tok, (pos - pads)[:, None], cache=self.cache, cache_pos=pos, attn_mask=mask)
        return logits[:, -1]

    def forward(
        self,
        tok: torch.Tensor,
        pos: torch.Tensor,
        pads: torch.Tensor,
        finished: torch.Tensor,
        stop_ids: torch.Tensor,
        seeds: torch.Tensor | None,
        step: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tok [B, 1] at cache slot pos [1] -> (next tokens [B], finished [B]); the new tokens
        are each row's token `step` [1], drawn with noise from `seeds` [B] (None: greedy)."""
        logits = self._logits(tok, pos, pads)
        noise = None
        if seeds is not None:
            noise = exponential_noise(seeds, step.expand(seeds.shape[0]), logits.shape[-1])
        nxt = select_tokens(logits, self.params, noise)
        nxt = torch.where(finished, torch.full_like(nxt, self.pad_id), nxt)
        return nxt, finished | torch.isin(nxt, stop_ids)


@dataclass
class _StepState:
    """Device tensors a decode step reads and advances in place. Their addresses never change,
    so steps can be replayed from a CUDA graph."""

    tok: torch.Tensor  # [B] the last token of each row
    pos: torch.Tensor  # [1] its cache slot
    pads: torch.Tensor  # [B] left-padding slots per row
    finished: torch.Tensor  # [B] bool
    stop_ids: torch.Tensor  # [S]
    out: torch.Tensor  # [B, max_len] generated tokens
    idx: torch.Tensor  # [1] the next column of out (the index of the token being drawn)
    seeds: torch.Tensor | None  # [B] noise seeds of the rows when sampling

    @classmethod
    def allocate(cls, cache: KVCache, stop_ids: torch.Tensor, sampling: bool) -> _StepState:
        b, dev = cache.batch_size, stop_ids.device

        def zeros(*shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=dev)

        seeds = zeros(b) if sampling else None
        out = zeros(b, cache.max_len)
        return cls(
            zeros(b), zeros(1), zeros(b), zeros(b, dtype=torch.bool), stop_ids.clone(), out, zeros(1), seeds
        )


@dataclass
class _Block:
    """Generated tokens [start, end) of every row and the finished flags after them, on the
    host once `ready` (None: already there) has passed."""

    start: int
    end: int
    tokens: torch.Tensor  # [B, end - start]
    finished: torch.Tensor  # [B] bool
    ready: torch.cuda.Event | None


def _advance_by(step: Callable, st: _StepState, k: int) -> None:
    """Step k of a block: `step` maps the state to (next tokens, finished), recorded here."""
    nxt, fin = step(st.tok[:, None], st.pos, st.pads, st.finished, st.stop_ids, st.seeds, st.idx)
    st.tok.copy_(nxt)
    st.finished.copy_(fin)
    st.out.index_copy_(1, st.idx, nxt[:, None])
    st.pos.add_(1)
    st.idx.add_(1)


def _advance_fused_greedy(fused: fused_decode.FusedDecoder, pad_id: int, st: _StepState, k: int) -> None:
    """A greedy step whose kernels advance the state themselves."""
    fused.greedy_step(st.tok, st.pos, st.finished, st.stop_ids, st.out, st.idx, pad_id)


class _StepRunner:
    """Advances a `_StepState` by `steps` tokens per call (`advance(state, k)` for k < steps):
    the steps run directly, or, with `own_graph`, run once and then captured in a CUDA graph
    (all `steps` of them) that every later call replays."""

    def __init__(
        self,
        advance: Callable,
        state: _StepState,
        steps: int,
        own_graph: bool,
        mark_steps: bool,
        fused: fused_decode.FusedDecoder | None = None,
    ) -> None:
        self.advance, self.state, self.steps = advance, state, steps
        self.own_graph, self.mark_steps, self.fused = own_graph, mark_steps, fused
        self.graph: torch.cuda.CUDAGraph | None = None

    def check(self) -> None:
        """Raise if a persistent fused step's grid barrier gave up waiting (its tokens are wrong:
        not every program of the step kernel was running, e.g. another process held the GPU)."""
        if self.fused is not None and self.fused.barrier_timeouts():
            raise RuntimeError(
                "the persistent decode step's grid barrier timed out (programs not all resident); "
                "decode without fused_options={'persistent': True}"
            )

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        for k in range(self.steps):
            if self.mark_steps:  # torch.compile's CUDA graphs: the last replay's outputs are consumed
                torch.compiler.cudagraph_mark_step_begin()
            self.advance(self.state, k)
        if self.own_graph:  # the first call ran eagerly (compiling kernels); capture the next
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                for k in range(self.steps):
                    self.advance(self.state, k)


class Generator:
    """Fast batched sampling from a `Transformer` (see module docstring)."""

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer | None = None,
        *,
        compile: bool = False,
        compile_options: dict | None = None,
        sync_every: int = 16,
        fused: bool | None = None,
        fused_options: dict | None = None,
    ) -> None:
        self.model = model.eval()
        self.fused_options = dict(fused_options or {})  # keyword arguments of `FusedDecoder`
        self.tokenizer = tokenizer
        self.compile = compile
        self.sync_every = max(1, sync_every)
        first = next(model.parameters())
        self.device, self.dtype = first.device, first.dtype
        if fused and not fused_decode.available(self.device):
            raise ValueError(f"fused decoding needs CUDA and Triton; not available on {self.device}")
        # batch-1 decode steps through the fused Triton kernels (default: compiled CUDA runs)
        auto = compile and self.device.type == "cuda" and fused_decode.available(self.device)
        self.fused = auto if fused is None else fused
        narrow = model.config.hidden_size <= NARROW_MAX_WIDTH
        self.compile_options = {
            **DEFAULT_COMPILE_OPTIONS,
            **(NARROW_COMPILE_OPTIONS if narrow else {}),
            **(compile_options or {}),
        }
        if compile:  # one compiled step per (cache shape, sampling settings, model): allow many
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self._cache: KVCache | None = None
        self._steps: dict[tuple, _StepRunner] = {}  # sampling settings -> decode step for this cache

    # ------------------------------------------------------------------ cache
    def _cache_for(self, batch: int, length: int) -> KVCache:
        length = -(-length // CACHE_BUCKET) * CACHE_BUCKET
        cache = self._cache
        if cache is None or cache.batch_size != batch or cache.max_len != length:
            self._cache, self._steps = None, {}  # free the old cache before allocating the new one
            cache = KVCache(self.model.config, batch, length, device=self.device, dtype=self.dtype)
            self._cache = cache
        return cache

    def _fused_for(self, batch: int) -> bool:
        """Whether a batch of this many rows decodes through the fused step."""
        return bool(self.fused) and batch == 1

    def _runner(self, params: SamplingParams, pad_id: int, stop_ids: torch.Tensor) -> _StepRunner:
        """The decode step (compiled, fused or CUDA-graphed as configured) for the current cache,
        sampling settings and stop ids, with its state tensors."""
        key = (
            params.greedy,
            params.temperature,
            params.top_p,
            params.top_k,
            pad_id,
            tuple(stop_ids.tolist()),
        )
        if key in self._steps:
            return self._steps[key]
        cache = self._cache
        fused = (
            fused_decode.FusedDecoder(self.model, cache, **self.fused_options)
            if self._fused_for(cache.batch_size)
            else None
        )
        # A fused step is captured whole in a CUDA graph of our own (one replay per token);
        # otherwise torch.compile's CUDA graphs (mode="reduce-overhead") replay the model.
        own_graph = fused is not None and self.device.type == "cuda"
        if fused is not None and params.greedy:  # argmax and bookkeeping in the fused kernels
            advance = functools.partial(_advance_fused_greedy, fused, pad_id)
        else:
            step: Callable = _DecodeStep(self.model, cache, params, pad_id, fused)
            if self.compile:
                options = {**self.compile_options, "triton.cudagraphs": not own_graph}
                step = torch.compile(step, fullgraph=True, options=options)
            advance = functools.partial(_advance_by, step)
        steps = self.sync_every if fused is not None else 1  # a fused runner: whole blocks of steps
        state = _StepState.allocate(cache, stop_ids, sampling=not params.greedy)
        runner = _StepRunner(advance, state, steps, own_graph, self.compile and not own_graph, fused)
        self._steps[key] = runner
        return runner

    # ------------------------------------------------------------------ steps
    def _prefill(self, ids: torch.Tensor, pads: torch.Tensor, cache: KVCache) -> torch.Tensor:
        width = ids.shape[1]
        slots = torch.arange(width, device=self.device)
        positions = (slots[None, :] - pads[:, None]).clamp(min=0)
        padded = bool(pads.any())
        mask = prefill_mask(pads, width) if padded else None  # None: fused causal attention
        logits = self.model(ids, positions, cache=cache, cache_pos=slots, attn_mask=mask, last_only=True)
        return logits[:, -1]

    # ------------------------------------------------------------------ API
    def _stop_ids(self, params: SamplingParams) -> list[int]:
        if params.stop_token_ids is not None:
            return list(params.stop_token_ids)
        return list(self.model.config.eos_token_id)

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
        rows = [p for p in encoded for _ in range(params.n)]
        longest = max(len(p) for p in rows) + params.max_new_tokens
        if longest > self.model.config.max_position_embeddings:
            raise ValueError(
                f"prompt + max_new_tokens = {longest} exceeds the model context "
                f"({self.model.config.max_position_embeddings})"
            )
        pad_id = self.model.config.pad_token_id or 0
        ids = pad_rows(rows, pad_id, side="left").to(self.device)
        pads = torch.tensor([ids.shape[1] - len(r) for r in rows], dtype=torch.long, device=self.device)
        overshoot = self.sync_every if self._fused_for(len(rows)) else 0  # a fused runner's last block
        cache = self._cache_for(len(rows), longest + overshoot)
        stop_ids = torch.tensor(self._stop_ids(params), dtype=torch.long, device=self.device)
        tokens = self._decode_loop(ids, pads, cache, stop_ids, params, pad_id, stream)
        return self._completions(tokens, len(encoded), params, set(stop_ids.tolist()))

    def _seeds(self, params: SamplingParams, n_prompts: int) -> torch.Tensor | None:
        """Noise seeds [B] of the rows (prompt-major, `n` samples each); None when greedy."""
        if params.greedy:
            return None
        base = resolve_seed(params.seed)
        seeds = [sample_seed(base, i, j) for i in range(n_prompts) for j in range(params.n)]
        return torch.tensor(seeds, dtype=torch.long, device=self.device)

    def _decode_loop(
        self,
        ids: torch.Tensor,
        pads: torch.Tensor,
        cache: KVCache,
        stop_ids: torch.Tensor,
        params: SamplingParams,
        pad_id: int,
        stream: StreamFn | None,
    ) -> list[list[int]]:
        batch, width = ids.shape
        seeds = self._seeds(params, batch // params.n)
        logits = self._prefill(ids, pads, cache)
        noise = None
        if seeds is not None:
            noise = exponential_noise(seeds, torch.zeros_like(seeds), logits.shape[-1])
        tok = select_tokens(logits, params, noise)
        runner = self._runner(params, pad_id, stop_ids)
        st = runner.state
        if seeds is not None:
            st.seeds.copy_(seeds)
        st.tok.copy_(tok)
        st.pos.fill_(width)
        st.pads.copy_(pads)
        st.finished.copy_(torch.isin(tok, stop_ids))
        st.out.fill_(pad_id)
        st.out[:, 0] = tok
        st.idx.fill_(1)
        host: list[list[int]] = [[] for _ in range(batch)]
        host_done = [False] * batch
        stop_set = set(stop_ids.tolist())
        synced, pending = 0, None
        end = params.max_new_tokens
        done = 1  # tokens in st.out; a fused runner may run past `end` (the cache has room)
        # The host reads each block of tokens while the GPU decodes the next one.
        while done < end:
            runner()
            done += runner.steps
            if done - synced >= self.sync_every:
                ready = self._snapshot(st, synced, min(done, end))
                synced = ready.end
                if pending is not None and self._sync(
                    pending, host, host_done, st.finished, params, stop_set, stream
                ):
                    pending = None
                    break
                pending = ready
        for block in (pending, self._snapshot(st, synced, end) if end > synced else None):
            if block is not None:
                self._sync(block, host, host_done, st.finished, params, stop_set, stream)
        runner.check()
        return host

    def _snapshot(self, st: _StepState, start: int, end: int) -> _Block:
        """Tokens [start, end) and the finished flags as they stand after the steps queued so
        far, copied to the host without waiting for them."""
        if self.device.type != "cuda":
            return _Block(start, end, st.out[:, start:end].clone(), st.finished.clone(), None)
        tokens = st.out[:, start:end].to("cpu", non_blocking=True)
        finished = st.finished.to("cpu", non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return _Block(start, end, tokens, finished, ready)

    def _sync(
        self,
        block: _Block,
        host: list[list[int]],
        host_done: list[bool],
        finished: torch.Tensor,
        params: SamplingParams,
        stop_ids: set[int],
        stream: StreamFn | None,
    ) -> bool:
        """Append a block's tokens of unfinished rows to `host`, stream them, apply stop
        strings (flagging the rows in `finished` on the device); True once every row is done.

        A row stops collecting once it has finished, so the padding decoded after its end is
        never kept (padding after a stop token within the same block is cut later)."""
        if block.ready is not None:
            block.ready.synchronize()
        done = block.finished.tolist()
        for row, new in enumerate(block.tokens.tolist()):
            if host_done[row]:
                continue
            cut = next((i + 1 for i, t in enumerate(new) if t in stop_ids), None)
            new = new[:cut]  # the row produced only padding after its stop token
            host[row].extend(new)
            if stream is not None:
                stream(row // params.n, row % params.n, new)
            if not done[row] and params.stop_strings and self._has_stop_string(host[row], params):
                finished[row] = done[row] = True
            host_done[row] = done[row]
        return all(done)

    def _has_stop_string(self, ids: list[int], params: SamplingParams) -> bool:
        if self.tokenizer is None:
            raise ValueError("stop_strings need a tokenizer")
        return first_stop(self.tokenizer.decode(ids), params.stop_strings) is not None

    def _completions(
        self, host: list[list[int]], n_prompts: int, params: SamplingParams, stop_ids: set[int]
    ) -> list[list[Completion]]:
        result: list[list[Completion]] = [[] for _ in range(n_prompts)]
        for row, ids in enumerate(host):
            prompt, sample = divmod(row, params.n)
            result[prompt].append(make_completion(prompt, sample, ids, self.tokenizer, params, stop_ids))
        return result


def encode_prompts(
    prompts: Sequence[str] | Sequence[Sequence[int]], tokenizer: Tokenizer | None
) -> list[list[int]]:
    """Prompt ids for every engine's `generate`: texts are BOS + their tokens, id lists are
    taken as they are; an empty list of prompts or an empty prompt is a ValueError."""
    if not prompts:
        raise ValueError("generate() needs at least one prompt")
    if isinstance(prompts[0], str):
        if tokenizer is None:
            raise ValueError("text prompts need a tokenizer; pass token ids or a tokenizer")
        return [tokenizer.encode(p, bos=True) for p in prompts]  # type: ignore[arg-type]
    out = [list(p) for p in prompts]  # type: ignore[arg-type]
    empty = next((i for i, p in enumerate(out) if not p), None)
    if empty is not None:
        raise ValueError(f"prompt {empty} is empty")
    return out


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index where the earliest stop string starts in `text`, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def make_completion(
    prompt_index: int,
    sample_index: int,
    ids: list[int],
    tokenizer: Tokenizer | None,
    params: SamplingParams,
    stop_ids: set[int],
) -> Completion:
    """A sample's ids cut after its first stop token, and its text (without the stop token) cut
    before the first stop string, its ids then cut after the token that completed that string;
    finish_reason "stop" if either ended it, else "length"."""
    cut = next((i + 1 for i, t in enumerate(ids) if t in stop_ids), None)
    reason = "stop" if cut is not None else "length"
    ids = ids[:cut] if cut is not None else ids
    text = None
    if tokenizer is not None:
        text = tokenizer.decode(ids[:-1] if cut is not None else ids)
        stop_at = first_stop(text, params.stop_strings)
        if stop_at is not None:
            text, reason = text[:stop_at], "stop"
            ids = ids[: _tokens_to_stop_string(ids, tokenizer, params.stop_strings)]
    return Completion(prompt_index, sample_index, ids, text, reason)


def _tokens_to_stop_string(ids: list[int], tokenizer: Tokenizer, stops: Sequence[str]) -> int:
    """The fewest leading ids whose text contains a stop string (binary search: a longer
    prefix's text extends a shorter one's)."""
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if first_stop(tokenizer.decode(ids[:mid]), stops) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo
