"""Training throughput: our trainer's step vs the seeds' path, same model, same run.

ours  : `LMObjective` (our model + chunked LM-head cross-entropy), bf16 autocast over fp32
        weights, each decoder layer `torch.compile`d, fused AdamW (the trainer's own code path).
seeds : transformers `Llama4ForCausalLM` (same config), bf16 autocast, SDPA attention,
        `model(input_ids, labels=labels).loss`, fused AdamW.
liger : (--liger) the seeds' path with the seeds' efficiency switch, Liger kernels for Llama-4
        (fused linear cross-entropy, RMSNorm, SwiGLU, RoPE), measured after all other rows
        because Liger patches transformers' Llama-4 module globally.
ours_fp8_<recipe> : (--fp8 tensorwise rowwise) ours with the decoder layers' linears in FP8
        (`train/float8.py`, torchao); MFU still counts against the bf16 peaks.
ours_cce : (--cce) ours with the LM-head loss by cut cross-entropy (`loss_kernel: cce`,
        `train/cut_ce.py`: no logits in memory) instead of chunked logits.
For each preset the largest micro-batch in --micro-batches that fits is timed (sequence 2048).
MFU = tokens/s x FLOPs/token / peak, FLOPs/token = 6 x params + 12 x layers x dim x seq, both
ways: `mfu` against a measured 8192^3 bf16 matmul on this GPU, `mfu_vendor` against the
vendor's dense bf16 figure (989 TFLOP/s for H100 / H200); the formula is in the JSON.

    python benchmarks/train_throughput.py --presets 140m 360m 950m
    python benchmarks/train_throughput.py --presets 140m 950m --fp8 tensorwise rowwise --no-seeds
    python benchmarks/train_throughput.py --presets 140m 950m --cce --no-seeds --micro-batches 16 8
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import torch

from mobilellm_r1.model import build_model, preset
from mobilellm_r1.model.hf import save_pretrained
from mobilellm_r1.train.config import OptimSection
from mobilellm_r1.train.float8 import convert_to_float8
from mobilellm_r1.train.metrics import measure_peak_flops, mfu_both, vendor_peak_flops
from mobilellm_r1.train.objectives.lm import LMObjective
from mobilellm_r1.train.optim import build_optimizer
from provenance import dated_result, result_header, write_result


class RandomBatch:
    def __init__(self, ids: torch.Tensor) -> None:
        self.input_ids, self.labels = ids[:, :-1], ids[:, 1:]
        self.position_ids = self.doc_ids = self.source = None


def time_step(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def ours_step(
    cfg, micro: int, seq: int, chunk: int, fused: bool = True, fp8: str = "none", loss_kernel: str = "chunked"
):
    model = build_model(cfg, device="cuda", seed=0)
    convert_to_float8(model.layers, fp8)
    for layer in model.layers:
        layer.compile()
    objective = LMObjective(
        model, chunk_tokens=chunk, document_mask=False, fused_loss=fused, loss_kernel=loss_kernel
    )
    opt = build_optimizer(objective, OptimSection(lr=1e-4))
    ids = torch.randint(0, cfg.vocab_size, (micro, seq + 1), device="cuda")
    batch = RandomBatch(ids)
    tokens = micro * seq

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = objective(batch) / tokens
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def seeds_step(cfg, micro: int, seq: int, hf_dir: str, liger: bool = False):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        hf_dir, dtype=torch.float32, attn_implementation="sdpa"
    )
    if liger:
        from liger_kernel.transformers import apply_liger_kernel_to_llama4

        apply_liger_kernel_to_llama4(model=model)
    model = model.cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (micro, seq), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


FLOP_FORMULA = "6 * params + 12 * layers * hidden * seq per token (fwd + bwd)"


def measure(
    make_step, micro_batches: list[int], seq: int, flops_per_token: float, peaks: tuple, steps: int
) -> dict:
    """Largest fitting micro-batch: tokens/s, MFU, peak memory; OOMs recorded."""
    tried = {}
    for micro in micro_batches:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            seconds = time_step(make_step(micro), steps=steps, warmup=3)
        except torch.OutOfMemoryError:
            tried[micro] = "out of memory"
            continue
        tps = micro * seq / seconds
        return {
            "micro_batch": micro,
            "tokens_per_s": tps,
            **mfu_both(tps * flops_per_token, *peaks),
            "step_s": seconds,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            "tried": tried,
        }
    return {"micro_batch": None, "tried": tried}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["140m", "360m", "950m"])
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--micro-batches", nargs="+", type=int, default=[16, 8, 4])
    p.add_argument("--seeds-micro-batches", nargs="+", type=int, default=[16, 4])
    p.add_argument("--chunk", type=int, default=4096, help="tokens per LM-head loss chunk")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--liger", action="store_true", help="also the seeds' path with Liger kernels")
    p.add_argument(
        "--fp8", nargs="*", default=[], choices=["tensorwise", "rowwise"], help="also ours with FP8"
    )
    p.add_argument("--cce", action="store_true", help="also ours with cut cross-entropy")
    p.add_argument("--no-seeds", action="store_true", help="skip the seeds' path (ours only)")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    device = torch.device("cuda")
    peak = (measure_peak_flops(device), vendor_peak_flops(device))
    rows = []
    out = Path(args.out) if args.out else dated_result("train_cuda")
    for name in args.presets:
        cfg = preset(name)
        fpt = 6 * cfg.num_params() + 12 * cfg.num_hidden_layers * cfg.hidden_size * args.seq
        row = {"preset": name, "seq": args.seq, "flops_per_token": fpt}
        variants = [("ours", "none", "chunked"), *((f"ours_fp8_{r}", r, "chunked") for r in args.fp8)]
        variants += [("ours_cce", "none", "cce")] if args.cce else []
        for key, fp8, kernel in variants:
            row[key] = measure(
                lambda m, cfg=cfg, fp8=fp8, kernel=kernel: ours_step(
                    cfg, m, args.seq, args.chunk, fp8=fp8, loss_kernel=kernel
                ),
                args.micro_batches,
                args.seq,
                fpt,
                peak,
                args.steps,
            )
            torch._dynamo.reset()
        if not args.no_seeds:
            row["seeds"] = measure_seeds(cfg, args, fpt, peak, liger=False)
        rows.append(row)
        print(json.dumps(row), flush=True)
        save(out, rows, peak)
    for row in rows if args.liger else []:  # Liger patches transformers globally: last
        fpt = row["flops_per_token"]
        row["liger"] = measure_seeds(preset(row["preset"]), args, fpt, peak, liger=True)
        print(json.dumps(row), flush=True)
        save(out, rows, peak)
    print_table(rows, out, peak)


def measure_seeds(cfg, args: argparse.Namespace, fpt: float, peak: tuple, liger: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(build_model(cfg, device="cpu", seed=0), None, tmp + "/ckpt")
        return measure(
            lambda m: seeds_step(cfg, m, args.seq, tmp + "/ckpt", liger),
            args.seeds_micro_batches,
            args.seq,
            fpt,
            peak,
            args.steps,
        )


def save(out: Path, rows: list[dict], peak: tuple) -> None:
    result = {**result_header("train_throughput"), "flop_formula": FLOP_FORMULA, "results": rows}
    result["machine"]["measured_peak_tflops"] = peak[0] / 1e12
    result["machine"]["vendor_peak_tflops"] = peak[1] / 1e12 if peak[1] else None
    write_result(result, out, quiet=True)


def pct(x: float | None) -> str:
    return f"{x:6.1%}" if x is not None else f"{'-':>6}"


def print_table(rows: list[dict], out: Path, peak: tuple) -> None:
    vendor = f"{peak[1] / 1e12:.0f}" if peak[1] else "unknown"
    print(f"\nwrote {out}; MFU vs measured peak {peak[0] / 1e12:.0f} TFLOP/s / vendor bf16 {vendor} TFLOP/s")
    print(f"{'preset':>6} | {'path':<20} {'mb':>4} {'tok/s':>9} {'MFU':>6} {'vendor':>6} {'GiB':>5}")
    for r in rows:
        for key, m in r.items():
            if not isinstance(m, dict) or "micro_batch" not in m:
                continue
            if m["micro_batch"] is None:
                print(f"{r['preset']:>6} | {key:<20} {'OOM':>4}")
                continue
            print(
                f"{r['preset']:>6} | {key:<20} {m['micro_batch']:>4} {m['tokens_per_s']:9.0f} {pct(m['mfu'])} "
                f"{pct(m['mfu_vendor'])} {m['peak_mem_gib']:5.1f}"
            )


if __name__ == "__main__":
    main()
