"""BatchingEngine (continuous batching over a paged KV cache): the same tokens as the static
Generator with staggered arrivals, chunked prefill, prefix sharing, stopping, streaming, aborts,
memory accounting, preemption, validation and logprobs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import VOCAB, prompts_of, small_config
from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.deploy.batching import BatchingEngine, EngineRequest, TokenEvent
from mobilellm_r1.deploy.paged_cache import BlockAllocator, PagedKVCache, blocks_for
from mobilellm_r1.model import build_model

GREEDY = SamplingParams(max_new_tokens=20, stop_token_ids=())
SAMPLED = SamplingParams(
    max_new_tokens=20, temperature=0.9, top_p=0.9, top_k=50, n=3, seed=11, stop_token_ids=()
)
# one decode step per host sync (the CPU default), and windows of 3 queued steps (as on a GPU)
WINDOWS = pytest.mark.parametrize("steps", [1, 3], ids=["step1", "window3"])


def run(engine: BatchingEngine, arrivals: dict[int, list[EngineRequest]], observe=None):
    """Step the engine, adding arrivals[k] before step k, until it is idle: the events of each
    (request id, sample index) in order. `observe(engine, events)` runs after every step."""
    events: dict[tuple[str, int], list[TokenEvent]] = {}
    k = 0
    while engine.has_work() or any(step >= k for step in arrivals):
        for request in arrivals.get(k, []):
            engine.add(request)
        step_events = engine.step()
        for e in step_events:
            events.setdefault((e.request_id, e.sample_index), []).append(e)
        if observe is not None:
            observe(engine, step_events)
        k += 1
    return events


def ids_of(events: list[TokenEvent]) -> list[int]:
    return [t for e in events for t in e.token_ids]


def static_ids(model, prompts, params, tokenizer=None) -> list[list[list[int]]]:
    return [[c.token_ids for c in row] for row in Generator(model, tokenizer).generate(prompts, params)]


# ------------------------------------------------------------------ equality with the static Generator
@WINDOWS
@pytest.mark.parametrize("params", [dataclasses.replace(GREEDY, n=2), SAMPLED], ids=["greedy", "seeded"])
def test_staggered_arrivals_match_the_static_generator(model, params, steps) -> None:
    """Requests added at different steps, a 70-token prompt prefilled in 16-token chunks while
    others decode: every sample's tokens equal the static Generator's for the same prompts."""
    prompts = prompts_of([5, 70, 13, 3, 41], seed=2)
    want = static_ids(model, prompts, params)
    requests = [EngineRequest(f"r{i}", p, params, prompt_index=i) for i, p in enumerate(prompts)]
    engine = BatchingEngine(model, block_size=8, prefill_chunk=16, decode_steps=steps)
    chunked_while_decoding = []

    def observe(engine, events):
        partial = any(0 < job.done < len(job.tokens) for job in engine.waiting)
        chunked_while_decoding.append(partial and engine.stats.running > 0)

    events = run(engine, {0: requests[:2], 3: requests[2:4], 5: requests[4:]}, observe)
    got = [[ids_of(events[f"r{i}", j]) for j in range(params.n)] for i in range(len(prompts))]
    assert got == want
    assert any(chunked_while_decoding)
    stats = engine.stats
    assert stats.prefill_tokens == sum(map(len, prompts))  # each prompt once, whatever n
    assert stats.tokens_generated == len(prompts) * params.n * params.max_new_tokens
    assert (stats.running, stats.waiting, stats.blocks_used) == (0, 0, 0)


def test_generate_matches_the_static_generator(model) -> None:
    prompts = prompts_of([4, 9, 30], seed=1)
    engine = BatchingEngine(model, block_size=4, prefill_chunk=8)
    for params in (GREEDY, SAMPLED):
        got = [[c.token_ids for c in row] for row in engine.generate(prompts, params)]
        assert got == static_ids(model, prompts, params)
    other = engine.generate(prompts, dataclasses.replace(SAMPLED, seed=12))
    assert [[c.token_ids for c in row] for row in other] != static_ids(model, prompts, SAMPLED)


def test_seeds_give_independent_samples(model) -> None:
    (prompt,) = prompts_of([6], seed=4)
    engine = BatchingEngine(model, block_size=8)
    a = engine.generate([prompt], SAMPLED)[0]
    b = engine.generate([prompt], dataclasses.replace(SAMPLED, seed=99))[0]
    assert len({tuple(c.token_ids) for c in a}) == 3  # the n samples differ
    assert [c.token_ids for c in a] != [c.token_ids for c in b]
    unseeded = dataclasses.replace(SAMPLED, seed=None, n=1)
    assert engine.generate([prompt], unseeded) != engine.generate([prompt], unseeded)


# ------------------------------------------------------------------ stopping and streaming
@WINDOWS
def test_stop_ids_and_max_tokens(model, steps) -> None:
    prompts = prompts_of([5, 8], seed=5)
    ref = static_ids(model, prompts, GREEDY)
    stop = ref[0][0][3]
    params = dataclasses.replace(GREEDY, stop_token_ids=(stop,), n=2)
    engine = BatchingEngine(model, block_size=4, decode_steps=steps)
    events = run(engine, {0: [EngineRequest(f"r{i}", p, params) for i, p in enumerate(prompts)]})
    for i in range(2):
        for j in range(2):
            evs = events[f"r{i}", j]
            full = ref[i][0]
            cut = full.index(stop) + 1 if stop in full else len(full)
            assert ids_of(evs) == full[:cut]
            assert [e.finish_reason for e in evs] == [None] * (len(evs) - 1) + [
                "stop" if stop in full else "length"
            ]
            assert all(1 <= len(e.token_ids) <= steps and e.text is None and e.logprobs is None for e in evs)


@WINDOWS
def test_stop_strings_and_text_follow_make_completion(big_vocab_model, tokenizer, steps) -> None:
    prompt = tokenizer.encode("The capital of France is", bos=True)
    free = Generator(big_vocab_model, tokenizer).generate([prompt], SamplingParams(max_new_tokens=24))[0][0]
    stop = tokenizer.decode(free.token_ids[4:6])
    params = SamplingParams(max_new_tokens=24, stop_strings=("@@never@@", stop), n=2)
    want = Generator(big_vocab_model, tokenizer, sync_every=1).generate([prompt], params)[0]
    engine = BatchingEngine(big_vocab_model, tokenizer, block_size=4, decode_steps=steps)
    streamed: dict[tuple[int, int], list[int]] = {}
    got = engine.generate(
        [prompt], params, stream=lambda i, j, new: streamed.setdefault((i, j), []).extend(new)
    )[0]
    assert [(c.token_ids, c.text, c.finish_reason) for c in got] == [
        (c.token_ids, c.text, c.finish_reason) for c in want
    ]
    assert got[0].finish_reason == "stop" and stop not in got[0].text
    assert streamed == {(0, j): got[j].token_ids for j in range(2)}  # stopped right at the stop string
    # the request interface: the final event carries the cut text
    events = run(engine, {0: [EngineRequest("s", prompt, params)]})
    last = events["s", 0][-1]
    assert (last.finish_reason, last.text) == ("stop", got[0].text)
    # text prompts go through the tokenizer, as in the Generator
    text_params = SamplingParams(max_new_tokens=6)
    got_text = engine.generate(["def fib(n):"], text_params)[0][0]
    want_text = Generator(big_vocab_model, tokenizer).generate(["def fib(n):"], text_params)[0][0]
    assert (got_text.token_ids, got_text.text) == (want_text.token_ids, want_text.text)


def test_abort_frees_blocks(model) -> None:
    prompts = prompts_of([9, 12, 6], seed=6)
    params = dataclasses.replace(GREEDY, max_new_tokens=40, n=2)
    engine = BatchingEngine(model, block_size=4, max_batch=4)  # the third request must wait
    for i, p in enumerate(prompts):
        engine.add(EngineRequest(f"r{i}", p, params))
    for _ in range(5):
        engine.step()
    assert engine.stats.running == 4 and engine.stats.waiting == 1
    used = engine.stats.blocks_used
    engine.abort("r1")
    engine.abort("r2")  # still queued
    engine.abort("unknown")
    events = engine.step()
    aborted = sorted((e.request_id, e.sample_index) for e in events if e.finish_reason == "abort")
    assert aborted == [("r1", 0), ("r1", 1), ("r2", 0), ("r2", 1)]
    assert engine.stats.blocks_used < used
    assert engine.stats.running == 2 and engine.stats.waiting == 0
    rest = run(engine, {})
    assert all(len(ids_of(rest["r0", j])) == 40 - 6 for j in range(2))
    assert engine.stats.blocks_used == 0 and not engine.has_work()


# ------------------------------------------------------------------ memory
def test_prefix_sharing(model) -> None:
    """An n=4 request: its 21-token prompt is prefilled once; the samples share its two full
    blocks and each owns a copy of the partial third."""
    (prompt,) = prompts_of([21], seed=7)
    params = dataclasses.replace(SAMPLED, n=4, max_new_tokens=3)
    engine = BatchingEngine(model, block_size=8)
    engine.add(EngineRequest("r", prompt, params))
    first = [e.token_ids for e in engine.step()]
    stats = engine.stats
    assert stats.prefill_tokens == 21 and stats.running == 4
    assert stats.blocks_used == 2 + 4 < 4 * blocks_for(21, 8)
    shared = {tuple(s.blocks[:2]) for s in engine.running}
    assert len(shared) == 1 and len({s.blocks[2] for s in engine.running}) == 4
    events = run(engine, {})
    got = [first[j] + ids_of(events["r", j]) for j in range(4)]
    assert got == static_ids(model, [prompt], params)[0]
    assert engine.stats.blocks_used == 0


@WINDOWS
def test_blocks_follow_the_tokens_in_flight(model, steps) -> None:
    prompts = prompts_of([3, 10, 17], seed=8)
    lengths = [5, 30, 12]
    engine = BatchingEngine(model, block_size=4, prefill_chunk=8, decode_steps=steps)
    requests = [
        EngineRequest(f"r{i}", p, dataclasses.replace(GREEDY, max_new_tokens=m))
        for i, (p, m) in enumerate(zip(prompts, lengths, strict=True))
    ]
    history = []

    def observe(engine, events):
        # a running sample holds the blocks of its cached tokens (all but its last one)
        want = sum(blocks_for(s.length - 1, 4) for s in engine.running)
        want += sum(len(job.blocks) for job in engine.waiting)
        history.append((engine.stats.blocks_used, want))

    run(engine, {0: requests[:2], 2: requests[2:]}, observe)
    assert all(used == want for used, want in history)
    assert max(used for used, _ in history) > history[-1][0] == 0


@WINDOWS
def test_pool_exhaustion_preempts(model, steps) -> None:
    """A pool of 8 blocks of 4 tokens: two requests that need 6 blocks each run together until
    the pool runs out, the newer is preempted, recomputed later and still gets its tokens."""
    prompts = prompts_of([10, 7], seed=9)
    params = dataclasses.replace(SAMPLED, n=1, max_new_tokens=14)
    block = PagedKVCache.block_bytes(model.config, 4, torch.float32)
    engine = BatchingEngine(model, block_size=4, kv_budget_bytes=8 * block, decode_steps=steps)
    assert engine.num_blocks == 8
    peak = []
    requests = [EngineRequest(f"r{i}", p, params, prompt_index=i) for i, p in enumerate(prompts)]
    events = run(engine, {0: requests}, lambda e, _: peak.append(e.stats.running))
    assert engine.stats.preemptions >= 1 and max(peak) == 2
    assert engine.stats.prefill_tokens > sum(map(len, prompts))  # the preempted one recomputed
    assert [ids_of(events[f"r{i}", 0]) for i in range(2)] == [
        row[0] for row in static_ids(model, prompts, params)
    ]
    assert engine.stats.blocks_used == 0


def test_block_allocator_counts_references() -> None:
    alloc = BlockAllocator(3)
    a = alloc.allocate(2)
    alloc.share(a[:1])
    alloc.release(a)
    assert alloc.num_free == 2  # a[0] still has an owner
    alloc.release(a[:1])
    assert alloc.num_free == 3 and 0 not in alloc.allocate(3)  # block 0 is never handed out
    with pytest.raises(RuntimeError, match="released more often"):
        alloc.release(a[:1] * 2)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        (dict(prompt_ids=[]), "prompt_ids of request 'x' is empty"),
        (dict(prompt_ids=[5, VOCAB]), r"prompt_ids of request 'x': ids must be ints in \[0, 1000\)"),
        (dict(prompt_ids=[5] * 250), "prompt_ids \\+ params.max_new_tokens = 270 exceeds the model context"),
        (dict(params=dataclasses.replace(GREEDY, n=9)), "params.n = 9 exceeds max_batch"),
        (
            dict(params=dataclasses.replace(GREEDY, stop_strings=("x",))),
            "params.stop_strings need a tokenizer",
        ),
        (dict(params=dataclasses.replace(GREEDY, logprobs=5000)), "params.logprobs = 5000 exceeds"),
        (dict(params={"temperature": 1.0}), "params must be a SamplingParams"),
        (dict(id=""), "id must be a non-empty string"),
        (dict(prompt_ids=[5] * 200), "needs 28 KV blocks, the pool has 20: raise kv_budget_bytes"),
    ],
)
def test_bad_requests_name_the_field(model, request_kwargs, message) -> None:
    block = PagedKVCache.block_bytes(model.config, 8, torch.float32)
    engine = BatchingEngine(model, max_batch=8, block_size=8, kv_budget_bytes=20 * block)
    request = EngineRequest(**{"id": "x", "prompt_ids": [5, 6], "params": GREEDY, **request_kwargs})
    with pytest.raises(ValueError, match=message):
        engine.add(request)
    assert not engine.has_work()


def test_a_short_request_does_not_shrink_the_others_windows(model) -> None:
    """Windows of 4 steps: a request with 2 tokens left ends inside the window (its extra
    tokens dropped) while the other decodes all 4; a request at the model's context end
    shortens its window so that no position passes the context; tokens equal the static
    Generator's."""
    context = model.config.max_position_embeddings
    params = {"short": dataclasses.replace(GREEDY, max_new_tokens=3), "long": GREEDY}
    params["edge"] = dataclasses.replace(GREEDY, max_new_tokens=6)
    prompts = {"short": [5, 6, 7], "long": [8, 9], "edge": [3] * (context - 6)}
    engine = BatchingEngine(model, block_size=4, decode_steps=4)
    events = run(engine, {0: [EngineRequest(k, prompts[k], params[k]) for k in ("short", "long")]})
    assert [len(e.token_ids) for e in events["long", 0]][:3] == [1, 4, 4]  # not [1, 2, 4]
    assert [len(e.token_ids) for e in events["short", 0]] == [1, 2]
    engine = BatchingEngine(model, block_size=4, decode_steps=4)
    positions: list[int] = []
    step = engine._decode_step
    engine._decode_step = lambda tokens, pos, tables: (
        positions.append(int(pos.max())) or step(tokens, pos, tables)
    )
    edge = run(engine, {0: [EngineRequest("edge", prompts["edge"], params["edge"])]})
    assert max(positions) == context - 1
    for key, got in (("short", events), ("long", events), ("edge", edge)):
        want = static_ids(model, [prompts[key]], params[key])[0][0]
        assert ids_of(got[key, 0]) == want


