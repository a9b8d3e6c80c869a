"""Multi-GPU scaling of the trainer with FSDP2: 1 GPU vs N GPUs at the same global batch.

Runs `mobilellm-r1 train` twice on the embedded synthetic corpus (packed to --seq tokens):
  1 GPU : micro-batch M, grad_accum N      (global batch M x N sequences)
  N GPUs: micro-batch M, grad_accum 1, torchrun --nproc-per-node N
Each forward sees M sequences in both runs, so tokens/s per GPU compares directly:
scaling efficiency = (N-GPU tokens/s / N) / (1-GPU tokens/s). The loss curves of the two runs
are compared step by step (same data, same global batch; numerics differ only in bf16
rounding: autocast on 1 GPU, FSDP2 bf16 parameter gathering on N).

    python benchmarks/train_scaling.py --gpus 2 --preset 950m --steps 30
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from provenance import dated_result, result_header, write_result


def run_training(
    gpus: int,
    args: argparse.Namespace,
    out: Path,
    steps: int,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> list[dict]:
    sets = [
        f"name=scale_{gpus}gpu",
        f"out_dir={out}",
        f"model.preset={args.preset}",
        f"steps={steps}",
        f"data.micro_batch={args.micro_batch}",
        f"data.grad_accum={args.gpus // gpus}",
        f"data.seq_len={args.seq}",
        "optim.lr=1e-3",
        "optim.warmup_steps=5",
        "precision=bf16",
        "compile=true",
        f"checkpoint_every={checkpoint_every}",
        "eval_every=0",
        "log_every=1",
        "loss_chunk_tokens=4096",
        f"fsdp_reshard_after_forward={str(not args.no_reshard).lower()}",
    ]
    cli = ["-m", "mobilellm_r1.cli", "train", "--recipe", "train/tiny_cpu"] + [
        x for s in sets for x in ("--set", s)
    ]
    launcher = (
        [sys.executable]
        if gpus == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}"]
    )
    subprocess.run([*launcher, *cli, *(["--resume"] if resume else [])], check=True)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def summarize(records: list[dict], skip: int) -> dict:
    steady = records[skip:]
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
        "mfu": statistics.median(r["mfu"] for r in steady),
        "mfu_vendor": statistics.median(r["mfu_vendor"] for r in steady)
        if steady[0].get("mfu_vendor")
        else None,
        "max_mem_gib": max(r.get("max_mem_gib", 0.0) for r in records),
        "losses": [r["loss"] for r in records],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--preset", default="950m")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--skip", type=int, default=5, help="steps excluded from the rates (compilation)")
    p.add_argument("--workdir", default="scaling_runs")
    p.add_argument("--reshard-to", type=int, default=0, help="resume the N-GPU checkpoint on this many GPUs")
    p.add_argument("--extra-steps", type=int, default=5, help="steps after the resharding checkpoint")
    p.add_argument(
        "--no-reshard",
        action="store_true",
        help="FSDP2: keep gathered layer weights from forward to backward",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args()

    work = Path(args.workdir)
    one = summarize(run_training(1, args, work / "one", args.steps), args.skip)
    total = args.steps + (args.extra_steps if args.reshard_to else 0)
    many = summarize(
        run_training(args.gpus, args, work / "many", total, checkpoint_every=args.steps), args.skip
    )
    reshard = resharded(args, work) if args.reshard_to else None
    diffs = [abs(a - b) for a, b in zip(one["losses"], many["losses"][: args.steps], strict=True)]
    result = {
        **result_header("train_scaling"),
        "config": vars(args),
        "flop_formula": "3 x forward matmul FLOPs per token (weights incl. LM head + attention at seq)",
        "one_gpu": one,
        "n_gpus": many,
        "tokens_per_s_per_gpu": many["tokens_per_s"] / args.gpus,
        "scaling_efficiency": many["tokens_per_s"] / args.gpus / one["tokens_per_s"],
        "loss_max_abs_diff": max(diffs),
        "loss_max_abs_diff_first10": max(diffs[:10]),
        "reshard": reshard,
    }
    write_result(result, args.out or dated_result(f"train_scaling_{args.gpus}gpu"))
    print(f"{'run':>8} {'tok/s':>10} {'tok/s/GPU':>10} {'MFU':>6} {'GiB':>5}")
    print(
        f"{'1 GPU':>8} {one['tokens_per_s']:10.0f} {one['tokens_per_s']:10.0f} {one['mfu']:6.1%} {one['max_mem_gib']:5.1f}"
    )
    per = many["tokens_per_s"] / args.gpus
    print(
        f"{f'{args.gpus} GPUs':>8} {many['tokens_per_s']:10.0f} {per:10.0f} {many['mfu']:6.1%} {many['max_mem_gib']:5.1f}"
    )
    print(
        f"scaling efficiency {result['scaling_efficiency']:.1%}; loss max |diff| {max(diffs):.4f} (first 10 steps {max(diffs[:10]):.4f})"
    )
    if reshard:
        print(
            f"resumed the {args.gpus}-GPU step-{args.steps} checkpoint on {args.reshard_to} GPUs: losses "
            f"{reshard['resumed_losses']} vs {reshard['reference_losses']} (max |diff| {reshard['max_abs_diff']:.4f})"
        )


def resharded(args: argparse.Namespace, work: Path) -> dict:
    """Resume the N-GPU run's step-`steps` checkpoint on `reshard_to` GPUs (same global batch)
    and compare its next losses with the N-GPU run's own."""
    src, dst = work / "many" / "checkpoints", work / "reshard" / "checkpoints"
    shutil.rmtree(work / "reshard", ignore_errors=True)
    dst.mkdir(parents=True)
    shutil.copytree(src / f"step_{args.steps:08d}", dst / f"step_{args.steps:08d}")
    records = run_training(
        args.reshard_to, args, work / "reshard", args.steps + args.extra_steps, resume=True
    )
    many = [
        json.loads(x) for x in (work / "many" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x
    ]
    reference = [r["loss"] for r in many if r["step"] > args.steps]
    resumed = [r["loss"] for r in records]
    return {
        "from_gpus": args.gpus,
        "to_gpus": args.reshard_to,
        "resumed_at_step": args.steps,
        "first_resumed_step": records[0]["step"],
        "resumed_losses": resumed,
        "reference_losses": reference,
        "max_abs_diff": max(abs(a - b) for a, b in zip(resumed, reference, strict=True)),
    }


if __name__ == "__main__":
    main()
