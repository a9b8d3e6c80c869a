"""FP8 training's loss against bf16's seed-to-seed spread.

The same training runs in bf16 and with `fp8` (torchao Float8Linear on the decoder's linears,
`train/float8.py`) for each seed; a seed sets both the initial weights and the data order. The
loss curves are smoothed (moving mean over `--window` steps) and compared step by step after
`--skip` warm-up steps:
  * spread: max - min of the bf16 seeds' curves (what changing the seed alone does);
  * gap: |mean of the fp8 seeds - mean of the bf16 seeds|.
Verdict: "within spread" when the gap's mean over the last `--tail` steps is no larger than the
spread's mean there; the JSON also holds both over the whole run and the curves themselves.

    python benchmarks/fp8_loss.py                        # CUDA: 140m, 2,000 steps of 16 x 2,048 tokens, seeds 0 1
    python benchmarks/fp8_loss.py --fp8 rowwise --seeds 0 1 2
    python benchmarks/fp8_loss.py --device cpu --preset tiny --steps 20 --seq-len 64 --micro-batch 4 \\
        --data data/synthetic --window 4 --skip 4 --tail 8   # seconds; torchao emulates fp8 on CPU

The real corpora (data/real_small, ../shared/data/corpora) by default; `--data data/synthetic`
uses the embedded synthetic corpus. With `--work DIR` finished runs are kept there and reused, so
the same command run again after a cut-off continues (four 140M runs outlast a 10-minute slot);
only each run's metrics.jsonl is needed for that. Writes benchmarks/results/fp8_loss_<device>_<preset>_<date>.json
and a .png beside it (curves; gap against spread per step), and prints a table last.
`--replot RESULT.json` redraws a result's figure from its curves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from mobilellm_r1.data.records import read_jsonl
from mobilellm_r1.train.config import load_train_config
from mobilellm_r1.train.metrics import METRICS
from mobilellm_r1.train.objectives import prepare_data
from mobilellm_r1.train.trainer import Trainer
from provenance import dated_result, result_header, write_result

REPO = Path(__file__).resolve().parents[1]


def losses(run_dir: Path) -> list[float]:
    """The loss of every step, in order, from a run's metrics.jsonl."""
    by_step = {r["step"]: r["loss"] for r in read_jsonl(run_dir / METRICS) if "loss" in r}
    return [by_step[s] for s in sorted(by_step)]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving mean (the first points average what exists so far)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def overrides(args: argparse.Namespace, seed: int, fp8: str, out_dir: Path) -> list[str]:
    data = [f"seq_len={args.seq_len}"]
    if args.data == "data/real_small":
        data.append(f"data_root={args.corpora}")
    else:
        data.append(f"'synth={{out: data/synth, seed: 0, scale: {args.synth_scale}}}'")
    return [
        f"model.preset={args.preset}",
        f"model.seed={seed}",
        f"seed={seed}",
        f"data.recipe={args.data}",
        f"data.overrides=[{', '.join(data)}]",
        f"data.micro_batch={args.micro_batch}",
        f"steps={args.steps}",
        f"optim.lr={args.lr}",
        f"optim.warmup_steps={args.warmup}",
        "precision=bf16",
        f"fp8={fp8}",
        f"compile={str(args.device == 'cuda').lower()}",
        f"out_dir={out_dir}",
        "log_every=1",
        "eval_every=0",
        "checkpoint_every=0",
    ]


def train(args: argparse.Namespace, seed: int, fp8: str, work: Path) -> list[float]:
    """One run in `work` (its data shards are made there once and shared) -> its losses. A run
    whose metrics.jsonl already holds every step is reused, so a cut-off invocation continues (and
    the metrics files alone carry finished runs to another machine)."""
    out_dir = work / f"{fp8}_seed{seed}"
    if (out_dir / METRICS).is_file() and len(done := losses(out_dir)) == args.steps:
        return done
    shutil.rmtree(out_dir, ignore_errors=True)  # a run cut off part way starts over
    cfg = load_train_config("train/tiny_cpu", overrides(args, seed, fp8, out_dir))
    before = Path.cwd()
    os.chdir(work)  # the data recipes write their shards under ./data
    try:
        prepare_data(cfg, args.device)
        Trainer(cfg, device=args.device).fit()
    finally:
        os.chdir(before)
    return losses(out_dir)