def test_a_larger_prefill_chunk_admits_the_queue_sooner_with_the_same_tokens(model) -> None:
    """The prefill chunk sets how many queued prompt tokens a step admits (the GPU default is
    8x the CPU one): eight 6-token prompts take 8 steps to admit behind an 8-token chunk, one behind a
    64-token chunk, and decode the same tokens either way."""
    prompts = prompts_of([6] * 8)
    admitted, outputs = {}, {}
    for chunk in (8, 64):
        engine = BatchingEngine(model, block_size=4, prefill_chunk=chunk)
        requests = [EngineRequest(f"r{i}", p, GREEDY) for i, p in enumerate(prompts)]
        running: list[int] = []
        events = run(engine, {0: requests}, lambda e, _, seen=running: seen.append(len(e.running)))
        admitted[chunk] = running.index(len(prompts)) + 1  # steps until every prompt decodes
        outputs[chunk] = [ids_of(events[f"r{i}", 0]) for i in range(len(prompts))]
    assert admitted == {8: 8, 64: 1}
    assert outputs[8] == outputs[64] == [row[0] for row in static_ids(model, prompts, GREEDY)]
    assert BatchingEngine(model).prefill_chunk == 512  # CPU default (4,096 on a GPU)


def test_bad_engine_settings_and_calls(model) -> None:
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        BatchingEngine(model, max_batch=0)
    with pytest.raises(ValueError, match="prefill_chunk must be >= 1"):
        BatchingEngine(model, prefill_chunk=0)
    with pytest.raises(ValueError, match="decode_steps must be >= 1"):
        BatchingEngine(model, decode_steps=0)
    with pytest.raises(ValueError, match=r"decode_steps \(9\) must not exceed block_size \(8\)"):
        BatchingEngine(model, block_size=8, decode_steps=9)
    with pytest.raises(ValueError, match="kv_budget_bytes=10 holds no block"):
        BatchingEngine(model, kv_budget_bytes=10)
    with pytest.raises(ValueError, match="logprobs must be None or >= 0"):
        SamplingParams(logprobs=-1)
    engine = BatchingEngine(model)
    engine.add(EngineRequest("a", [5, 6], GREEDY))
    with pytest.raises(ValueError, match="id 'a' is already in the engine"):
        engine.add(EngineRequest("a", [5, 6], GREEDY))
    with pytest.raises(ValueError, match="generate\\(\\) needs an idle engine"):
        engine.generate([[5]], GREEDY)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        BatchingEngine(model).generate([[5], []], GREEDY)


