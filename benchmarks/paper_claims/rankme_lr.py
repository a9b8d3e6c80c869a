"""The paper's Table 11 at small scale: does RankMe (Eq. 8) of a pretrained model order the
results after mid-training across pretraining learning rates, where the pretraining loss does not?

Per seed (seeds change the initialisation and the data order; one initial model per seed):

  1. pretraining from that model at each peak learning rate of --lrs, with the same steps, data
     (the synthetic corpus with its noise sources, uniform weights), warm-up and decay shape;
  2. of each pretrained model: RankMe of its mean-pooled final hidden states over held-out
     probing texts (math, code, knowledge), its held-out NLL on those texts (the pretraining
     loss, measured on text it never trained on) and its final training loss (mean over the last
     10% of steps);
  3. the same mid-training of each (continued training on the clean math / code / knowledge
     sources, one learning rate, linear decay to zero);
  4. the post-mid-training held-out metric: NLL of the held-out MATH-format reference solutions
     given their problem (the primary metric), and of the GSM8K-format ones (calculator
     annotations no training source contains).

Then per seed, Spearman rank correlations over the learning rates between the post-mid-training
metric (negated NLL: higher is better) and (a) RankMe, (b) the negated pretraining loss; and the
same pooled over every (seed, learning rate) point. The paper's claim holds when RankMe's
correlation is positive and above the loss's by more than 2 pooled standard errors over seeds
(`common.verdict`).

    python benchmarks/paper_claims/rankme_lr.py                      # CPU, tiny, learned vocab
    python benchmarks/paper_claims/rankme_lr.py --device cuda --preset 140m --vocab llama3 \\
        --scale 20 --pretrain-steps 3000 --midtrain-steps 1000 --lrs 1e-3 2e-3 4e-3 8e-3

Writes benchmarks/results/paper_claims/rankme_lr_<date>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import (
    CAPABILITIES,
    Corpus,
    add_common_arguments,
    finish_claim,
    heldout_nll,
    init_model,
    lm_overrides,
    mean_std,
    paired_verdict,
    pyplot,
    rankme,
    setup_run,
    spearman,
    train,
    verdict,
)

POST_METRICS = {"gsm8k_ref": "GSM8K-format reference NLL", "math500_ref": "MATH-format reference NLL"}
PRIMARY = "math500_ref"  # the corpus's solution style on held-out problems; GSM8K's format is unseen
PREDICTORS = {
    "rankme": "RankMe (Eq. 8)",
    "pretrain_nll": "held-out pretraining NLL",
    "train_loss": "train loss",
    "lr": "peak LR (reference)",
}
# orientation: +1 when a higher value should mean a better model after mid-training; the LR
# itself has no expected direction (its rho shows how much of an ordering the LR alone explains)
ORIENTATION = {"rankme": 1, "pretrain_nll": -1, "train_loss": -1, "lr": 1}


def final_train_loss(run: Path) -> float:
    """Mean training loss over the last 10% of a run's steps (metrics.jsonl logs every step)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    last = losses[-1][0]
    tail = [loss for step, loss in losses if step > 0.9 * last] or [losses[-1][1]]
    return sum(tail) / len(tail)


def run_lr(corpus: Corpus, init: Path, root: Path, seed: int, lr: float, args: argparse.Namespace) -> dict:
    """Pretrain at peak `lr`, measure, mid-train, measure (and the runs' training wall seconds,
    from when each was made)."""
    pre, mid = root / f"pretrain_lr{lr:g}", root / f"midtrain_lr{lr:g}"
    pre_overrides = lm_overrides(corpus.recipe("noisy"), seed, args.pretrain_steps, lr, args.micro_batch)
    warmup = f"optim.warmup_steps={max(1, args.pretrain_steps // 20)}"
    pre_run = train("train/tiny_cpu", init, pre, [*pre_overrides, warmup], args.device)
    pre_nll = heldout_nll(pre / "final", corpus, args.device, args.eval_limit)
    mid_overrides = lm_overrides(
        corpus.recipe("clean"), seed, args.midtrain_steps, args.midtrain_lr, args.micro_batch
    )
    decay = ["optim.warmup_steps=0", "optim.final_lr_ratio=0.0"]
    mid_run = train("train/tiny_cpu", pre / "final", mid, [*mid_overrides, *decay], args.device)
    post = heldout_nll(mid / "final", corpus, args.device, args.eval_limit)
    return {
        "lr": lr,
        "rankme": rankme(pre / "final", corpus, args.device, args.rankme_texts),
        "pretrain_nll": sum(pre_nll[c] for c in CAPABILITIES) / len(CAPABILITIES),
        "train_loss": final_train_loss(pre),
        "pretrained": pre_nll,
        "post_midtrain": post,
        "train_seconds": {"pretrain": pre_run["elapsed_s"], "midtrain": mid_run["elapsed_s"]},
    }


def correlations(points: list[dict]) -> dict[str, dict[str, float]]:
    """Spearman rho between each predictor (oriented by ORIENTATION: RankMe, -loss, the LR) and
    each post-mid-training metric (-NLL)."""
    return {
        p: {
            m: spearman([ORIENTATION[p] * x[p] for x in points], [-x["post_midtrain"][m] for x in points])
            for m in POST_METRICS
        }
        for p in PREDICTORS
    }


