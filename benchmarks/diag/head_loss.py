"""The LM head's chunked cross-entropy alone (forward + backward, as in a training step), under
several ways of compiling its per-chunk softmax/gradient pass, against the head's three matmuls.

    python benchmarks/diag/head_loss.py                      # CUDA, 140M shapes: 16 x 2,048 tokens, d 576
    python benchmarks/diag/head_loss.py --dim 1536           # 950M's hidden size
    python benchmarks/diag/head_loss.py --device cpu --tokens 512 --vocab 4096 --dim 64 --chunk 128 --iters 1

Why: on an H100 the 140M step's largest kernel is that pass (15.2 ms of 97.7, `profile_train.py`),
~1.9 ms per 4,096-token chunk for ~3 GB of logit traffic (read twice, gradient written once:
~0.9 ms at 3.35 TB/s). Variants (`train/losses.py` compiles `_ce_chunk` with `dynamic=True`):
  * dynamic (today), static shapes, static + max-autotune (Inductor tunes the reduction);
  * eager (`fused=False`: float32 softmax in place);
  * cut cross-entropy (`loss_kernel: cce`, `train/cut_ce.py`: no logits in memory).
Each variant's loss and gradients are compared with today's. "matmuls" times the head's three
products per chunk alone (logits, input gradient, weight gradient), so total - matmuls is what
the softmax/gradient pass and the weight-gradient accumulation cost. Writes
benchmarks/results/head_loss_<device>_<dim>_<date>.json and prints a table last.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch

import mobilellm_r1.train.losses as L
from mobilellm_r1.train.cut_ce import cut_cross_entropy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import dated_result, result_header, write_result

COMPILERS = {
    "dynamic (today)": dict(dynamic=True),
    "static": dict(dynamic=False),
    "static, max-autotune": dict(dynamic=False, mode="max-autotune-no-cudagraphs"),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_ms(fn, device: torch.device, iters: int) -> float:
    """Best wall time of `iters` calls after one warm-up (which also compiles)."""
    fn()
    best = float("inf")
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def head_step(hidden, weight, labels, chunk: int, fused: bool | None, autocast: bool):
    """Loss and gradients (hidden, weight) of one forward + backward of the chunked head loss
    (fused or not), or of cut cross-entropy (fused None)."""
    hidden.grad = weight.grad = None
    with torch.autocast(hidden.device.type, dtype=torch.bfloat16, enabled=autocast):
        if fused is None:
            loss = cut_cross_entropy(hidden, weight, labels)
        else:
            loss = L.chunked_cross_entropy(hidden, weight, labels, chunk_size=chunk, fused=fused)
    loss.backward()
    return loss.detach(), hidden.grad, weight.grad


def matmuls_ms(hidden, weight, chunk: int, device: torch.device, iters: int) -> float:
    """The head's three products per chunk alone, in bf16 (logits, dlogits @ W, dlogits.T @ h)."""
    w = weight.to(torch.bfloat16)
    h = hidden.detach().to(torch.bfloat16)

    def run() -> None:
        for start in range(0, h.shape[0], chunk):
            hc = h[start : start + chunk]
            z = hc @ w.T
            _ = z @ w
            _ = z.T @ hc

    return best_ms(run, device, iters)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens", type=int, default=16 * 2048)
    p.add_argument("--dim", type=int, default=576)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--chunk", type=int, default=L.CE_CHUNK)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator(device=device).manual_seed(0)
    # a trained model's scale: logits of std ~2 (random unit-variance weights would give ~sqrt(d))
    hidden = (
        torch.randn(args.tokens, args.dim, device=device, generator=gen) * 2 / args.dim**0.5
    ).requires_grad_()
    weight = torch.randn(args.vocab, args.dim, device=device, generator=gen).requires_grad_()
    labels = torch.randint(0, args.vocab, (args.tokens,), device=device, generator=gen)
    autocast = device.type == "cuda"
    base_loss = base_gh = base_gw = None
    rows = []
    for name, options in [*COMPILERS.items(), ("eager", None), ("cut cross-entropy", None)]:
        if options is not None:  # a fresh compile per variant (dynamo caches frames per code object)
            torch._dynamo.reset()
            L.set_chunk_compile_options(**options)
        fused = None if name == "cut cross-entropy" else options is not None
        step = functools.partial(head_step, hidden, weight, labels, args.chunk, fused, autocast)
        ms = best_ms(step, device, args.iters)
        loss, gh, gw = step()
        if base_loss is None:
            base_loss, base_gh, base_gw = loss, gh.clone(), gw.clone()
        row = {
            "variant": name,
            "ms": ms,
            "tokens_per_s": args.tokens / ms * 1e3,
            "loss": loss.item(),
            "max_abs_diff_grad_hidden": (gh.float() - base_gh.float()).abs().max().item(),
            "max_abs_diff_grad_weight": (gw.float() - base_gw.float()).abs().max().item(),
        }
        rows.append(row)
        print(row, flush=True)
    mm = matmuls_ms(hidden, weight, args.chunk, device, args.iters)
    result = {
        **result_header("head_loss", device.type),
        "shapes": {"tokens": args.tokens, "dim": args.dim, "vocab": args.vocab, "chunk": args.chunk},
        "matmuls_ms": mm,
        "variants": rows,
    }
    write_result(result, args.out or dated_result(f"head_loss_{device.type}_{args.dim}"))
    print(f"\nhead loss, {args.tokens} tokens x {args.vocab} vocab, d {args.dim}; matmuls alone {mm:.2f} ms")
    print(f"{'variant':>22} {'ms':>8} {'ms - matmuls':>12} {'grad diff':>10}")
    for r in rows:
        diff = max(r["max_abs_diff_grad_hidden"], r["max_abs_diff_grad_weight"])
        print(f"{r['variant']:>22} {r['ms']:8.2f} {r['ms'] - mm:12.2f} {diff:10.2e}")


if __name__ == "__main__":
    main()