def compare(curves: dict[str, list[list[float]]], args: argparse.Namespace) -> dict:
    """Spread of the bf16 seeds and gap between the fp8 and bf16 seed means, per step."""
    smoothed = {k: [smooth(c, args.window) for c in runs] for k, runs in curves.items()}
    steps = range(args.skip, args.steps)
    spread = [max(c[s] for c in smoothed["bf16"]) - min(c[s] for c in smoothed["bf16"]) for s in steps]
    mean = {k: [sum(c[s] for c in runs) / len(runs) for s in steps] for k, runs in smoothed.items()}
    gap = [abs(f - b) for f, b in zip(mean["fp8"], mean["bf16"], strict=True)]
    tail = min(args.tail, len(gap))
    gap_tail, spread_tail = sum(gap[-tail:]) / tail, sum(spread[-tail:]) / tail
    return {
        "gap_tail": gap_tail,
        "spread_tail": spread_tail,
        "gap_max": max(gap),
        "spread_max": max(spread),
        "final_bf16": mean["bf16"][-1],
        "final_fp8": mean["fp8"][-1],
        "verdict": "within spread" if gap_tail <= spread_tail else "outside spread",
        "smoothed_mean": mean,
        "spread_per_step": spread,
        "gap_per_step": gap,
    }


def plot(curves: dict[str, list[list[float]]], c: dict, args: argparse.Namespace, path: Path) -> None:
    """Left: every run's smoothed loss after the warm-up steps; right: per step, the bf16 seeds'
    spread and the gap between the fp8 and bf16 seed means from `compare`'s result `c` (what the
    verdict compares)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_gap) = plt.subplots(1, 2, figsize=(12, 4))
    for (kind, runs), color in zip(curves.items(), ("tab:blue", "tab:red"), strict=True):
        for seed, curve, style in zip(args.seeds, runs, ("-", "--", ":", "-."), strict=False):
            label = f"{kind if kind == 'bf16' else 'fp8 ' + args.fp8}, seed {seed}"
            steps = range(args.skip + 1, len(curve) + 1)
            ax.plot(
                steps, smooth(curve, args.window)[args.skip :], color=color, ls=style, alpha=0.8, label=label
            )
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (moving mean of {args.window})")
    ax.set_title(f"{args.preset}: bf16 vs fp8 {args.fp8}")
    ax.legend(fontsize=8)
    steps = range(args.skip + 1, args.steps + 1)
    ax_gap.plot(steps, c["spread_per_step"], color="tab:blue", label="bf16 seed spread (max - min)")
    ax_gap.plot(steps, c["gap_per_step"], color="tab:red", label="|fp8 mean - bf16 mean|")
    ax_gap.set_xlabel("step")
    ax_gap.set_ylabel("loss difference")
    ax_gap.set_title(f"last {args.tail} steps: gap {c['gap_tail']:.4f}, spread {c['spread_tail']:.4f}")
    ax_gap.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replot(result_path: Path) -> None:
    """Redraw the .png beside a result JSON from its own curves and settings."""
    result = json.loads(result_path.read_text())
    args = argparse.Namespace(**result["settings"])
    plot(result["curves"], compare(result["curves"], args), args, result_path.with_suffix(".png"))
    print(f"wrote {result_path.with_suffix('.png')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="140m")
    p.add_argument("--fp8", choices=["tensorwise", "rowwise"], default="tensorwise")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--data", choices=["data/real_small", "data/synthetic"], default="data/real_small")
    p.add_argument("--corpora", default=str(REPO.parent / "shared" / "data" / "corpora"))
    p.add_argument(
        "--synth-scale", type=float, default=1.0, help="size of the synthetic corpus (--data data/synthetic)"
    )
    p.add_argument("--window", type=int, default=50, help="moving-mean window (steps)")
    p.add_argument("--skip", type=int, default=100, help="warm-up steps left out of the comparison")
    p.add_argument("--tail", type=int, default=200, help="last steps the verdict averages")
    p.add_argument("--work", default=None, help="run directory (default: a temporary one)")
    p.add_argument("--out", default=None)
    p.add_argument("--replot", default=None, help="redraw the figure of this result JSON (no training)")
    args = p.parse_args()
    if args.replot:
        replot(Path(args.replot))
        return
    args.corpora = str(Path(args.corpora).resolve())  # the runs work in --work
    if len(args.seeds) < 2:
        p.error("--seeds needs at least two seeds: the spread is between seeds")
    if not args.skip < args.steps:
        p.error(f"--skip ({args.skip}) must be below --steps ({args.steps})")
    out = Path(args.out) if args.out else dated_result(f"fp8_loss_{args.device}_{args.preset}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        curves = {
            kind: [train(args, seed, fp8, work) for seed in args.seeds]
            for kind, fp8 in (("bf16", "none"), ("fp8", args.fp8))
        }
    result = {**result_header("fp8_loss", device=args.device), "settings": vars(args), "curves": curves}
    result["comparison"] = compare(curves, args)
    write_result(result, out)
    plot(curves, result["comparison"], args, out.with_suffix(".png"))
    c = result["comparison"]
    print(f"{'':8} | final loss (smoothed, seed mean) | tail gap / spread | max gap / spread | verdict")
    print(
        f"{args.preset:8} | bf16 {c['final_bf16']:.4f}, fp8 {c['final_fp8']:.4f} | {c['gap_tail']:.4f} / "
        f"{c['spread_tail']:.4f} | {c['gap_max']:.4f} / {c['spread_max']:.4f} | {c['verdict']}"
    )


if __name__ == "__main__":
    main()
