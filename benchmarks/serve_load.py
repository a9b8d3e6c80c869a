"""Load test of `mobilellm-r1 serve` on loopback: throughput, time to first token and per-token
latency at several concurrencies.

The server runs in this process (uvicorn on 127.0.0.1, a free port) on a randomly initialised
preset; the clients are asyncio tasks in a process of their own (so their stream parsing does not
take the GIL from the server's threads), streaming `/v1/completions` with `ignore_eos` (so each
request generates exactly its max_tokens). A request's prompt and output lengths are drawn from a
log-uniform mix (default prompts 32..2048 tokens, outputs 16..1024). At each concurrency C,
C clients send requests back to back until `--requests-per-level` (default 4 x C, at least 16)
have finished or `--seconds` have passed. Reported per level:
  * output_tok_s: generated tokens / wall time of the level;
  * ttft_s p50/p99: request sent -> first text chunk;
  * tpot_s p50/p99: per request, (last chunk - first chunk) / (tokens - 1): the per-token
    latency a reader sees on average;
  * itl_s p50/p99: time between a request's consecutive chunks; the engine queues
    `--decode-steps` decode steps per host sync (default 8 on a GPU), so a chunk holds up to
    that many tokens and this is the burst gap, not a per-token figure;
  * memory: peak GPU memory allocated (CUDA) and the server process's peak RSS;
  * engine: what the engine did meanwhile (scheduler steps, prompt tokens prefilled, tokens
    generated, preemptions), to tell a prefill-bound mix from a decode-bound one.

    python benchmarks/serve_load.py --device cuda --preset 950m
    python benchmarks/serve_load.py --device cpu --preset tiny --levels 1,4 --max-output 32 --max-prompt 64

Writes benchmarks/results/serve_load_<device>_<date>.json and prints a table last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import random
import resource
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import torch
import uvicorn

from mobilellm_r1.deploy.serve import build_server
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.tokenizer import load_tokenizer
from provenance import dated_result, result_header, write_result

NAME = "load-test"


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Stats:
    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.itl: list[float] = []  # between streamed chunks (a chunk holds 1..decode_steps tokens)
        self.tpot: list[float] = []  # per request: (last chunk - first chunk) / (tokens - 1)
        self.tokens = 0
        self.done = 0
        self.errors: list[str] = []


async def one_request(
    client: httpx.AsyncClient, url: str, prompt: list[int], max_tokens: int, stats: Stats
) -> None:
    body = {"model": NAME, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "temperature": 0.0}
    body |= {"ignore_eos": True, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    first = last = None
    tokens = 0
    async with client.stream("POST", url, json=body) as reply:
        if reply.status_code != 200:
            stats.errors.append(f"HTTP {reply.status_code}: {(await reply.aread())[:200]!r}")
            return
        async for data in sse_data(reply.aiter_text()):
            if data == "[DONE]":
                continue
            chunk = json.loads(data)
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if not chunk["choices"]:
                continue
            now = time.perf_counter()
            if last is None:
                stats.ttft.append(now - sent)
                first = now
            else:
                stats.itl.append(now - last)
            last = now
    stats.tokens += tokens
    if tokens > 1 and first is not None:
        stats.tpot.append((last - first) / (tokens - 1))
    stats.done += 1


async def sse_data(text: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data:` payloads of a server-sent event stream. Lines end at CR/LF only (a JSON
    payload may hold U+2028 or other characters that str.splitlines would split at)."""
    pending = ""
    async for piece in text:
        pending += piece
        *lines, pending = pending.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        for line in lines:
            if line.startswith("data: "):
                yield line[6:]


async def level(url: str, concurrency: int, total: int, seconds: float, args: argparse.Namespace) -> dict:
    rng = random.Random(concurrency)
    stats = Stats()
    deadline = time.perf_counter() + seconds
    issued = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < total and time.perf_counter() < deadline:
            issued += 1
            n_prompt = log_uniform(rng, args.min_prompt, args.max_prompt)
            prompt = [rng.randrange(1000, 100_000) for _ in range(n_prompt)]
            await one_request(client, url, prompt, log_uniform(rng, args.min_output, args.max_output), stats)

    limits = httpx.Limits(max_connections=concurrency)
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=seconds + 60, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": stats.done,
        "errors": stats.errors[:5],
        "seconds": wall,
        "output_tokens": stats.tokens,
        "output_tok_s": stats.tokens / wall,
        "ttft_s": {"p50": percentile(stats.ttft, 0.5), "p99": percentile(stats.ttft, 0.99)},
        "itl_s": {"p50": percentile(stats.itl, 0.5), "p99": percentile(stats.itl, 0.99),
                  "mean": statistics.fmean(stats.itl) if stats.itl else None},
        "tpot_s": {"p50": percentile(stats.tpot, 0.5), "p99": percentile(stats.tpot, 0.99)},
    }  # fmt: skip


