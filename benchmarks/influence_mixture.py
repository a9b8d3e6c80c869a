"""Small-scale reproduction of the paper's Fig. 4: influence-derived mixing vs uniform mixing.

At equal training tokens, does the Eq. 5 mixture (source weights from cross-capability influence,
Eq. 2-4) reach a lower held-out probing NLL than mixing the sources uniformly?  Per corpus:

  1. sources as jsonl (the synthetic corpus with its six noise sources, or the small real corpora of
     ../shared/data/corpora plus an off-domain source) and held-out evaluation texts per capability
     that no run trains on;
  2. representative subsets (N per source) and code/math/knowledge probing sets (`curate probe-sets`);
  3. the *uniform* run: a tiny model on all sources with equal weights, checkpoints at T points;
  4. influence of every representative sample at the T checkpoints of the uniform run (Eq. 2-4;
     the paper's pretraining stage used per-domain models, here the capabilities share one);
  5. Eq. 5 weights (`curate mix`, negative rho floored, no source past --max-epochs passes over its
     tokens in the run's budget); the *influence* run and a *natural* run (weights proportional
     to each source's tokens) from scratch with the same steps, batch and seed;
  6. held-out NLL per capability every --eval-every steps of all three runs.

    python benchmarks/influence_mixture.py --corpus synthetic --device cuda
    python benchmarks/influence_mixture.py --corpus real --corpora ../shared/data/corpora --device cuda
    python benchmarks/influence_mixture.py --plot benchmarks/results/influence_mixture_synthetic.json

Writes benchmarks/results/influence_mixture_<corpus>.json (curves, weights, settings) and, when
matplotlib is present, the matching .png.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import time
from pathlib import Path

import torch

from mobilellm_r1.atomic import atomic_write
from mobilellm_r1.curation.influence_run import Checkpoint, InfluenceConfig, InfluenceScorer
from mobilellm_r1.curation.mixing import run_mix, write_recipe
from mobilellm_r1.curation.probe_sets import ProbeSetsConfig, ProbeSource, build_probe_sets
from mobilellm_r1.data.recipes import MixSource, MixtureRecipe, load_mixture, prepare
from mobilellm_r1.data.shards import ShardedSource
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.tokenizer import Tokenizer, load_tokenizer
from mobilellm_r1.train.checkpoint import load_checkpoint
from mobilellm_r1.train.config import load_train_config
from mobilellm_r1.train.objectives import prepare_data
from mobilellm_r1.train.objectives.lm import LMObjective
from mobilellm_r1.train.trainer import Trainer
from provenance import RESULTS, result_header, write_result

CAPABILITIES = ("code", "math", "knowledge")
HOLDOUT = 20  # real corpora: every 20th document of a source is held out
SYNTH_SOURCES = {
    "math": ["math"],
    "code": ["code"],
    "knowledge": ["knowledge"],
    **{
        f"noise_{n}": []
        for n in ("boilerplate", "broken_code", "gibberish", "shuffled", "spam", "wrong_math")
    },
}


# ------------------------------------------------------------------ corpora
def _jsonl(path: Path, texts: list[str]) -> str:
    atomic_write(
        path, "".join(json.dumps({"id": f"{path.stem}-{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return str(path)


def _chunks(text: str, size: int = 1500) -> list[str]:
    """Consecutive lines packed into pieces of about `size` characters (pieces under 200 dropped)."""
    out, cur = [], ""
    for line in text.splitlines(keepends=True):
        if len(cur) + len(line) > size and cur:
            out.append(cur)
            cur = ""
        cur += line
    out.append(cur)
    return [c.strip() for c in out if len(c.strip()) > 200]


def _files(paths: list[Path]) -> list[str]:
    return [c for p in paths for c in _chunks(p.read_text(errors="replace"))]


def _rows(path: Path, template: str, limit: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return [template.format(**json.loads(line)) for line, _ in zip(f, range(limit), strict=False)]


def real_corpus(corpora: Path, eval_dir: Path, out: Path, cap: int) -> tuple[dict, dict]:
    """The small real corpora as jsonl (`cap` documents each; large single files cut into pieces)
    minus a held-out split that forms the held-out probing sets, plus three benchmark-style sets no
    source contains: GSM8K test, HumanEval prompts + solutions, wikitext-2 test."""
    files = {
        "wikitext2": _chunks((corpora / "wikitext2/valid.txt").read_text()),
        "wordnet_glosses": _chunks((corpora / "wordnet_glosses/glosses.txt").read_text()),
        "python_docs": _files(sorted((corpora / "python_docs").rglob("*.rst.txt"))),
        "gsm8k_train": _rows(corpora / "gsm8k/train.jsonl", "Question: {question}\nAnswer: {answer}", cap),
        "math_train": _rows(
            corpora / "math_hendrycks/train.jsonl", "Problem: {problem}\nSolution: {solution}", cap
        ),
        "stacks_project": _files(sorted((corpora / "stacks_project").glob("*.tex"))),
        "python_stdlib": _files(sorted((corpora / "python_stdlib").rglob("*.py"))),
        "tinyshakespeare": _chunks((corpora / "tinyshakespeare/input.txt").read_text()),
    }
    capabilities = {
        "wikitext2": ["knowledge"],
        "wordnet_glosses": ["knowledge"],
        "python_docs": ["knowledge"],
        "gsm8k_train": ["math"],
        "math_train": ["math"],
        "stacks_project": ["math"],
        "python_stdlib": ["code"],
        "tinyshakespeare": [],  # off-domain: a candidate only
    }
    texts = {n: [t for t in docs if t.strip()][:cap] for n, docs in files.items()}
    # every HOLDOUT-th document of each source is held out: the held-out probing set of a capability
    # interleaves its sources' held-out documents (the trainer scores the first --eval-docs)
    train = {n: [t for i, t in enumerate(docs) if i % HOLDOUT] for n, docs in texts.items()}
    held = {n: [t for i, t in enumerate(docs) if not i % HOLDOUT] for n, docs in texts.items()}
    sources = {n: (_jsonl(out / f"{n}.jsonl", train[n]), capabilities[n]) for n in files}
    heldout = {}
    for c in CAPABILITIES:
        parts = [held[n] for n in files if c in capabilities[n]]
        mixed = [t for group in itertools.zip_longest(*parts) for t in group if t is not None]
        heldout[c] = _jsonl(out / f"heldout/{c}.jsonl", mixed)
    bench = {
        "bench_gsm8k": _rows(eval_dir / "gsm8k/test.jsonl", "Question: {question}\nAnswer: {answer}", 10**6),
        "bench_humaneval": _rows(
            eval_dir / "humaneval/HumanEval.jsonl.gz", "{prompt}{canonical_solution}", 10**6
        ),
        "bench_wikitext2": _chunks((corpora / "wikitext2/test.txt").read_text()),
    }
    heldout.update({name: _jsonl(out / f"heldout/{name}.jsonl", rows) for name, rows in bench.items()})
    return sources, heldout


def synthetic_corpus(root: Path, scale: float) -> tuple[dict, dict]:
    """The embedded synthetic corpus at `scale` (generated when missing); held out: its guarded
    probe sets (no training document contains a probe text)."""
    if not (root / "manifest.json").exists():
        from mobilellm_r1.data.synth import SynthConfig, generate

        generate(SynthConfig(seed=0).scaled(scale), root)
    sources = {n: (str(root / "pretrain" / f"{n}.jsonl"), caps) for n, caps in SYNTH_SOURCES.items()}
    return sources, {c: str(root / "probe" / f"{c}.jsonl") for c in CAPABILITIES}


# ------------------------------------------------------------------ stages
def mixture(name: str, sources: dict, weights: dict, work: Path, seq_len: int) -> Path:
    recipe = MixtureRecipe(
        name=name,
        sources=[MixSource(n, float(weights[n]), files=[f], format="jsonl") for n, (f, _) in sources.items()],
        seq_len=seq_len,
        shards_root=str(work / "shards"),
    )
    return write_recipe(recipe, work / f"{name}.yaml")


def train(name: str, recipe: Path, heldout: dict, args: argparse.Namespace, checkpoints: int = 0) -> Path:
    out = Path(args.work) / "runs" / name
    every = args.steps // checkpoints if checkpoints else 0
    cfg = load_train_config(
        "train/tiny_cpu",
        [
            f"name={name}",
            f"out_dir={out}",
            f"steps={args.steps}",
            f"data.recipe={recipe}",
            f"data.micro_batch={args.micro_batch}",
            f"optim.lr={args.lr}",
            f"eval_every={args.eval_every}",
            f"eval_docs={args.eval_docs}",
            f"eval_files=[{','.join(heldout.values())}]",
            "eval_rankme=false",
            f"checkpoint_every={every}",
            f"keep_last={max(checkpoints, 1)}",
            f"log_every={args.eval_every}",
        ],
    )
    if not (out / "final").exists():
        prepare_data(cfg, args.device)
        Trainer(cfg, device=args.device).fit()
    return out


def curves(run: Path) -> dict[str, list]:
    """Held-out NLL per eval set at every evaluation; `mean` averages the three probing sets."""
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "nll/math" in r]
    out = {"step": [r["step"] for r in evals]}
    for key in sorted({k for r in evals for k in r if k.startswith("nll/")}):
        out[key.removeprefix("nll/")] = [r[key] for r in evals]
    out["mean"] = [sum(r[f"nll/{c}"] for c in CAPABILITIES) / len(CAPABILITIES) for r in evals]
    return out


def checkpoints_of(run: Path) -> list[Checkpoint]:
    """The uniform run's DCP checkpoints as loaded models (Eq. 4 weights them by step)."""
    result = []
    for path in sorted((run / "checkpoints").glob("step_*")):
        model = build_model(preset("tiny"), seed=0)
        extra = load_checkpoint(path, LMObjective(model, 512, False))
        result.append(Checkpoint(name=f"t{extra['step']}", step=int(extra["step"]), model=model))
    return result


