"""Continuous batching: requests join and leave the running batch at every step.

Keys and values live in a paged cache (`paged_cache.py`): blocks of `block_size` tokens from
one pool, a block table per sample, so memory follows the tokens in flight.

What one `step()` runs:
  1. aborts requested since the last step: the request's samples stop ("abort" events) and
     its blocks return to the free list;
  2. decode: a window of `decode_steps` steps (fewer when a sample would pass the model's
     context); each is one forward over [running, 1] whose picked tokens feed the next step
     on the device, and the host reads the window's tokens once at its end (tokens a sample
     draws after its stop or its `max_new_tokens` are dropped). Every sample first gets the
     blocks the window's tokens open. When the pool has too few free blocks, the newest work
     gives its blocks back until the rest fit: first a prefill in progress, then the samples
     admitted last (preemption). A preempted sample goes back to
     the front of the queue and later recomputes its prompt + generated tokens (one prefill),
     so its tokens do not change;
  3. prefill: up to `prefill_chunk` prompt tokens (padding included; default 4,096 on a GPU,
     512 on CPU) from the head of the FIFO queue, in one left-padded forward: the next chunk
     of the first prompt, then whole prompts that fit, so a long prompt never stalls the
     running decodes for more than a chunk (a preempted sample's prefill is its prompt +
     generated tokens). A job is admitted only in queue order, when the decode batch has room
     for its samples (`max_batch`) and the pool has its blocks while keeping one spare block
     per running sample. When its last chunk is
     in, its samples draw their first tokens and join the decode batch.
Prefix sharing: the prompt of an n-sample request is prefilled once; its n samples share the
prompt's full blocks (reference counts) and each gets its own copy of the partial last block,
so they never write into a shared block.

Tokens are picked with `select_tokens` (greedy, temperature, top-k, top-p) and the counter-based
noise of `exponential_noise` seeded per sample (`sample_seed`), so the tokens do not depend on
which requests share a step: they equal the static `Generator`'s for the same prompts and
`SamplingParams`. Stop ids, stop strings and `max_new_tokens` end a sample exactly as
`make_completion` cuts it.

A sample's noise seed is `sample_seed(params.seed, request.prompt_index, sample_index)`, and
`generate()` numbers its prompts like the static Generator, so one seed gives the same samples
in both (params.seed None: a fresh seed per request).

On CUDA, decode steps attend through the paged Triton kernel (`paged_attention.py`), which reads
each row's blocks in place and only up to its length; their block tables are padded to one fixed
width (the blocks of a full-context sample), so a decode step's shapes vary with its rows only.
Elsewhere decode attention gathers the blocks into a dense copy (`paged_decode` chooses).
The pool holds what attention sees: the autocast dtype when the engine is built inside
`torch.autocast` (a bf16 rollout of an fp32 policy, as GRPO's), else the parameters' dtype.

`compile=True` compiles the decode forward with CUDA graphs (as the static Generator does), the
batch padded to a power of two rows (and, on the gather path, the block tables to a power of two
blocks) so graphs are reused: with the paged kernel, one graph per rows bucket. Prefills (varying
shapes) and token selection run eagerly. The host builds each step's tables and reads its tokens
back (one sync per step), so stops are seen at once.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..model.model import Transformer
from .generate import (
    DEFAULT_COMPILE_OPTIONS,
    Completion,
    StreamFn,
    encode_prompts,
    first_stop,
    make_completion,
)
from .paged_cache import (
    NULL_BLOCK,
    BlockAllocator,
    PagedForward,
    PagedKVCache,
    StepRows,
    blocks_for,
    pad_tables,
    pow2,
)
from .sampling import RowSampler, SamplingParams, TopLogprobs, resolve_seed, sample_seed

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

CPU_KV_BUDGET = 4 << 30  # default pool bytes on CPU
GPU_DECODE_STEPS = 8  # decode steps queued per host sync on a GPU (`decode_steps`)
# prompt tokens per step (`prefill_chunk`): on a GPU a sub-billion model's forward over 4,096
# tokens costs little more than over 512, and admission is what fills the decode batch (an
# H100 serving 128 clients with 512-token chunks decoded ~130 tokens a step, its prompts waiting)
GPU_PREFILL_CHUNK = 4096
CPU_PREFILL_CHUNK = 512
GPU_KV_FRACTION = 0.9  # default pool on a GPU: this share of the free device memory


@dataclass
class EngineRequest:
    """One prompt to continue `params.n` times. `prompt_index` is mixed into the samples' noise
    seeds (`generate()` numbers its prompts, as the static Generator does)."""

    id: str
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    prompt_index: int = 0


@dataclass
class TokenLogprob:
    """A generated token's log-probability under the model and the k most likely tokens'."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), most likely first


