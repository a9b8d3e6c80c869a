"""The paper's Table 2 "joint ablation" at small scale: general SFT then reasoning SFT, against
one joint SFT on the union of the same data, with the same steps and tokens.

Per seed (seeds change the initialisation, the pretraining data order and the SFT order):

  1. one tiny model pretrained on the synthetic corpus's clean math / code / knowledge sources
     (--pretrain-steps, linear decay);
  2. (a) *sequential*: SFT on the general chats (--general-epochs passes), then SFT on the
     reasoning chats (--reasoning-epochs passes), each stage its own warm-up and decay, as the
     paper's two post-training stages;
     (b) *joint*: one SFT run from the same pretrained model on both sources at once with the
     same passes over each and the sum of (a)'s steps (steps = packed rows of one loader epoch /
     micro-batch, so both arms see every chat the same number of times);
  3. held-out evaluation of both arms (and NLL of the pretrained model): exact match on the
     held-out synthetic GSM8K-format problems (chat protocol, greedy, math judge), NLL of the
     GSM8K- and MATH-format reference solutions given their problem, knowledge: accuracy on the
     synthetic MMLU-format set and NLL of the held-out knowledge probing texts.

The paper (arXiv 2509.24945, Table 2) finds the sequential order better than joint training.
Each metric gets a verdict over the seeds (`common.verdict`: sign of sequential - joint, and
whether it exceeds 2 pooled standard errors).

    python benchmarks/paper_claims/joint_sft.py                      # CPU, tiny, learned vocab
    python benchmarks/paper_claims/joint_sft.py --device cuda --preset 140m --vocab llama3 \\
        --scale 20 --pretrain-steps 4000 --micro-batch 16

Writes benchmarks/results/paper_claims/joint_sft_<date>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from common import (
    Corpus,
    add_common_arguments,
    exact_match,
    finish_claim,
    heldout_nll,
    init_model,
    mean_std,
    mmlu_accuracy,
    paired_verdict,
    pyplot,
    setup_run,
    train,
    verdict,
)

from mobilellm_r1.data.packing import build_sft_loader
from mobilellm_r1.tokenizer import load_tokenizer
from mobilellm_r1.train.config import load_train_config

ARMS = ("sequential", "joint")
# metric -> (label, sign of the paper's effect on sequential - joint: +1 higher is better)
METRICS = {
    "exact_match": ("GSM8K-format exact match (chat, greedy)", 1),
    "gsm8k_ref": ("NLL, GSM8K-format reference solutions", -1),
    "math500_ref": ("NLL, MATH-format reference solutions", -1),
    "mmlu_acc": ("synthetic MMLU-format accuracy", 1),
    "knowledge": ("NLL, held-out knowledge texts", -1),
}
PRIMARY = "exact_match"


def sft_sources(corpus: Corpus, epochs: dict[str, float]) -> str:
    """The `sft.sources=` override for the named synthetic chat files with their passes."""
    rows = [
        {"name": n, "path": str(corpus.sft(n)), "mapper": "messages", "epochs": e} for n, e in epochs.items()
    ]
    return "sft.sources=" + json.dumps(rows)


def sft_overrides(corpus: Corpus, epochs: dict[str, float], seed: int, args: argparse.Namespace) -> list[str]:
    """train/sft_tiny_cpu overrides of one SFT run (steps added by the caller)."""
    return [
        sft_sources(corpus, epochs),
        f"sft.seed={seed}",
        f"seed={seed}",
        f"data.micro_batch={args.micro_batch}",
        f"data.seq_len={args.seq_len}",
        f"optim.lr={args.sft_lr}",
        "eval_every=0",
        "checkpoint_every=0",
        "keep_last=1",
    ]


def epoch_steps(overrides: list[str], tokenizer_dir: Path) -> int:
    """Optimizer steps that take one loader epoch of these SFT sources (packed rows / micro-batch,
    rounded up), read from the same packing the trainer uses with the tokenizer of `tokenizer_dir`."""
    cfg = load_train_config("train/sft_tiny_cpu", [f"model.init_from={tokenizer_dir}", *overrides])
    loader = build_sft_loader(
        cfg.sft, load_tokenizer(tokenizer_dir), seq_len=cfg.data.seq_len, batch_size=cfg.data.micro_batch
    )
    rows = 0
    while loader.schedule.epochs_done < 1.0:
        loader.schedule.next_row()
        rows += 1
    return max(1, math.ceil(rows / cfg.data.micro_batch))


def evaluate(model: Path, corpus: Corpus, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Every metric of METRICS (and the probing-set NLLs) of one model."""
    nll = heldout_nll(model, corpus, args.device, args.eval_limit, args.seq_len)
    return {
        **nll,
        "exact_match": exact_match(
            model, corpus, out / "gsm8k", args.eval_limit, args.max_new_tokens, args.device
        ),
        "mmlu_acc": mmlu_accuracy(model, corpus, out / "mmlu", args.eval_limit, args.device),
    }


def pretrain_overrides(corpus: Corpus, seed: int, args: argparse.Namespace) -> list[str]:
    """train/tiny_cpu overrides of the pretraining run (clean sources, linear decay)."""
    return [
        f"data.recipe={corpus.recipe('clean')}",
        f"data.overrides=[seed={seed}]",
        f"data.micro_batch={args.micro_batch}",
        f"seed={seed}",
        f"steps={args.pretrain_steps}",
        f"optim.lr={args.pretrain_lr}",
        f"optim.warmup_steps={max(1, args.pretrain_steps // 20)}",
        "eval_every=0",
        "checkpoint_every=0",
        "keep_last=1",
    ]


