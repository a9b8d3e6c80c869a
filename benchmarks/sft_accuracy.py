"""Does SFT teach a tiny model to answer held-out synthetic math in the chat format?

Runs the shipped CPU recipes end to end through the CLI, at a larger scale:
  1. `data synth --scale S` (the embedded corpus: pretraining text, SFT chats, held-out eval sets);
  2. base model: `train --recipe train/tiny_cpu` for --pretrain-steps;
  3. SFT model: `train --recipe train/sft_tiny_cpu` from the base model for --sft-steps;
  4. `eval --chat` of both on the held-out synthetic GSM8K- and MATH-style sets (exact match
     through the math judge, the chat protocol's sampling).

    python benchmarks/sft_accuracy.py --scale 10 --pretrain-steps 2000 --sft-steps 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from provenance import RESULTS, result_header, write_result

CLI = [sys.executable, "-m", "mobilellm_r1.cli"]


def cli(*args: str) -> None:
    print("+ mobilellm-r1", " ".join(args), flush=True)
    subprocess.run([*CLI, *args], check=True)


def sets(**values: object) -> list[str]:
    return [x for k, v in values.items() for x in ("--set", f"{k.replace('__', '.')}={v}")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/sft_accuracy")
    p.add_argument("--scale", type=float, default=10.0)
    p.add_argument("--pretrain-steps", type=int, default=2000)
    p.add_argument("--sft-steps", type=int, default=1000)
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--tasks", default="gsm8k,math500")
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--out", default=str(RESULTS / "sft_accuracy_tiny.json"))
    args = p.parse_args()
    w = Path(args.work)
    start = time.perf_counter()
    if not (w / "synth/manifest.json").exists():
        cli("data", "synth", "--out", str(w / "synth"), "--scale", str(args.scale))
    data = f"[data_root={w}/synth,synth.out={w}/synth,shards_root={w}/shards]"
    if not (w / "base/final").exists():
        cli(
            "train",
            "--recipe",
            "train/tiny_cpu",
            *sets(
                out_dir=w / "base",
                steps=args.pretrain_steps,
                optim__warmup_steps=50,
                data__micro_batch=args.micro_batch,
                data__overrides=data,
                eval_files="[]",
                eval_every=0,
                checkpoint_every=500,
            ),
        )
    if not (w / "sft/final").exists():
        cli(
            "train",
            "--recipe",
            "train/sft_tiny_cpu",
            *sets(
                out_dir=w / "sft",
                steps=args.sft_steps,
                model__init_from=w / "base/final",
                data__micro_batch=args.micro_batch,
                sft__sources__0__path=w / "synth/sft/general.jsonl",
                sft__sources__1__path=w / "synth/sft/reasoning.jsonl",
                sft__sources__0__epochs=100,
                sft__sources__1__epochs=100,
                eval_data_dir=w / "synth/eval",
                checkpoint_every=500,
            ),
        )
    summaries = {}
    for name in ("base", "sft"):
        out = w / f"eval_{name}"
        cli(
            "eval",
            "--model",
            str(w / name / "final"),
            "--tasks",
            args.tasks,
            "--chat",
            "--data-dir",
            str(w / "synth/eval"),
            "--limit",
            str(args.limit),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--out",
            str(out),
        )
        summaries[name] = json.loads((out / "summary.json").read_text())
    result = {
        **result_header("sft_accuracy", "cuda" if torch.cuda.is_available() else "cpu"),
        "settings": vars(args),
        "summary": summaries,
        "seconds": time.perf_counter() - start,
    }
    write_result(result, args.out, quiet=True)
    print(f"wrote {args.out}\n{'task':<10}{'base':>10}{'sft':>10}")
    for task in args.tasks.split(","):
        print(
            f"{task:<10}{summaries['base'][task]['pass@1']:>10.3f}{summaries['sft'][task]['pass@1']:>10.3f}"
        )


if __name__ == "__main__":
    main()
