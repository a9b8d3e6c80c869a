"""Continuous batching vs the static Generator, same model, same run (issue 20's targets).

Two workloads on a randomly initialised model (bf16; stop tokens disabled so lengths are set):
  * eval: `--samples` samples of one `--prompt-len`-token prompt whose output lengths are drawn
    uniformly from [--min-new, --max-new] (seeded). The continuous engine gets one request per
    sample with its own max_new_tokens; the static Generator, like an eval batch today, decodes
    all of them to the longest. Throughput = useful output tokens (the drawn lengths) / wall time.
  * decode: `--batch` samples of one prompt, all `--decode-new` tokens long: raw decode speed
    at a large batch (static: prefill subtracted as in decode_throughput.py; continuous: one
    request with n = batch, whose first step prefills the prompt once and draws every sample's
    first token; the steps after it are timed).
  * agree: greedy tokens of both engines on 8 prompts of mixed lengths (a correctness check).
Each timed run follows an untimed warm-up (compilation, CUDA graphs; for the eval workload the
warm-up's lengths are 1..samples, so the running batch passes through every size once).

    python benchmarks/engine_throughput.py --device cuda --preset 950m
    python benchmarks/engine_throughput.py --device cpu --preset tiny --samples 8 --min-new 8 --max-new 64 --batch 8 --decode-new 16

Writes benchmarks/results/engine_<device>_<date>.json and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from mobilellm_r1.deploy import BatchingEngine, EngineRequest, Generator, SamplingParams
from mobilellm_r1.model import build_model, preset
from provenance import dated_result, result_header, write_result


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _prompt(length: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 100_000, (length,), generator=g).tolist()


def _params(new: int, n: int = 1) -> SamplingParams:
    return SamplingParams(max_new_tokens=new, n=n, stop_token_ids=())


def run_continuous(engine: BatchingEngine, prompt: list[int], lengths: list[int]) -> int:
    """One request per sample, all queued at once; returns the tokens generated."""
    for i, new in enumerate(lengths):
        engine.add(EngineRequest(str(i), prompt, _params(new)))
    tokens = 0
    while engine.has_work():
        tokens += sum(len(e.token_ids) for e in engine.step())
    return tokens


def continuous_engine(model, args: argparse.Namespace, max_batch: int) -> BatchingEngine:
    """The continuous-batching engine as the command line sets it up, every rows bucket's
    compiled step built (`warmup`; the paged-kernel path), so no compile falls in a timed run."""
    engine = BatchingEngine(
        model, max_batch=max_batch, compile=not args.no_compile, decode_steps=args.decode_steps
    )
    engine.warmup()
    return engine


def time_continuous(
    model, args, prompt: list[int], max_batch: int, warmup: list[int], runs: list[list[int]]
) -> list[float]:
    """Seconds of each run (a list of per-request lengths) on one engine, after a warm-up run;
    the engine (and its KV pool) is freed on return."""
    engine = continuous_engine(model, args, max_batch)
    run_continuous(engine, prompt, warmup)
    return [
        _timed(lambda lengths=lengths: run_continuous(engine, prompt, lengths), args.device)
        for lengths in runs
    ]


def time_static(model, args, prompt: list[int], rows: int, runs: list[int]) -> list[float]:
    """Seconds of each static `generate` of `rows` copies of the prompt, `runs` new tokens each."""
    gen = Generator(model, compile=not args.no_compile)
    gen.generate([prompt] * rows, _params(64))  # warm-up
    return [_timed(lambda new=new: gen.generate([prompt] * rows, _params(new)), args.device) for new in runs]


def eval_workload(model, args: argparse.Namespace) -> dict:
    rng = random.Random(0)
    lengths = [rng.randint(args.min_new, args.max_new) for _ in range(args.samples)]
    prompt = _prompt(args.prompt_len, 1)
    useful = sum(lengths)
    warmup = [i + 1 for i in range(args.samples)]  # the batch shrinks through every size: all graphs built
    (cont,) = time_continuous(model, args, prompt, args.samples, warmup, [lengths])
    (static,) = time_static(model, args, prompt, args.samples, [max(lengths)])
    return {
        "samples": args.samples,
        "prompt_len": args.prompt_len,
        "lengths": {"min": min(lengths), "max": max(lengths), "sum": useful},
        "continuous": {"seconds": cont, "output_tok_s": useful / cont},
        "static": {"seconds": static, "output_tok_s": useful / static, "decoded_per_row": max(lengths)},
        "speedup": static / cont,
    }


def continuous_decode_seconds(model, args, prompt: list[int], rows: int, new: int) -> float:
    """Seconds of the decode steps of one `rows`-sample request after its first step (the
    prefill and the first tokens), on a warmed-up engine."""
    engine = continuous_engine(model, args, rows)
    seconds = []
    for _ in range(2):  # warm-up, then timed
        engine.add(EngineRequest(str(len(seconds)), prompt, _params(new, n=rows)))
        engine.step()
        if engine.stats.running != rows:
            raise RuntimeError(f"only {engine.stats.running} of {rows} samples fit the KV pool at once")
        seconds.append(_timed(lambda: [engine.step() for _ in iter(engine.has_work, False)], args.device))
    return seconds[-1]


def decode_workload(model, args: argparse.Namespace) -> dict:
    prompt, b, new = _prompt(args.prompt_len, 2), args.batch, args.decode_new
    cont = continuous_decode_seconds(model, args, prompt, b, new)
    static_one, static = time_static(model, args, prompt, b, [1, new])
    rate = b * (new - 1)
    return {
        "batch": b,
        "prompt_len": args.prompt_len,
        "new_tokens": new,
        "continuous_decode_tok_s": rate / cont,
        "static_decode_tok_s": rate / max(static - static_one, 1e-9),
    }


def agree_workload(model, args: argparse.Namespace) -> dict:
    """Greedy tokens of both engines on 8 prompts of mixed lengths (64 new tokens each): the
    share of positions where they agree (bf16 on a GPU can differ after a near-tie)."""
    prompts = [_prompt(n, 10 + n) for n in (7, 100, 300, 513, 900, 1500, 33, 64)]
    params = _params(64)
    static = [c[0].token_ids for c in Generator(model).generate(prompts, params)]
    cont = [c[0].token_ids for c in BatchingEngine(model, max_batch=8).generate(prompts, params)]
    same = sum(a == b for s, c in zip(static, cont, strict=True) for a, b in zip(s, c, strict=True))
    prefix = [
        next((i for i, (a, b) in enumerate(zip(s, c, strict=True)) if a != b), 64)
        for s, c in zip(static, cont, strict=True)
    ]
    return {"positions": 8 * 64, "agree": same / (8 * 64), "identical_prefix_lengths": prefix}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="950m")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--min-new", type=int, default=256)
    p.add_argument("--max-new", type=int, default=8192)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--decode-new", type=int, default=256)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--decode-steps", type=int, default=None, help="engine decode steps per host sync")
    p.add_argument("--workloads", default="agree,eval,decode")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model = build_model(
        preset(args.preset, long_context=True), device=args.device, dtype=dtype, seed=0
    ).eval()
    result = result_header("engine_throughput", args.device) | {
        "preset": args.preset,
        "dtype": args.dtype,
        "args": vars(args) | {"out": None},
    }
    out = args.out or dated_result(f"engine_{args.device}")
    for name in args.workloads.split(","):
        result[name] = {"eval": eval_workload, "decode": decode_workload, "agree": agree_workload}[name](
            model, args
        )
        print(json.dumps({name: result[name]}), flush=True)
        write_result(result, out, quiet=True)
    write_result(result, out)
    print("workload | continuous | static | ratio")
    if "agree" in result:
        print(f"agree (greedy, 8 prompts x 64 tokens) | {result['agree']['agree']:.3f} of positions | |")
    if "eval" in result:
        e = result["eval"]
        print(
            f"eval ({e['samples']} x {e['lengths']['min']}..{e['lengths']['max']} new, output tok/s) | "
            f"{e['continuous']['output_tok_s']:.0f} | {e['static']['output_tok_s']:.0f} | {e['speedup']:.2f}x"
        )
    if "decode" in result:
        d = result["decode"]
        ratio = d["continuous_decode_tok_s"] / d["static_decode_tok_s"]
        print(
            f"decode (batch {d['batch']}, prompt {d['prompt_len']}) | {d['continuous_decode_tok_s']:.0f} | "
            f"{d['static_decode_tok_s']:.0f} | {ratio:.2f}x"
        )


if __name__ == "__main__":
    main()