def run_seed(corpus: Corpus, seed: int, args: argparse.Namespace) -> dict:
    """Pretrain once, then both arms; their trained tokens, steps, training wall seconds (when
    each run was made) and held-out metrics."""
    root = corpus.work / f"seed_{seed}"
    init = init_model(corpus, root / "init", args.preset, seed)
    pre = train(
        "train/tiny_cpu", init, root / "pretrain", pretrain_overrides(corpus, seed, args), args.device
    )
    seconds = {"pretrain": pre["elapsed_s"], "sequential": 0.0}
    pretrained = root / "pretrain" / "final"
    epochs = {"general": args.general_epochs, "reasoning": args.reasoning_epochs}
    stage_steps, stage_tokens, model = {}, 0, pretrained
    for name in epochs:  # (a) sequential: general, then reasoning from its result
        overrides = sft_overrides(corpus, {name: epochs[name]}, seed, args)
        stage_steps[name] = epoch_steps(overrides, pretrained)
        out = root / f"sequential_{name}"
        summary = train(
            "train/sft_tiny_cpu", model, out, [*overrides, f"steps={stage_steps[name]}"], args.device
        )
        stage_tokens, model = stage_tokens + summary["tokens"], out / "final"
        seconds["sequential"] += summary["elapsed_s"]
    joint_steps = sum(stage_steps.values())  # (b) joint: both sources, the same steps
    overrides = [*sft_overrides(corpus, epochs, seed, args), f"steps={joint_steps}"]
    joint = train("train/sft_tiny_cpu", pretrained, root / "joint", overrides, args.device)
    models = {"sequential": model, "joint": root / "joint" / "final"}
    return {
        "seed": seed,
        "steps": {"sequential": stage_steps, "joint": joint_steps},
        "trained_tokens": {"sequential": stage_tokens, "joint": joint["tokens"]},
        "train_seconds": {**seconds, "joint": joint["elapsed_s"]},
        "pretrained": heldout_nll(pretrained, corpus, args.device, args.eval_limit, args.seq_len),
        **{arm: evaluate(path, corpus, root / "evals" / arm, args) for arm, path in models.items()},
    }


def summarize(seeds: list[dict]) -> tuple[dict, dict]:
    """Mean/std per arm and metric, and per metric the verdict (sequential vs joint, pooled
    standard error) and the paired verdict (per-seed differences: both arms share the seed's
    pretrained model)."""
    stats = {arm: {m: mean_std([s[arm][m] for s in seeds]) for m in METRICS} for arm in ARMS}
    verdicts = {}
    for m, (_, sign) in METRICS.items():
        a, b = [s["sequential"][m] for s in seeds], [s["joint"][m] for s in seeds]
        verdicts[m] = {**verdict(a, b, sign), "paired": paired_verdict(a, b, sign)}
    return stats, verdicts


def plot(result: dict):
    """One panel per metric: each seed's two arms joined by a line (the arms share a pretrained
    model), and each arm's mean +- std beside its points."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 3.4))
    for ax, (metric, (label, _)) in zip(axes, METRICS.items(), strict=True):
        for seed in result["seeds"]:
            ax.plot(range(len(ARMS)), [seed[arm][metric] for arm in ARMS], "o-", color="0.6", ms=4)
        for i, arm in enumerate(ARMS):
            s = result["stats"][arm][metric]
            ax.errorbar(i + 0.12, s["mean"], yerr=s["std"], fmt="s", color=f"C{i}", capsize=4)
        ax.set_xticks(range(len(ARMS)), ARMS)
        ax.set_xlim(-0.4, len(ARMS) - 0.6)
        ax.set_title(f"{label}\n{result['verdicts'][metric]['verdict']}", fontsize=8)
    fig.suptitle(f"Table 2 joint ablation, {result['settings']['preset']}, {len(result['seeds'])} seeds")
    fig.tight_layout()
    return fig


def print_table(result: dict) -> None:
    print(f"\n{'metric':<42}{'sequential':>18}{'joint':>18}{'seq - joint':>13}  verdict (paired)")
    for metric, (label, _) in METRICS.items():
        cells = [
            f"{result['stats'][a][metric]['mean']:.4f} ± {result['stats'][a][metric]['std']:.4f}"
            for a in ARMS
        ]
        v = result["verdicts"][metric]
        paired = v["paired"]["verdict"]
        print(f"{label:<42}{cells[0]:>18}{cells[1]:>18}{v['difference']:>+13.4f}  {v['verdict']} ({paired})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, "joint_sft")
    p.add_argument("--pretrain-steps", type=int, default=400)
    p.add_argument("--pretrain-lr", type=float, default=3e-3)
    p.add_argument("--general-epochs", type=float, default=1.0, help="passes over the general chats")
    p.add_argument("--reasoning-epochs", type=float, default=3.0, help="passes over the reasoning chats")
    p.add_argument("--sft-lr", type=float, default=1e-3)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256, help="packed SFT row length")
    p.add_argument("--eval-limit", type=int, default=200, help="held-out problems / questions / texts")
    p.add_argument("--max-new-tokens", type=int, default=96)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    corpus = setup_run(args)
    seeds = [run_seed(corpus, seed, args) for seed in range(args.seeds)]
    stats, verdicts = summarize(seeds)
    body = {
        "claim": "Table 2: general SFT then reasoning SFT beats one joint SFT on the union",
        "primary_metric": PRIMARY,
        "metrics": {m: label for m, (label, _) in METRICS.items()},
        "seeds": seeds,
        "stats": stats,
        "verdicts": verdicts,
    }
    return finish_claim("joint_sft", args, argv, time.perf_counter() - start, body, plot, print_table)


if __name__ == "__main__":
    main()