@dataclass
class TokenEvent:
    """What one step produced for one sample."""

    request_id: str
    sample_index: int
    token_ids: list[int]  # new ids this step (a stop token included)
    logprobs: list[TokenLogprob] | None  # per new id when params.logprobs is set
    finish_reason: str | None  # None while running; "stop" | "length" | "abort"
    text: str | None  # the final text (stop strings cut) once finished, with a tokenizer


@dataclass
class EngineStats:
    running: int  # samples in the decode batch
    waiting: int  # prefills queued: new requests and preempted samples
    blocks_used: int
    blocks_free: int
    tokens_generated: int
    prefill_tokens: int  # prompt (and recomputed) tokens written by prefills
    preemptions: int  # samples preempted so far
    steps: int


@dataclass(eq=False)
class _Request:
    request: EngineRequest
    stop_ids: frozenset[int]
    samples: list[_Sample] = field(default_factory=list)
    aborted: bool = False


@dataclass(eq=False)
class _Sample:
    request: _Request
    index: int
    seed: int
    generated: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    admitted: int = 0  # when its prefill completed: the newest is preempted first
    finished: bool = False

    @property
    def length(self) -> int:
        """Tokens in the sequence; the cache holds all but the last."""
        return len(self.request.request.prompt_ids) + len(self.generated)


@dataclass(eq=False)
class _Job:
    """A prefill: write `tokens` into fresh blocks, then `samples` continue from them."""

    request: _Request
    samples: list[_Sample]
    tokens: list[int]
    blocks: list[int] = field(default_factory=list)
    done: int = 0  # tokens already written


def kv_dtype(model: Transformer) -> torch.dtype:
    """The dtype of the keys and values `model` computes here: the autocast dtype inside
    `torch.autocast` for its device, else its parameters' dtype."""
    first = next(model.parameters())
    kind = first.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return first.dtype


