"""A/B of batch-1 decoding between two versions of the package, in one device session.

    PYTHONPATH=/path/to/old/checkout/src python benchmarks/diag/ab_step.py old
    PYTHONPATH=src python benchmarks/diag/ab_step.py new

For 140m and 950m (random bf16 weights) at prompts of 128 and 1,024 tokens: the bare fused step
(`FusedDecoder` in a CUDA graph, us) and the compiled Generator's 256-token `generate` (best of 3,
prefill included). Run both versions alternately on the same machine: figures from different
device sessions differ by more than most changes (see NOTES.md).
"""

from __future__ import annotations

import sys
import time

import torch
from triton.testing import do_bench_cudagraph

from mobilellm_r1.deploy import Generator, SamplingParams
from mobilellm_r1.deploy.fused_decode import FusedDecoder
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.model.model import KVCache


def generate_seconds(model, cfg, plen: int) -> float:
    gen = Generator(model, compile=True)
    prompt = torch.randint(0, cfg.vocab_size, (plen,)).tolist()
    params = SamplingParams(max_new_tokens=256, stop_token_ids=())
    gen.generate([prompt], params)  # compile and capture
    best = float("inf")
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen.generate([prompt], params)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    tag = sys.argv[1] if len(sys.argv) > 1 else "this"
    for name in ("140m", "950m"):
        cfg = preset(name)
        model = build_model(cfg, device="cuda", dtype=torch.bfloat16, seed=0).eval()
        for plen, cache_len in ((128, 512), (1024, 1536)):
            dec = FusedDecoder(model, KVCache(cfg, 1, cache_len, device="cuda"))
            tok, pos = torch.tensor([7], device="cuda"), torch.tensor([plen], device="cuda")
            us = do_bench_cudagraph(lambda dec=dec, tok=tok, pos=pos: dec(tok, pos), rep=300) * 1e3
            sec = generate_seconds(model, cfg, plen)
            print(
                f"{tag} {name} prompt {plen}: bare step {us:.1f} us; generate 256 tokens "
                f"{sec * 1e3:.1f} ms ({256 / sec:.0f} tok/s e2e)",
                flush=True,
            )
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