def run_level(url: str, concurrency: int, total: int, seconds: float, args: argparse.Namespace) -> dict:
    """One level's clients, run in the client process."""
    return asyncio.run(level(url, concurrency, total, seconds, args))


ENGINE_COUNTS = ("steps", "prefill_tokens", "tokens_generated", "preemptions")


def engine_delta(before, after) -> dict:
    """What the engine did during a level (its counters' increase): scheduler steps (each a window
    of decode steps and one prefill chunk), prompt tokens prefilled, tokens generated,
    preemptions. Prefill tokens per generated token tell how prefill-heavy the mix is."""
    return {name: getattr(after, name) - getattr(before, name) for name in ENGINE_COUNTS}


def start_server(args: argparse.Namespace) -> tuple[str, uvicorn.Server, object]:
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model = build_model(
        preset(args.preset, long_context=True), device=args.device, dtype=dtype, seed=0
    ).eval()
    options = {"max_batch": args.max_batch, "compile": args.compile, "decode_steps": args.decode_steps}
    built = build_server(model, load_tokenizer(), name=NAME, engine_options=options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    http = uvicorn.Server(uvicorn.Config(built.app, log_level="warning"))
    built.worker.start()
    threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not http.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1/completions", http, built


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="950m")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--levels", default="1,8,32,128")
    p.add_argument("--requests-per-level", type=int, default=None)
    p.add_argument("--seconds", type=float, default=120.0, help="time cap per level")
    p.add_argument("--min-prompt", type=int, default=32)
    p.add_argument("--max-prompt", type=int, default=2048)
    p.add_argument("--min-output", type=int, default=16)
    p.add_argument("--max-output", type=int, default=1024)
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--compile", action="store_true", help="compiled decode step (CUDA graphs)")
    p.add_argument("--decode-steps", type=int, default=None, help="engine decode steps per host sync")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    url, http, built = start_server(args)
    result = result_header("serve_load", args.device) | {
        "preset": args.preset,
        "args": vars(args) | {"out": None},
    }
    result["levels"] = []
    out = args.out or dated_result(f"serve_load_{args.device}")
    clients = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        clients.submit(run_level, url, 1, 2, args.seconds, args).result()  # warm-up (not recorded)
        for c in (int(x) for x in args.levels.split(",")):
            total = args.requests_per_level or max(16, 4 * c)
            before = built.worker.engine.stats
            row = clients.submit(run_level, url, c, total, args.seconds, args).result()
            row["engine"] = engine_delta(before, built.worker.engine.stats)
            if args.device == "cuda":
                row["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            row["rss_peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            result["levels"].append(row)
            print(json.dumps(row), flush=True)
            write_result(result, out, quiet=True)
    finally:
        clients.shutdown()
        http.should_exit = True
        built.worker.stop()
    write_result(result, out)
    print(
        "concurrency | requests | output tok/s | TTFT p50 / p99 (s) | TPOT p50 / p99 (ms) | "
        "chunk gap p50 / p99 (ms) | GPU GiB | RSS GiB"
    )
    for r in result["levels"]:
        t, i, o = r["ttft_s"], r["itl_s"], r["tpot_s"]
        fmt = lambda v, k=1.0: f"{v * k:.3f}" if v is not None else "-"  # noqa: E731
        print(
            f"{r['concurrency']} | {r['requests']} | {r['output_tok_s']:.0f} | {fmt(t['p50'])} / {fmt(t['p99'])} | "
            f"{fmt(o['p50'], 1e3)} / {fmt(o['p99'], 1e3)} | {fmt(i['p50'], 1e3)} / {fmt(i['p99'], 1e3)} | "
            f"{r.get('gpu_peak_gib', 0):.1f} | {r['rss_peak_gib']:.1f}"
        )


if __name__ == "__main__":
    main()
