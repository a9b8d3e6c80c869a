"""Training-step diagnostics: the top GPU kernels of our step (the `train_throughput.py` "ours"
row) for one preset and micro-batch in several variants (`VARIANTS`: eager or fused chunked
cross-entropy, cut cross-entropy, float8 linears), the step time of each and its GPU time by kind of
kernel (matmul, attention, compiled elementwise, optimizer, other). Writes
benchmarks/results/profile_train_<presets>_<date>.json and prints a table last.

    python benchmarks/diag/profile_train.py 140m:16 950m:8 --top 25
    python benchmarks/diag/profile_train.py 950m:8 --variants fused fp8_tensorwise fp8_rowwise
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kernel_profile import print_kernels, top_kernels
from mobilellm_r1.model import preset
from provenance import dated_result, result_header, write_result
from train_throughput import ours_step, time_step

# variant -> ours_step settings
VARIANTS = {
    "eager": {"fused": False},
    "fused": {"fused": True},
    "cce": {"loss_kernel": "cce"},
    "fp8_tensorwise": {"fp8": "tensorwise"},
    "fp8_rowwise": {"fp8": "rowwise"},
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("specs", nargs="+", help="preset:micro_batch")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["eager", "fused"])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    names = [spec.split(":")[0] for spec in args.specs]
    out = Path(args.out) if args.out else dated_result("profile_train_" + "-".join(dict.fromkeys(names)))
    result = {**result_header("profile_train"), "settings": vars(args), "runs": []}
    for spec in args.specs:
        name, micro = spec.split(":")
        cfg = preset(name)
        for variant in args.variants:
            step = ours_step(cfg, int(micro), args.seq, args.chunk, **VARIANTS[variant])
            sec = time_step(step, steps=10, warmup=3)
            print(f"\n{name} micro {micro} {variant}: {sec * 1e3:.1f} ms/step")
            kernels = top_kernels(step, args.top)
            print_kernels(kernels)
            run = {"preset": name, "micro_batch": int(micro), "variant": variant, "step_s": sec}
            result["runs"].append({**run, "tokens_per_s": int(micro) * args.seq / sec, "profile": kernels})
            write_result(result, out, quiet=True)
            del step
            torch.cuda.empty_cache()
    print(f"\nwrote {out}")
    print(
        f"\n{'preset':>6} {'micro':>5} {'variant':>14} {'ms/step':>8} {'tok/s':>9} {'matmul':>7} {'attn':>6} {'other':>6}"
    )
    for r in result["runs"]:
        kinds = r["profile"]["by_kind"]
        share = {k: 100 * kinds.get(k, {"share": 0.0})["share"] for k in ("matmul", "attention")}
        rest = 100 - share["matmul"] - share["attention"]
        print(
            f"{r['preset']:>6} {r['micro_batch']:>5} {r['variant']:>14} {r['step_s'] * 1e3:8.1f} "
            f"{r['tokens_per_s']:9.0f} {share['matmul']:6.1f}% {share['attention']:5.1f}% {rest:5.1f}%"
        )


if __name__ == "__main__":
    main()
