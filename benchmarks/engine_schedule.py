"""How well the continuous-batching engine's scheduler keeps its decode batch full under a
server's load: serve_load's request mix replayed in closed loop straight against the engine.

C clients each send their next request as soon as the last one ends; prompt and output lengths
are drawn log-uniform as in `serve_load.py` (default prompts 32..2048 tokens, outputs 16..1024),
random prompt ids, every request running to its max_new_tokens. For each `--prefill-chunks`
value the engine runs `--steps` scheduler steps; reported per step: tokens decoded, prompt tokens
prefilled, running requests. These counts depend on the scheduling only, not on the device or
the model's weights, so a CPU run with a small model shows what limits a GPU server (the time a
step costs is the device's part, and is not measured here).

    python benchmarks/engine_schedule.py                       # 128 clients, chunks 512 and 4096
    python benchmarks/engine_schedule.py --clients 32 --prefill-chunks 512 2048 8192

Writes benchmarks/results/engine_schedule_<date>.json and prints a table last.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from mobilellm_r1.deploy.batching import BatchingEngine, EngineRequest
from mobilellm_r1.deploy.sampling import SamplingParams
from mobilellm_r1.model import build_model, preset
from provenance import dated_result, result_header, write_result
from serve_load import log_uniform


def replay(model, args: argparse.Namespace, chunk: int) -> dict:
    """`args.steps` engine steps under `args.clients` closed-loop clients -> per-step means."""
    rng = random.Random(args.seed)
    engine = BatchingEngine(
        model,
        max_batch=args.max_batch,
        prefill_chunk=chunk,
        decode_steps=args.decode_steps,
        kv_budget_bytes=args.kv_gib << 30,
    )
    context, vocab = model.config.max_position_embeddings, model.config.vocab_size
    sent = 0

    def send() -> None:
        nonlocal sent
        new = log_uniform(rng, args.min_output, args.max_output)
        n_prompt = min(log_uniform(rng, args.min_prompt, args.max_prompt), context - new)
        ids = [rng.randrange(1, vocab) for _ in range(n_prompt)]
        params = SamplingParams(max_new_tokens=new, stop_token_ids=())
        engine.add(EngineRequest(f"r{sent}", ids, params))
        sent += 1

    for _ in range(args.clients):
        send()
    decoded = running = 0
    start = time.perf_counter()
    for _ in range(args.steps):
        for event in engine.step():
            decoded += len(event.token_ids)
            if event.finish_reason is not None:
                send()
        running += len(engine.running)
    counts = engine.stats
    return {
        "prefill_chunk": chunk,
        "tokens_decoded_per_step": decoded / args.steps,
        "prefill_tokens_per_step": counts.prefill_tokens / args.steps,
        "running_per_step": running / args.steps,
        "requests_finished": sent - args.clients,
        "preemptions": counts.preemptions,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=128)
    p.add_argument("--prefill-chunks", type=int, nargs="+", default=[512, 4096])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--decode-steps", type=int, default=8, help="the GPU default window")
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--kv-gib", type=int, default=2, help="KV pool (GiB)")
    p.add_argument("--min-prompt", type=int, default=32)
    p.add_argument("--max-prompt", type=int, default=2048)
    p.add_argument("--min-output", type=int, default=16)
    p.add_argument("--max-output", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    # the tiny preset on a 4,096-id vocabulary and a 4k context: the scheduling, not the model, is measured
    cfg = preset("tiny", vocab_size=4096, max_position_embeddings=4096)
    model = build_model(cfg).eval()
    rows = [replay(model, args, chunk) for chunk in args.prefill_chunks]
    result = {**result_header("engine_schedule", device="cpu"), "settings": vars(args), "rows": rows}
    write_result(result, args.out or dated_result("engine_schedule"))
    print("prefill chunk | tokens decoded / step | prompt tokens / step | running requests | finished | s")
    for r in rows:
        print(
            f"{r['prefill_chunk']} | {r['tokens_decoded_per_step']:.0f} | {r['prefill_tokens_per_step']:.0f}"
            f" | {r['running_per_step']:.0f} | {r['requests_finished']} | {r['seconds']:.0f}"
        )


if __name__ == "__main__":
    main()
