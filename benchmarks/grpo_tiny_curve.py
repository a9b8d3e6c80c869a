"""GRPO reward curve on the tiny verifiable task (train/grpo_toy.py), on CPU.

A 2-layer model warm-started on the answer format (random digits, ~10% reward) is trained with the
shipped `train/grpo_tiny_cpu` recipe; the per-step mean reward, KL, clip fraction and completion
length are written to JSON and printed.

    python benchmarks/grpo_tiny_curve.py --steps 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from mobilellm_r1.tokenizer import load_tokenizer
from mobilellm_r1.train.config import load_train_config
from mobilellm_r1.train.grpo_toy import sum_prompts, warm_start
from mobilellm_r1.train.trainer import Trainer
from provenance import RESULTS, result_header, write_result

KEYS = ("reward", "kl", "clip_frac", "completion_len", "groups_with_signal")


def run_curve(steps: int, work: Path) -> list[dict]:
    tokenizer = load_tokenizer()
    rows = sum_prompts(200, seed=0)
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    init = warm_start(tokenizer, rows, work / "init")
    overrides = [
        f"model.init_from={init}",
        f"grpo.prompts=[{prompts}]",
        f"out_dir={work / 'run'}",
        f"steps={steps}",
        "grpo.max_new_tokens=6",  # \\boxed{d} and <|eot_id|>
        "grpo.prompts_per_step=4",
        "optim.lr=2e-3",
        "checkpoint_every=0",
        "log_every=1",
    ]
    Trainer(load_train_config("train/grpo_tiny_cpu", overrides), device="cpu").fit()
    log = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], **{k: r[k] for k in KEYS if k in r}} for r in log if "reward" in r]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--out", default=str(RESULTS / "grpo_tiny_curve_cpu.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        curve = run_curve(args.steps, Path(tmp))
    rewards = [r["reward"] for r in curve]
    summary = {
        "first5_mean_reward": sum(rewards[:5]) / 5,
        "last5_mean_reward": sum(rewards[-5:]) / 5,
        "first10_mean_reward": sum(rewards[:10]) / 10,
        "last10_mean_reward": sum(rewards[-10:]) / 10,
    }
    result = {
        **result_header("grpo_tiny_curve", device="cpu"),
        "config": {"recipe": "train/grpo_tiny_cpu", "steps": args.steps, "prompts_per_step": 4},
        "summary": summary,
        "curve": curve,
    }
    write_result(result, args.out)
    print(f"{'step':>5} {'reward':>7} {'kl':>8} {'clip':>6} {'len':>5}")
    for r in curve:
        print(
            f"{r['step']:>5} {r['reward']:7.3f} {r.get('kl', 0):8.4f} "
            f"{r.get('clip_frac', 0):6.3f} {r.get('completion_len', 0):5.2f}"
        )
    print(" ".join(f"{k}={v:.3f}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
