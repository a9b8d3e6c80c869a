"""Long-context SFT step: the 950M post-training model (rope_theta x8, 32k context) on one GPU.

One packed row of --seq tokens per step (the reasoning-SFT geometry: micro-batch 1 x 32,768),
split into --docs documents with per-document positions and the document-causal mask, loss on
every second document only (assistant-only labels), through the trainer's own objective: bf16
autocast over fp32 weights, activation checkpointing, chunked LM-head loss, fused AdamW.
Also the same step on one unpacked document (plain causal attention) for comparison.

    python benchmarks/sft_long_context.py --preset 950m --seq 32768
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch

from mobilellm_r1.data.mixture import Batch
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.train.config import OptimSection
from mobilellm_r1.train.metrics import measure_peak_flops, mfu_both, vendor_peak_flops
from mobilellm_r1.train.objectives.lm import LMObjective
from mobilellm_r1.train.optim import build_optimizer
from mobilellm_r1.train.parallel import apply_activation_checkpointing
from provenance import dated_result, result_header, write_result


def packed_batch(seq: int, docs: int, vocab: int, device: str) -> Batch:
    """[1, seq]: `docs` equal documents, positions restarting per document, odd documents masked."""
    ids = torch.randint(0, vocab, (1, seq + 1), device=device)
    length = seq // docs
    doc_ids = (torch.arange(seq, device=device) // length).clamp(max=docs - 1)[None]
    starts = doc_ids * length
    positions = torch.arange(seq, device=device)[None] - starts
    labels = ids[:, 1:].clone()
    labels[doc_ids % 2 == 1] = -100
    return Batch(ids[:, :-1], labels, positions, doc_ids, torch.zeros(1, dtype=torch.long, device=device))


def run(cfg, seq: int, docs: int, steps: int, chunk: int, compile_layers: bool) -> dict:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = build_model(cfg, device="cuda", seed=0)
    apply_activation_checkpointing(model)
    if compile_layers:
        for layer in model.layers:
            layer.compile()
    objective = LMObjective(model, chunk_tokens=chunk, document_mask=docs > 1)
    opt = build_optimizer(objective, OptimSection(lr=8e-5, weight_decay=0.0))
    batch = packed_batch(seq, docs, cfg.vocab_size, "cuda")
    count = int((batch.labels != -100).sum())

    def step() -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = objective(batch) / count
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    try:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        torch.cuda.synchronize()
    except torch.OutOfMemoryError as err:
        return {"docs": docs, "error": f"out of memory: {str(err)[:200]}"}
    seconds = (time.perf_counter() - start) / steps
    return {
        "docs": docs,
        "step_s": seconds,
        "tokens_per_s": seq / seconds,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "loss": loss,
        "trained_tokens": count,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="950m")
    p.add_argument("--seq", type=int, default=32768)
    p.add_argument("--docs", nargs="+", type=int, default=[1, 8], help="documents per packed row")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--compile", action="store_true", help="torch.compile each decoder layer")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    cfg = preset(args.preset, long_context=True)
    peak = (measure_peak_flops(torch.device("cuda")), vendor_peak_flops(torch.device("cuda")))
    fpt = cfg.flops_per_token(args.seq)["train"]
    rows = []
    for docs in args.docs:
        row = run(cfg, args.seq, docs, args.steps, args.chunk, args.compile)
        if "tokens_per_s" in row:
            mfu = mfu_both(row["tokens_per_s"] * fpt, *peak)
            row["mfu_causal_flops"], row["mfu_vendor_causal_flops"] = mfu["mfu"], mfu["mfu_vendor"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch._dynamo.reset()
    result = {
        **result_header("sft_long_context"),
        "config": {
            "preset": args.preset,
            "seq": args.seq,
            "rope_theta": cfg.rope_theta,
            "compile": args.compile,
        },
        "flops_per_token": fpt,
        "flop_formula": "3 x forward matmul FLOPs per token (weights incl. LM head + attention over seq)",
        "results": rows,
    }
    result["machine"]["gpu_mem_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    result["machine"]["measured_peak_tflops"] = peak[0] / 1e12
    result["machine"]["vendor_peak_tflops"] = peak[1] / 1e12 if peak[1] else None
    write_result(result, args.out or dated_result(f"sft_long_context_{args.preset}"))
    print(f"{'docs':>5} {'step s':>8} {'tok/s':>9} {'MFU':>6} {'vendor':>6} {'peak GiB':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['docs']:>5} {r['error'][:60]}")
        else:
            print(
                f"{r['docs']:>5} {r['step_s']:8.2f} {r['tokens_per_s']:9.0f} "
                f"{r['mfu_causal_flops']:6.1%} {r['mfu_vendor_causal_flops'] or 0:6.1%} {r['peak_mem_gib']:9.1f}"
            )


if __name__ == "__main__":
    main()
