"""Training-step diagnostics: the top GPU kernels of our step (the `train_throughput.py` "ours"
row) for one preset and micro-batch, eager vs fused cross-entropy, and the step time of each.

    python benchmarks/diag/profile_train.py 140m:16 950m:16 --top 25
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kernel_profile import print_kernels, top_kernels
from mobilellm_r1.model import preset
from train_throughput import ours_step, time_step


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("specs", nargs="+", help="preset:micro_batch")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    table = []
    for spec in args.specs:
        name, micro = spec.split(":")
        cfg = preset(name)
        for fused in (False, True):
            step = ours_step(cfg, int(micro), args.seq, args.chunk, fused=fused)
            sec = time_step(step, steps=10, warmup=3)
            print(f"\n{name} micro {micro} fused={fused}: {sec * 1e3:.1f} ms/step")
            print_kernels(top_kernels(step, args.top))
            table.append((name, micro, fused, sec, int(micro) * args.seq / sec))
            del step
            torch.cuda.empty_cache()
    print(f"\n{'preset':>6} {'micro':>5} {'fused':>5} {'ms/step':>8} {'tok/s':>9}")
    for name, micro, fused, sec, tps in table:
        print(f"{name:>6} {micro:>5} {fused!s:>5} {sec * 1e3:8.1f} {tps:9.0f}")


if __name__ == "__main__":
    main()