def influence(sources: dict, uniform: Path, tokenizer: Tokenizer, args: argparse.Namespace) -> Path:
    work = Path(args.work)
    probe_cfg = ProbeSetsConfig(
        sources=[ProbeSource(n, capabilities=caps, files=[f]) for n, (f, caps) in sources.items()],
        capabilities=list(CAPABILITIES),
        representative_size=args.samples,
        probe_size=args.probe_size,
    )
    build_probe_sets(probe_cfg, work / "probe_sets")
    reps = [str(work / "probe_sets/representative" / f"{n}.jsonl") for n in sources]
    probes = {c: str(work / "probe_sets/probe" / f"{c}.jsonl") for c in CAPABILITIES}
    cfg = InfluenceConfig(
        seq_len=args.seq_len, batch_size=8, chunk_size=256, subset="all", device=args.device
    )
    scorer = InfluenceScorer(checkpoints_of(uniform), probes, tokenizer, cfg)
    report = scorer.run(reps, work / "influence")
    return Path(report["output"])


# ------------------------------------------------------------------ report
def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, key in zip(axes, ("mean", *CAPABILITIES), strict=True):
        for name, run in result["runs"].items():
            ax.plot(run["curve"]["step"], run["curve"][key], label=name)
        ax.set_title(f"held-out NLL: {key}")
        ax.set_xlabel("step")
    axes[0].legend()
    fig.suptitle(f"{result['corpus']}: influence (Eq. 5) vs uniform vs natural mixing, equal tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", choices=["synthetic", "real"], default="synthetic")
    p.add_argument("--corpora", default="../shared/data/corpora")
    p.add_argument("--eval-dir", default="../shared/data/eval")
    p.add_argument("--synth-scale", type=float, default=4.0, help="synthetic corpus size (1: 0.55M tokens)")
    p.add_argument("--work", default=None, help="default: runs/influence_mixture_<corpus>")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--checkpoints", type=int, default=3, help="T of Eq. 3-4")
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--eval-docs", type=int, default=64)
    p.add_argument("--samples", type=int, default=64, help="representative samples per source")
    p.add_argument("--probe-size", type=int, default=48)
    p.add_argument("--floor", type=float, default=0.01)
    p.add_argument("--max-epochs", type=float, default=1.0, help="Eq. 5 epoch cap per source")
    p.add_argument("--column", default="joint", help="score for Eq. 5: joint (paper) or balanced")
    p.add_argument("--doc-cap", type=int, default=3000, help="documents per real source")
    p.add_argument("--out", default=None)
    p.add_argument("--plot", default=None, help="only draw the PNG of an existing result JSON")
    p.add_argument("--prepare-only", action="store_true", help="write the real corpus jsonl and stop")
    args = p.parse_args()
    if args.plot:
        plot(json.loads(Path(args.plot).read_text()), Path(args.plot).with_suffix(".png"))
        return
    args.work = args.work or f"runs/influence_mixture_{args.corpus}"
    work = Path(args.work)
    start = time.perf_counter()
    prepared = work / "corpus" / "sources.json"
    if args.corpus == "synthetic":
        sources, heldout = synthetic_corpus(work / "synth", args.synth_scale)
    elif prepared.exists():  # made earlier (e.g. carried to a GPU machine)
        sources, heldout = json.loads(prepared.read_text())
    else:
        sources, heldout = real_corpus(Path(args.corpora), Path(args.eval_dir), work / "corpus", args.doc_cap)
        atomic_write(prepared, json.dumps([sources, heldout]))
    if args.prepare_only:
        return
    uniform_recipe = mixture("uniform", sources, dict.fromkeys(sources, 1.0), work, args.seq_len)
    recipe, tokenizer = load_mixture(uniform_recipe), load_tokenizer()
    prepare(recipe, tokenizer)
    tokens = {s.name: ShardedSource(recipe.shard_dir(s)).num_tokens for s in recipe.sources}
    natural_recipe = mixture("natural", sources, tokens, work, args.seq_len)
    uniform = train("uniform", uniform_recipe, heldout, args, checkpoints=args.checkpoints)
    scores = influence(sources, uniform, tokenizer, args)
    budget = args.steps * args.micro_batch * args.seq_len
    mixed = "influence" if args.column == "joint" else f"influence_{args.column}"
    mix = run_mix(
        scores,
        uniform_recipe,
        work / f"{mixed}.yaml",
        floor=args.floor,
        max_epochs=args.max_epochs,
        token_budget=budget,
        column=args.column,
        name=mixed,
    )
    runs = {"uniform": uniform, "natural": train("natural", natural_recipe, heldout, args)}
    runs[mixed] = train(mixed, Path(mix["recipe"]), heldout, args)
    weights = {
        "uniform": {n: 1 / len(sources) for n in sources},
        "natural": {n: t / sum(tokens.values()) for n, t in tokens.items()},
        mixed: mix["weights"],
    }
    result = {
        **result_header("influence_mixture", args.device),
        "corpus": args.corpus,
        "settings": {k: v for k, v in vars(args).items() if k not in ("plot", "out")},
        "tokens_per_run": budget,
        "epochs": {n: {g: weights[n][g] * budget / tokens[g] for g in sources} for n in runs},
        "source_tokens": tokens,
        "rho": mix["rho"],
        "clipped_rho": mix["clipped_rho"],
        "runs": {n: {"weights": weights[n], "curve": curves(r)} for n, r in runs.items()},
        "seconds": time.perf_counter() - start,
    }
    final = {n: {k: v[-1] for k, v in r["curve"].items() if k != "step"} for n, r in result["runs"].items()}
    result["final_nll"] = final
    suffix = "" if args.column == "joint" else f"_{args.column}"
    out = Path(args.out or RESULTS / f"influence_mixture_{args.corpus}{suffix}.json")
    write_result(result, out, quiet=True)
    try:
        plot(result, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib missing: no plot (rerun with --plot on a machine that has it)")
    print(f"wrote {out}")
    print(f"{'source':<22}" + "".join(f"{n:>20}" for n in runs))
    for g in sources:
        print(f"{g:<22}" + "".join(f"{weights[n][g]:>20.3f}" for n in runs))
    columns = ["mean", *CAPABILITIES, *sorted(k for k in final["uniform"] if k.startswith("bench_"))]
    print(f"\n{'final held-out NLL':<22}" + "".join(f"{c.removeprefix('bench_'):>11}" for c in columns))
    for n, row in final.items():
        print(f"{n:<22}" + "".join(f"{row[c]:>11.4f}" for c in columns))


if __name__ == "__main__":
    main()