# ------------------------------------------------------------------ logprobs
@WINDOWS
@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
@torch.no_grad()
def test_logprobs_are_the_model_log_softmax(model, params, steps) -> None:
    (prompt,) = prompts_of([7], seed=10)
    params = dataclasses.replace(params, n=1, max_new_tokens=6, logprobs=4)
    engine = BatchingEngine(model, block_size=4, decode_steps=steps)
    events = run(engine, {0: [EngineRequest("r", prompt, params)]})["r", 0]
    assert all(len(e.logprobs) == len(e.token_ids) for e in events)
    seq = list(prompt)
    for tok, lp in ((t, lp) for e in events for t, lp in zip(e.token_ids, e.logprobs, strict=True)):
        want = torch.log_softmax(model(torch.tensor([seq]))[0, -1].float(), dim=-1)
        assert lp.token_id == tok
        assert lp.logprob == pytest.approx(want[tok].item(), abs=1e-4)
        top = torch.topk(want, 4)
        assert [t for t, _ in lp.top] == top.indices.tolist()
        assert [v for _, v in lp.top] == pytest.approx(top.values.tolist(), abs=1e-4)
        seq.append(tok)
    zero = run(engine, {0: [EngineRequest("z", prompt, dataclasses.replace(params, logprobs=0))]})["z", 0]
    assert all(e.logprobs[0].top == [] for e in zero)