def run_seed(corpus: Corpus, seed: int, args: argparse.Namespace) -> dict:
    root = corpus.work / f"seed_{seed}"
    init = init_model(corpus, root / "init", args.preset, seed)
    points = [run_lr(corpus, init, root, seed, lr, args) for lr in args.lrs]
    return {"seed": seed, "points": points, "spearman": correlations(points)}


def summarize(seeds: list[dict]) -> dict:
    """Mean/std of each predictor's per-seed rho, the pooled rho, and the verdicts (RankMe vs
    each loss, on the primary and the other post-mid-training metric)."""
    pooled = correlations([p for s in seeds for p in s["points"]])
    per_seed = {p: {m: [s["spearman"][p][m] for s in seeds] for m in POST_METRICS} for p in PREDICTORS}
    return {
        "spearman_stats": {p: {m: mean_std(v) for m, v in ms.items()} for p, ms in per_seed.items()},
        "spearman_pooled": pooled,
        "verdicts": {
            f"rankme_vs_{loss}/{m}": {
                **verdict(per_seed["rankme"][m], per_seed[loss][m], 1),
                "paired": paired_verdict(per_seed["rankme"][m], per_seed[loss][m], 1),
            }
            for loss in ("pretrain_nll", "train_loss")
            for m in POST_METRICS
        },
    }


def plot(result: dict):
    """Post-mid-training NLL against each predictor, one colour per seed, a line per seed over
    the learning rates."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(PREDICTORS), figsize=(4.4 * len(PREDICTORS), 3.6))
    for ax, (p, label) in zip(axes, PREDICTORS.items(), strict=True):
        for s in result["seeds"]:
            xs = [x[p] for x in s["points"]]
            ys = [x["post_midtrain"][PRIMARY] for x in s["points"]]
            ax.plot(xs, ys, "o-", label=f"seed {s['seed']}")
            for x, y, point in zip(xs, ys, s["points"], strict=True):
                ax.annotate(f"{point['lr']:g}", (x, y), fontsize=7)
        rho = result["spearman_stats"][p][PRIMARY]
        ax.set_title(f"{label}: rho {rho['mean']:+.2f} ± {rho['std']:.2f}", fontsize=9)
        if p == "lr":
            ax.set_xscale("log")
            ax.set_xlabel("peak pretraining learning rate")
        else:
            ax.set_xlabel(f"{label} of the pretrained model")
        ax.set_ylabel(f"after mid-training: {POST_METRICS[PRIMARY]}")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Table 11: pretraining peak LR {result['settings']['lrs']}, {result['settings']['preset']}")
    fig.tight_layout()
    return fig


def print_table(result: dict) -> None:
    print(
        f"\n{'seed':>4} {'lr':>8} {'RankMe':>8} {'pre NLL':>8} {'train':>8} "
        + "".join(f"{m:>13}" for m in POST_METRICS)
    )
    for s in result["seeds"]:
        for x in s["points"]:
            post = "".join(f"{x['post_midtrain'][m]:>13.4f}" for m in POST_METRICS)
            print(
                f"{s['seed']:>4} {x['lr']:>8g} {x['rankme']:>8.3f} {x['pretrain_nll']:>8.4f} {x['train_loss']:>8.4f} {post}"
            )
    print(
        f"\n{'Spearman rho with -post NLL':<30}"
        + "".join(f"{m + ' (seeds)':>24}{'pooled':>9}" for m in POST_METRICS)
    )
    for p, label in PREDICTORS.items():
        cells = "".join(
            f"{result['spearman_stats'][p][m]['mean']:>+15.2f} ± {result['spearman_stats'][p][m]['std']:<6.2f}"
            f"{result['spearman_pooled'][p][m]:>+9.2f}"
            for m in POST_METRICS
        )
        print(f"{label:<30}{cells}")
    print()
    for name, v in result["verdicts"].items():
        paired = v["paired"]
        print(
            f"{name:<36} rho difference {v['difference']:+.3f} (2 SE {2 * v['se']:.3f}): {v['verdict']}; "
            f"paired (2 SE {2 * paired['se']:.3f}): {paired['verdict']}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, "rankme_lr")
    p.add_argument(
        "--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2], help="peak pretraining LRs"
    )
    p.add_argument("--pretrain-steps", type=int, default=150)
    p.add_argument("--midtrain-steps", type=int, default=75)
    p.add_argument("--midtrain-lr", type=float, default=1e-3)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--eval-limit", type=int, default=100, help="held-out reference solutions / probing texts")
    p.add_argument("--rankme-texts", type=int, default=64, help="probing texts per capability for RankMe")
    args = p.parse_args(argv)
    if len(args.lrs) < 2:
        p.error("--lrs needs at least 2 learning rates (3 or more to order)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    corpus = setup_run(args)
    seeds = [run_seed(corpus, seed, args) for seed in range(args.seeds)]
    body = {
        "claim": "Table 11: RankMe of the pretrained model orders post-mid-training results across "
        "pretraining learning rates where the pretraining loss does not",
        "primary_metric": PRIMARY,
        "post_metrics": POST_METRICS,
        "predictors": PREDICTORS,
        "seeds": seeds,
        **summarize(seeds),
    }
    return finish_claim("rankme_lr", args, argv, time.perf_counter() - start, body, plot, print_table)


if __name__ == "__main__":
    main()