class BatchingEngine:
    """Continuous-batching generation from a `Transformer` (see the module docstring)."""

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer | None = None,
        *,
        max_batch: int = 256,
        block_size: int = 16,
        kv_budget_bytes: int | None = None,
        prefill_chunk: int | None = None,
        compile: bool = False,
        decode_steps: int | None = None,
        paged_decode: bool | None = None,
    ) -> None:
        first = next(model.parameters())
        on_gpu = first.device.type == "cuda"
        if decode_steps is None:
            decode_steps = GPU_DECODE_STEPS if on_gpu else 1
        if prefill_chunk is None:
            prefill_chunk = GPU_PREFILL_CHUNK if on_gpu else CPU_PREFILL_CHUNK
        for name, value in (
            ("max_batch", max_batch),
            ("block_size", block_size),
            ("prefill_chunk", prefill_chunk),
            ("decode_steps", decode_steps),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if decode_steps > block_size:
            raise ValueError(f"decode_steps ({decode_steps}) must not exceed block_size ({block_size})")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_batch, self.block_size, self.prefill_chunk = max_batch, block_size, prefill_chunk
        self.decode_steps = decode_steps
        self.device, cfg = first.device, model.config
        dtype = kv_dtype(model)
        self.num_blocks = self._pool_blocks(kv_budget_bytes, dtype)
        self.cache = PagedKVCache(
            cfg, self.num_blocks, block_size, device=self.device, dtype=dtype, paged_decode=paged_decode
        )
        self.allocator = BlockAllocator(self.num_blocks)
        self.context = cfg.max_position_embeddings
        self.decode_width = blocks_for(self.context, block_size)  # paged-kernel tables
        self.compile = compile
        self._forward = PagedForward(self.model, self.cache)  # prefills (shapes vary: eager)
        self._decode_step = self._forward.decode
        if compile:  # one graph per power-of-two rows bucket (and blocks bucket on the gather path)
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self._decode_step = torch.compile(
                self._forward.decode, fullgraph=True, options=DEFAULT_COMPILE_OPTIONS
            )
        self.requests: dict[str, _Request] = {}
        self.waiting: deque[_Job] = deque()
        self.running: list[_Sample] = []
        self._admissions = itertools.count(1)
        self._counts = dict(tokens_generated=0, prefill_tokens=0, preemptions=0, steps=0)

    @torch.inference_mode()
    def warmup(self) -> None:
        """Compile and capture the decode step for every rows bucket (1, 2, 4, ... up to
        `max_batch`) now, on padding rows, so that no request waits for a compile later (a
        server calls this before it answers). Without `compile` there is nothing to build; on
        the gather path the tables' width varies too, and only the paged kernel's is fixed."""
        if not (self.compile and self.cache.paged_decode):
            return
        rows = 1
        while True:
            tokens = torch.zeros(rows, dtype=torch.long, device=self.device)
            positions = torch.zeros_like(tokens)
            tables = pad_tables([[]] * rows, True, self.decode_width).to(self.device)
            for _ in range(3):  # CUDA graph trees: a warm-up run, the capture, a replay
                torch.compiler.cudagraph_mark_step_begin()
                self._decode_step(tokens, positions, tables)
            if rows >= self.max_batch:
                return
            rows *= 2

    def _pool_blocks(self, budget: int | None, dtype: torch.dtype) -> int:
        """Blocks in the pool: `budget` bytes' worth (default: most of the free GPU memory, or
        CPU_KV_BUDGET), at most enough for `max_batch` full-context samples."""
        per_block = PagedKVCache.block_bytes(self.model.config, self.block_size, dtype)
        if budget is None:
            budget = CPU_KV_BUDGET
            if self.device.type == "cuda":
                budget = int(torch.cuda.mem_get_info(self.device)[0] * GPU_KV_FRACTION)
        ceiling = self.max_batch * blocks_for(self.model.config.max_position_embeddings, self.block_size)
        blocks = min(budget // per_block, ceiling)
        if blocks < 1:
            raise ValueError(f"kv_budget_bytes={budget} holds no block ({per_block} bytes each)")
        return blocks

    # ------------------------------------------------------------------ requests
    def add(self, request: EngineRequest) -> None:
        """Queue a request (FIFO). Raises ValueError naming the bad field."""
        self._check(request)
        params = request.params
        state = _Request(request, self._stop_ids(params))
        base = resolve_seed(params.seed)
        state.samples = [
            _Sample(state, j, 0 if params.greedy else sample_seed(base, request.prompt_index, j))
            for j in range(params.n)
        ]
        self.requests[request.id] = state
        self.waiting.append(_Job(state, list(state.samples), list(request.prompt_ids)))

    def _check(self, request: EngineRequest) -> None:
        """Raise ValueError naming the first bad field of a request."""
        cfg, params, prompt = self.model.config, request.params, request.prompt_ids
        if not isinstance(request.id, str) or not request.id:
            raise ValueError(f"id must be a non-empty string, got {request.id!r}")
        if request.id in self.requests:
            raise ValueError(f"id {request.id!r} is already in the engine")
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")
        if not prompt:
            raise ValueError(f"prompt_ids of request {request.id!r} is empty")
        if any(not isinstance(t, int) or not 0 <= t < cfg.vocab_size for t in prompt):
            raise ValueError(
                f"prompt_ids of request {request.id!r}: ids must be ints in [0, {cfg.vocab_size})"
            )
        total = len(prompt) + params.max_new_tokens
        if total > cfg.max_position_embeddings:
            raise ValueError(
                f"prompt_ids + params.max_new_tokens = {total} exceeds the model context "
                f"({cfg.max_position_embeddings})"
            )
        if params.n > self.max_batch:
            raise ValueError(f"params.n = {params.n} exceeds max_batch ({self.max_batch})")
        if params.stop_strings and self.tokenizer is None:
            raise ValueError("params.stop_strings need a tokenizer")
        if params.logprobs is not None and params.logprobs > cfg.vocab_size:
            raise ValueError(f"params.logprobs = {params.logprobs} exceeds the vocabulary ({cfg.vocab_size})")
        copies = params.n - 1 if len(prompt) % self.block_size else 0
        need = max(blocks_for(total - 1, self.block_size), blocks_for(len(prompt), self.block_size) + copies)
        if need > self.num_blocks:
            raise ValueError(
                f"request {request.id!r} needs {need} KV blocks, the pool has {self.num_blocks}: "
                "raise kv_budget_bytes"
            )

    def _stop_ids(self, params: SamplingParams) -> frozenset[int]:
        """The ids that end a sample: `params.stop_token_ids`, or the model's eos ids."""
        stops = params.stop_token_ids
        return frozenset(self.model.config.eos_token_id if stops is None else stops)

    def abort(self, request_id: str) -> None:
        """Stop a request at the next step (its blocks are freed then); unknown ids are ignored."""
        if request_id in self.requests:
            self.requests[request_id].aborted = True

    def has_work(self) -> bool:
        return bool(self.requests)

    @property
    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self.running),
            waiting=len(self.waiting),
            blocks_used=self.allocator.num_used,
            blocks_free=self.allocator.num_free,
            **self._counts,
        )

    # ------------------------------------------------------------------ the step
    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """One scheduler iteration: aborts, a window of decode steps for every running sample,
        then one prefill chunk. The events of every sample that advanced or finished."""
        self._counts["steps"] += 1
        events = self._reap_aborts()
        if self.running:
            events += self._decode()
        return events + self._prefill()

    def _reap_aborts(self) -> list[TokenEvent]:
        aborted = {s for s in self.requests.values() if s.aborted}
        if not aborted:
            return []
        for job in [j for j in self.waiting if j.request in aborted]:
            self.waiting.remove(job)
            self.allocator.release(job.blocks)
        return [
            self._finish(sample, "abort", [], None)
            for state in aborted
            for sample in state.samples
            if not sample.finished
        ]

    def _decode(self) -> list[TokenEvent]:
        """A window of decode steps for every running sample, queued on the device back to
        back (each step's tokens feed the next without a host round trip), then one sync."""
        steps = self._window()
        self._make_room(steps)
        rows = list(self.running)
        pad = pow2(len(rows)) - len(rows) if self.compile else 0  # reuse compiled graphs
        # padding rows: token 0 from position 0 on, written into the null block
        tokens = torch.tensor([s.generated[-1] for s in rows] + [0] * pad, device=self.device)
        first = torch.tensor([s.length - 1 for s in rows] + [0] * pad, device=self.device)
        width = self.decode_width if self.cache.paged_decode else None
        tables = pad_tables([s.blocks for s in rows] + [[]] * pad, self.compile, width).to(self.device)
        sampler = self._sampler(rows)
        picked = []
        for step in range(steps):
            if self.compile:
                torch.compiler.cudagraph_mark_step_begin()  # the last replay's outputs are consumed
            logits = self._decode_step(tokens, first + step, tables)[: len(rows)].float()
            picked.append(sampler(logits, step))
            tokens = torch.cat([picked[-1], tokens[len(rows) :]]) if pad else picked[-1]
        return self._emit(rows, torch.stack(picked, dim=1).tolist(), sampler)

    def _window(self) -> int:
        """Decode steps in this window: `decode_steps`, fewer only when a sample would step
        past the model's context. A sample that meets its `max_new_tokens` (or a stop) inside
        the window ends there and its later tokens are dropped, so one short request does not
        shrink every other row's window (a bound by the smallest `max_new_tokens` left cut
        windows to 1-2 steps once ~100 requests of mixed lengths ran together)."""
        room = min(self.context - s.length + 1 for s in self.running)  # positions left to write
        return max(1, min(self.decode_steps, room))

    def _make_room(self, steps: int) -> None:
        """Give every running sample the blocks its next `steps` tokens need, preempting the
        newest work while the pool is short."""
        while True:
            need = [
                max(0, blocks_for(s.length - 1 + steps, self.block_size) - len(s.blocks))
                for s in self.running
            ]
            if sum(need) <= self.allocator.num_free:
                for s, n in zip(self.running, need, strict=True):
                    s.blocks += self.allocator.allocate(n)
                return
            started = next((j for j in self.waiting if j.blocks), None)
            if started is not None:  # a prefill in progress: restart it later
                self.allocator.release(started.blocks)
                started.blocks, started.done = [], 0
                continue
            self._preempt(max(self.running, key=lambda s: (s.admitted, s.index)))

    def _preempt(self, sample: _Sample) -> None:
        """Free a running sample's blocks; it re-enters at the queue's front to recompute."""
        self.running.remove(sample)
        self.allocator.release(sample.blocks)
        sample.blocks = []
        tokens = list(sample.request.request.prompt_ids) + sample.generated
        self.waiting.appendleft(_Job(sample.request, [sample], tokens))
        self._counts["preemptions"] += 1

    def _prefill(self) -> list[TokenEvent]:
        """Write up to `prefill_chunk` queued tokens; start the samples of finished prefills."""
        plan, width = [], 0
        batch = len(self.running)
        free = self.allocator.num_free - len(self.running)  # one spare block per running sample
        for job in self.waiting:
            rest = len(job.tokens) - job.done
            take = rest if plan else min(rest, self.prefill_chunk)  # only the first one is chunked
            if plan and (len(plan) + 1) * max(width, take) > self.prefill_chunk:
                break  # the padded batch would pass the chunk
            end = job.done + take
            copies = len(job.samples) - 1 if end == len(job.tokens) and end % self.block_size else 0
            need = blocks_for(end, self.block_size) - len(job.blocks) + copies
            if batch + len(job.samples) > self.max_batch or need > free:
                break
            plan.append((job, end))
            width, batch, free = max(width, take), batch + len(job.samples), free - need
        if not plan:
            return []
        for job, end in plan:
            job.blocks += self.allocator.allocate(blocks_for(end, self.block_size) - len(job.blocks))
        logits = self._run_prefill(plan)
        events = []
        for (job, end), row in zip(plan, logits, strict=True):
            self._counts["prefill_tokens"] += end - job.done
            job.done = end
            if end == len(job.tokens):
                self.waiting.remove(job)
                self._fork(job)
                sampler = self._sampler(job.samples)
                picked = sampler(row.expand(len(job.samples), -1), 0)
                events += self._emit(job.samples, [[t] for t in picked.tolist()], sampler)
        return events

    def _run_prefill(self, plan: list[tuple[_Job, int]]) -> torch.Tensor:
        """One left-padded forward over the planned chunks -> logits [jobs, V] after each.
        Padding queries see their row's slot 0 only and write into the null block."""
        width, bs = max(end - job.done for job, end in plan), self.block_size
        rows = StepRows([], [], [], [], [], [])
        for job, end in plan:
            pad = width - (end - job.done)
            span = range(job.done, end)
            rows.tokens.append([0] * pad + job.tokens[job.done : end])
            rows.positions.append([0] * pad + list(span))
            rows.write_blocks.append([NULL_BLOCK] * pad + [job.blocks[p // bs] for p in span])
            rows.write_slots.append([0] * pad + [p % bs for p in span])
            rows.tables.append(job.blocks)
            rows.visible.append([0] * pad + list(span))
        return self._forward(*rows.tensors(self.block_size, self.device)).float()

    def _fork(self, job: _Job) -> None:
        """The samples of a finished prefill take its blocks: the full ones shared, the
        partial last one copied for all but the first; they join the decode batch."""
        full = len(job.tokens) // self.block_size
        shared, partial = job.blocks[:full], job.blocks[full:]
        admitted = next(self._admissions)
        for i, sample in enumerate(job.samples):
            own = partial
            if i > 0:
                self.allocator.share(shared)
                if partial:
                    own = self.allocator.allocate(1)
                    self.cache.copy_block(partial[0], own[0])
            sample.blocks, sample.admitted = shared + own, admitted
            self.running.append(sample)

    # ------------------------------------------------------------------ tokens and events
    def _sampler(self, samples: list[_Sample]) -> RowSampler:
        params = [s.request.request.params for s in samples]
        steps = [len(s.generated) for s in samples]
        return RowSampler(params, [s.seed for s in samples], steps, self.device)

    def _emit(self, samples: list[_Sample], picked: list[list[int]], sampler: RowSampler) -> list[TokenEvent]:
        """Record each sample's picked tokens (picked[i]: one per step of the window) up to the
        first that finishes it; one event per sample. Tokens after a finish are dropped."""
        top = sampler.logprobs()
        events = []
        for i, (sample, tokens) in enumerate(zip(samples, picked, strict=True)):
            new, reason = [], None
            for tok in tokens:
                sample.generated.append(tok)
                new.append(tok)
                reason = self._finish_reason(sample, tok)
                if reason is not None:
                    break
            self._counts["tokens_generated"] += len(new)
            k = sample.request.request.params.logprobs
            lp = None if k is None else [self._logprob(top, i, step, tok, k) for step, tok in enumerate(new)]
            if reason is None:
                events.append(self._event(sample.request, sample.index, new, lp, None, None))
            else:
                events.append(self._finish(sample, reason, new, lp))
        return events

    @staticmethod
    def _logprob(top: TopLogprobs, row: int, step: int, token: int, k: int) -> TokenLogprob:
        pairs = zip(top.ids[step][row][:k], top.values[step][row][:k], strict=True)
        return TokenLogprob(token, top.chosen[step][row], list(pairs))

    def _finish_reason(self, sample: _Sample, token: int) -> str | None:
        state = sample.request
        params = state.request.params
        if token in state.stop_ids:
            return "stop"
        if params.stop_strings:
            tail = 4 * max(len(s) for s in params.stop_strings) + 4  # tokens that can hold one
            if first_stop(self.tokenizer.decode(sample.generated[-tail:]), params.stop_strings) is not None:
                return "stop"
        return "length" if len(sample.generated) == params.max_new_tokens else None

    def _finish(self, sample: _Sample, reason: str, new: list[int], lp: list | None) -> TokenEvent:
        """Retire a sample (running, or queued when aborted): its blocks go back to the pool;
        the request ends with its last sample."""
        state = sample.request
        if sample in self.running:
            self.running.remove(sample)
        self.allocator.release(sample.blocks)
        sample.blocks, sample.finished = [], True
        if all(s.finished for s in state.samples):
            del self.requests[state.request.id]
        return self._event(state, sample.index, new, lp, reason, self._text(state, sample.generated))

    def _text(self, state: _Request, ids: list[int]) -> str | None:
        if self.tokenizer is None:
            return None
        request = state.request
        return make_completion(
            request.prompt_index, 0, ids, self.tokenizer, request.params, set(state.stop_ids)
        ).text

    @staticmethod
    def _event(state: _Request, index: int, new: list[int], lp, reason: str | None, text) -> TokenEvent:
        return TokenEvent(state.request.id, index, new, lp, reason, text)

    # ------------------------------------------------------------------ offline interface
    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams | None = None,
        stream: StreamFn | None = None,
    ) -> list[list[Completion]]:
        """`Generator.generate`'s interface: continue every prompt `params.n` times ->
        completions[prompt][sample] (the same tokens as the static Generator). It runs the
        engine until these requests finish, so it needs an idle engine."""
        if self.has_work():
            raise ValueError("generate() needs an idle engine; this one has requests in flight")
        params = params or SamplingParams()
        encoded = encode_prompts(prompts, self.tokenizer)
        seeded = dataclasses.replace(params, seed=resolve_seed(params.seed))
        requests = [EngineRequest(f"generate-{i}", ids, seeded, i) for i, ids in enumerate(encoded)]
        for r in requests:
            self._check(r)
        for r in requests:
            self.add(r)
        index = {r.id: r.prompt_index for r in requests}
        ids: dict[tuple[int, int], list[int]] = {(i, j): [] for i in index.values() for j in range(params.n)}
        while self.has_work():
            for event in self.step():
                key = (index[event.request_id], event.sample_index)
                ids[key] += event.token_ids
                if stream is not None and event.token_ids:
                    stream(*key, event.token_ids)
        stop_ids = set(self._stop_ids(params))
        return [
            [make_completion(i, j, ids[i, j], self.tokenizer, params, stop_ids) for j in range(params.n)]
            for i in range(len(encoded))
        ]