# ------------------------------------------------------------------ compiled decode
def test_compiled_decode_matches_eager() -> None:
    """torch.compile of the decode step on CPU, windows of 3 steps: the same tokens (batch and
    block buckets)."""
    cfg = small_config(hidden_size=32, intermediate_size_mlp=64, num_attention_heads=2, num_key_value_heads=1)
    small = build_model(cfg, seed=0).eval()
    prompts = prompts_of([3, 7, 12])
    params = SamplingParams(max_new_tokens=10, stop_token_ids=())
    compiled = BatchingEngine(small, block_size=8, compile=True, decode_steps=3).generate(prompts, params)
    assert [[c.token_ids for c in row] for row in compiled] == static_ids(small, prompts, params)


def test_built_inside_autocast_the_pool_holds_the_autocast_dtype(model) -> None:
    """GRPO samples its float32 policy under bf16 autocast: the pool holds bf16 (what attention
    sees there), so the paged kernel (interpreted here) takes the queries, and its tokens are the
    gather path's."""
    prompts = prompts_of([5, 9])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        paged = BatchingEngine(model, block_size=8, paged_decode=True)
        gather = BatchingEngine(model, block_size=8, paged_decode=False)
        assert paged.cache.k0.dtype == torch.bfloat16 and paged.cache.paged_decode
        got = [[c.token_ids for c in row] for row in paged.generate(prompts, GREEDY)]
        want = [[c.token_ids for c in row] for row in gather.generate(prompts, GREEDY)]
    assert got == want
    assert BatchingEngine(model, block_size=8).cache.k0.dtype == torch.float32  # outside autocast
