"""The paper's Fig. 4 at small scale, by its own protocol: the influence mixture (Eq. 2-5) against
uniform and natural mixing at equal training tokens.

Per corpus and seed (seeds change the initialisation, the data order, and the draw of the probing
sets and of the scored samples):

  1. one *capability model* per capability (code, math, knowledge), trained from the seed's
     initial model on that capability's own sources only, with T (--checkpoints, >= 5) evenly
     spaced checkpoints (Eq. 3);
  2. probing sets (--probe-size texts per capability, drawn from the capability's training
     sources) and a pool of --samples scored documents per source (`curate probe-sets`; no
     probing text is also scored);
  3. every pool sample scored with each capability model's checkpoints against that capability's
     probing set (Eq. 2, forward-mode influence), the checkpoints weighted in proportion to their
     step and the capabilities summed (Eq. 3-4), Eq. 5 source weights (rho = mean of I(x) len(x)
     per source, negative rho floored, at most --max-epochs passes over any source);
  4. equal-token runs from the seed's initial model under (a) the influence mixture, (b) uniform
     weights, (c) natural weights (proportional to each source's tokens); ablations (--ablations):
     `balanced` (each capability's term scaled to unit spread before the sum, not in the paper)
     and `shared` (the Eq. 3 checkpoints taken from the uniform run instead of per-capability
     models: what benchmarks/influence_mixture.py did);
  5. held-out NLL per token of every run on sets no step above reads: held-out documents of each
     capability, and reference solutions given their problem.

Corpora: `real`, the small real corpora of ../shared/data/corpora (knowledge: wikitext-2 valid,
WordNet glosses, Python docs; math: GSM8K train, MATH train, Stacks Project; code: the Python
standard library; Shakespeare as an off-domain distractor), every 20th document held out, plus
GSM8K test / MATH500 / HumanEval / MBPP reference solutions and the wikitext-2 test split; and
`synthetic`, the synthetic corpus with its six noise sources, held out: its guarded probing texts
and its GSM8K- / MATH-format reference solutions.

The paper's effect: the influence mixture gives lower held-out NLL (better benchmarks) than
uniform and natural mixing. Verdicts per corpus and metric via `common.verdict` and
`common.paired_verdict` (the arms of a seed share its initial model and data order).

    python benchmarks/paper_claims/influence_fig4.py --device cpu --threads 1
    python benchmarks/paper_claims/influence_fig4.py --ablations balanced shared --corpora real
    python benchmarks/paper_claims/influence_fig4.py --device cuda --preset 140m --vocab llama3 \\
        --steps 2000 --capability-steps 500 --samples 256 --score-len 1024 --micro-batch 16

Writes benchmarks/results/paper_claims/influence_fig4_<date>.json and .png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from common import (
    CAPABILITIES,
    Corpus,
    add_common_arguments,
    cli,
    finish_claim,
    init_model,
    lm_overrides,
    mean_std,
    model_fingerprint,
    paired_verdict,
    prepare_corpus,
    pyplot,
    read_texts,
    train,
    verdict,
)

from influence_mixture import SYNTH_SOURCES, mixture, real_corpus
from mobilellm_r1.curation.influence import joint_influence, joint_weights
from mobilellm_r1.curation.influence_run import Checkpoint, InfluenceConfig, InfluenceScorer
from mobilellm_r1.curation.mixing import (
    Mix,
    balanced_joint,
    mix_header,
    mixed_recipe,
    source_stats,
    source_weights,
    write_recipe,
)
from mobilellm_r1.curation.probe_sets import ProbeSetsConfig, ProbeSource, build_probe_sets
from mobilellm_r1.data.recipes import load_mixture, prepare
from mobilellm_r1.data.shards import ShardedSource
from mobilellm_r1.eval.nll import model_loss_sums, reference_nll, text_examples, token_mean_nll
from mobilellm_r1.model.hf import load_checked
from mobilellm_r1.tokenizer import Tokenizer, load_tokenizer
from mobilellm_r1.train.checkpoint import load_checkpoint
from mobilellm_r1.train.objectives.lm import LMObjective
from provenance import write_result

CORPORA = ("real", "synthetic")
ARMS = ("influence", "uniform", "natural")
ABLATIONS = ("balanced", "shared")
BASELINES = ("uniform", "natural")
PRIMARY = "mean"  # mean held-out NLL of the three capabilities' held-out documents
SEQ_LEN = 256  # packed training rows (the synthetic recipe's length)


# ------------------------------------------------------------------ the corpora
@dataclass(frozen=True)
class Pool:
    """A corpus prepared for the claim: its sources (name -> (jsonl, capabilities)), the uniform
    recipe over them (every other mixture re-weights it), and the held-out sets: plain texts scored
    on every token, and reference solutions scored given their problem ((task, data dir))."""

    corpus: Corpus  # work directory and tokenizer
    sources: dict[str, tuple[str, list[str]]]
    base: Path
    texts: dict[str, str]
    references: dict[str, tuple[str, str]]


def prepare_real(work: Path, args: argparse.Namespace) -> Pool:
    """The real corpora as jsonl (influence_mixture.real_corpus: --doc-cap documents per source,
    every 20th held out), a BPE vocabulary learned on the training documents (unless --vocab
    llama3), and their shards. A work directory made with other settings is refused."""
    work = work.resolve()
    settings = {"doc_cap": args.doc_cap, "vocab": args.vocab, "vocab_size": args.vocab_size}
    record = work / "corpus.json"
    if record.exists() and json.loads(record.read_text()) != settings:
        raise ValueError(
            f"{record}: this work directory holds corpora made with {record.read_text().strip()}, "
            f"not {json.dumps(settings)}; pass another --work or delete it"
        )
    write_result(settings, record, quiet=True)  # first: nothing below is reused under other settings
    listing = work / "corpus" / "sources.json"
    if listing.exists():
        sources, heldout = json.loads(listing.read_text())
    else:
        sources, heldout = real_corpus(
            Path(args.corpora_dir), Path(args.eval_dir), work / "corpus", args.doc_cap
        )
        write_result([sources, heldout], listing, quiet=True)
    base = mixture("uniform", sources, dict.fromkeys(sources, 1.0), work, SEQ_LEN)
    tokenizer = str(work / "tokenizer") if args.vocab == "bpe" else None
    if tokenizer and not (Path(tokenizer) / "chat_template.jinja").exists():
        cli(
            ["data", "train-tokenizer", "--recipe", base, "--vocab-size", args.vocab_size, "--out", tokenizer]
        )
    prepare(load_mixture(base), load_tokenizer(tokenizer))
    eval_dir = str(Path(args.eval_dir).resolve())
    return Pool(
        Corpus(work, tokenizer),
        {n: (f, list(caps)) for n, (f, caps) in sources.items()},
        base,
        {**{c: heldout[c] for c in CAPABILITIES}, "wikitext2_test": heldout["bench_wikitext2"]},
        {f"{t}_ref": (t, eval_dir) for t in ("gsm8k", "math500", "humaneval", "mbpp")},
    )


def prepare_synthetic(work: Path, args: argparse.Namespace) -> Pool:
    """The synthetic corpus with its noise sources at --scale (common.prepare_corpus); held out:
    its guarded probing texts and GSM8K- / MATH-format reference solutions."""
    corpus = prepare_corpus(work, args.scale, args.vocab, args.vocab_size)
    files = {n: str(corpus.synth / "pretrain" / f"{n}.jsonl") for n in SYNTH_SOURCES}
    return Pool(
        corpus,
        {n: (files[n], list(caps)) for n, caps in SYNTH_SOURCES.items()},
        corpus.recipe("noisy"),  # the same nine sources, uniform weights
        {c: str(corpus.probe(c)) for c in CAPABILITIES},
        {f"{t}_ref": (t, str(corpus.eval_dir)) for t in ("gsm8k", "math500")},
    )


def source_tokens(pool: Pool) -> dict[str, float]:
    """Tokens of every source's shards."""
    recipe = load_mixture(pool.base)
    return {s.name: float(ShardedSource(recipe.shard_dir(s)).num_tokens) for s in recipe.sources}


def reweighted(pool: Pool, weights: dict[str, float], path: Path, header: str = "") -> Path:
    """The pool's uniform recipe with `weights` (every source named) written to `path`."""
    recipe = mixed_recipe(load_mixture(pool.base), weights, path.stem)
    return write_recipe(recipe, path, header)


def capability_weights(pool: Pool, capability: str) -> dict[str, float]:
    """Equal weights over the sources of `capability`, 0 for the others: its own training data."""
    return {n: float(capability in caps) for n, (_, caps) in pool.sources.items()}


# ------------------------------------------------------------------ training


def train_lm(
    recipe: Path, init: Path, out: Path, seed: int, steps: int, checkpoints: int, args: argparse.Namespace
) -> dict:
    """Train `steps` from `init` on `recipe` (`checkpoints` evenly spaced checkpoints kept, 0:
    none); Trainer.fit's summary (a finished identical run is reused)."""
    overrides = lm_overrides(recipe, seed, steps, args.lr, args.micro_batch, max(1, steps // 20), checkpoints)
    return train("train/tiny_cpu", init, out, overrides, args.device)


def checkpoints_of(run: Path, expected: int, device: str) -> list[Checkpoint]:
    """The `expected` DCP checkpoints of a run as loaded models (architecture and vocabulary of
    its final model), named t<step>, with their step (the weight of Eq. 4), by step."""
    result = []
    for path in (run / "checkpoints").glob("step_*"):
        model, _ = load_checked(run / "final", device=device, dtype="float32")
        step = int(load_checkpoint(path, LMObjective(model))["step"])
        result.append(Checkpoint(name=f"t{step}", step=step, model=model.eval()))
    if len(result) != expected:
        raise RuntimeError(f"{run}/checkpoints: {len(result)} checkpoints, expected {expected}")
    return sorted(result, key=lambda c: c.step)


# ------------------------------------------------------------------ influence (Eq. 2-5)
def draw_probe_sets(pool: Pool, out: Path, seed: int, args: argparse.Namespace) -> dict[str, Path]:
    """--samples documents per source to score and --probe-size probing texts per capability
    (drawn from its sources, disjoint from the scored samples), seeded; returns the files."""
    cfg = ProbeSetsConfig(
        sources=[ProbeSource(n, capabilities=caps, files=[f]) for n, (f, caps) in pool.sources.items()],
        capabilities=list(CAPABILITIES),
        representative_size=args.samples,
        probe_size=args.probe_size,
        seed=seed,
    )
    build_probe_sets(cfg, out)
    reps = {n: out / "representative" / f"{n}.jsonl" for n in pool.sources}
    return {**reps, **{f"probe/{c}": out / "probe" / f"{c}.jsonl" for c in CAPABILITIES}}


def score(
    checkpoints: list[Checkpoint],
    probes: dict[str, Path],
    samples: list[Path],
    tokenizer: Tokenizer,
    out: Path,
    args: argparse.Namespace,
) -> pa.Table:
    """The influence table of `samples` at `checkpoints` against `probes` (capability -> probing
    file), scored into `out` (name it after the models and the drawn sets: the scorer resumes or
    reuses what a directory holds)."""
    cfg = InfluenceConfig(seq_len=args.score_len, batch_size=16, chunk_size=4096, device=args.device)
    scorer = InfluenceScorer(checkpoints, {c: str(p) for c, p in probes.items()}, tokenizer, cfg)
    return pq.read_table(scorer.run([str(s) for s in samples], out)["output"])


def combine(tables: dict[str, pa.Table], steps: dict[str, dict[str, int]]) -> pa.Table:
    """One table from per-capability influence tables (capability c's table: the same samples in
    the same order, columns `c@<checkpoint>` of c's own model): the `c@t` columns, each
    capability's step-weighted term `<c>` (J_c = sum_t alpha_t score), `joint` (Eq. 3-4: alpha
    uniform over capabilities, proportional to the step over each capability's checkpoints) and
    `balanced` (each J_c scaled to unit standard deviation before the sum; not in the paper).
    `steps`: capability -> checkpoint name -> step."""
    first = next(iter(tables.values()))
    ids = first.column("id").to_pylist()
    for c, t in tables.items():
        if t.column("id").to_pylist() != ids:
            raise ValueError(
                f"capability {c!r}: its influence table scores other samples than {next(iter(tables))!r}"
            )
    step_of = {(c, t): step for c in tables for t, step in steps[c].items()}
    scores = {(c, t): torch.tensor(tables[c].column(f"{c}@{t}").to_numpy()).double() for c, t in step_of}
    alpha = joint_weights(list(scores), step_of)
    columns = {"id": first.column("id"), "source": first.column("source"), "tokens": first.column("tokens")}
    columns.update({f"{c}@{t}": v.numpy() for (c, t), v in scores.items()})
    table = pa.table(columns)
    for c in tables:  # J_c: alpha_{c,t} of Eq. 4 carries 1 / (number of capabilities)
        term = sum(alpha[(c, t)] * len(tables) * scores[(c, t)] for t in steps[c])
        table = table.append_column(c, pa.array(term.numpy()))
    table = table.append_column("joint", pa.array(joint_influence(scores, step_of).numpy()))
    weights = {f"{c}@{t}": a for (c, t), a in alpha.items()}
    return table.append_column("balanced", pa.array(balanced_joint(table, weights)))


def diagnostics(table: pa.Table, capabilities: list[str]) -> dict:
    """What rules a bug in or out: per capability, rho of its own term per source, with and
    without Eq. 5's len(x) factor (its sign: does each model favour its own sources?), and that
    term's spread over the samples (the scale Eq. 3 sums unnormalised); and the joint rho without
    len(x) (mean I(x) per source)."""
    ones = table.set_column(table.column_names.index("tokens"), "tokens", pa.array(np.ones(table.num_rows)))

    def rho(t: pa.Table, column: str) -> dict[str, float]:
        return {g: s.rho for g, s in source_stats(t, column).items()}

    return {
        "capability_rho": {c: rho(table, c) for c in capabilities},
        "capability_rho_without_len": {c: rho(ones, c) for c in capabilities},
        "capability_std": {c: float(np.std(table.column(c).to_numpy())) for c in capabilities},
        "rho_without_len": rho(ones, "joint"),
    }


def eq5(table: pa.Table, column: str, budget: float, tokens: dict, args: argparse.Namespace) -> Mix:
    """Eq. 5 weights from `column` with the floor and the epoch cap over the run's token budget."""
    return source_weights(
        table, column, args.floor, max_epochs=args.max_epochs, token_budget=budget, source_tokens=tokens
    )


# ------------------------------------------------------------------ evaluation
def evaluate(model_dir: Path, pool: Pool, args: argparse.Namespace) -> dict[str, float]:
    """Held-out NLL per token of every held-out set of the pool, and `mean` of the capabilities'."""
    model, tokenizer = load_checked(model_dir, device=args.device, dtype="float32")
    model.eval()
    result = {
        name: reference_nll(model, tokenizer, task, data_dir, limit=args.eval_limit)["nll"]
        for name, (task, data_dir) in pool.references.items()
    }
    with torch.inference_mode():
        for name, path in pool.texts.items():
            ids = text_examples(tokenizer, read_texts(Path(path), args.eval_limit), SEQ_LEN)
            examples = [(x, x) for x in ids]  # every token scored
            result[name] = token_mean_nll(examples, model_loss_sums(model), device=args.device)[0]
    result[PRIMARY] = sum(result[c] for c in CAPABILITIES) / len(CAPABILITIES)
    return result


# ------------------------------------------------------------------ one seed
def influence_table(
    pool: Pool, init: Path, root: Path, drawn: dict, seed: int, args: argparse.Namespace
) -> pa.Table:
    """Steps 1-3 of the module docstring: a model per capability on its own sources, its
    checkpoints' scores of the pool against its probing set, combined (Eq. 3-4; `combine`)."""
    tokenizer, key = load_tokenizer(pool.corpus.tokenizer), drawn_key(root)
    samples = [drawn[n] for n in pool.sources]
    tables, steps = {}, {}
    for c in CAPABILITIES:
        recipe = reweighted(pool, capability_weights(pool, c), root / "recipes" / f"capability_{c}.yaml")
        out = root / f"capability_{c}"
        train_lm(recipe, init, out, seed, args.capability_steps, args.checkpoints, args)
        ckpts = checkpoints_of(out, args.checkpoints, args.device)
        where = root / "influence" / f"{c}-{model_fingerprint(out / 'final')[:12]}-{key}"
        tables[c] = score(ckpts, {c: drawn[f"probe/{c}"]}, samples, tokenizer, where, args)
        steps[c] = {k.name: k.step for k in ckpts}
    return combine(tables, steps)


def shared_table(pool: Pool, run: Path, root: Path, drawn: dict, args: argparse.Namespace) -> pa.Table:
    """The `shared` ablation's scores: every capability's probing set at the uniform run's
    checkpoints (one model for all capabilities, as benchmarks/influence_mixture.py)."""
    ckpts = checkpoints_of(run, args.checkpoints, args.device)
    where = root / "influence" / f"shared-{model_fingerprint(run / 'final')[:12]}-{drawn_key(root)}"
    probes = {c: drawn[f"probe/{c}"] for c in CAPABILITIES}
    samples = [drawn[n] for n in pool.sources]
    return score(ckpts, probes, samples, load_tokenizer(pool.corpus.tokenizer), where, args)


def drawn_key(root: Path) -> str:
    """A short hash of the seed's drawn probing sets and scored samples (their manifest)."""
    return hashlib.sha256((root / "probe_sets" / "manifest.json").read_bytes()).hexdigest()[:12]


def run_seed(pool: Pool, seed: int, args: argparse.Namespace) -> dict:
    """The whole protocol for one seed (module docstring, steps 1-5): the arms' weights, Eq. 5's
    rho, the passes over each source, the checks of `diagnostics`, training seconds and tokens,
    and every arm's held-out NLL."""
    root = pool.corpus.work / f"seed_{seed}"
    init = init_model(pool.corpus, root / "init", args.preset, seed)
    drawn = draw_probe_sets(pool, root / "probe_sets", seed, args)
    table = influence_table(pool, init, root, drawn, seed, args)
    tokens = source_tokens(pool)
    budget = args.steps * args.micro_batch * SEQ_LEN
    weights = {
        "uniform": {n: 1 / len(tokens) for n in tokens},
        "natural": {n: t / sum(tokens.values()) for n, t in tokens.items()},
    }
    uniform = reweighted(pool, weights["uniform"], root / "recipes" / "uniform.yaml")
    # the uniform run keeps T checkpoints: the `shared` ablation scores at them
    summaries = {
        "uniform": train_lm(uniform, init, root / "uniform", seed, args.steps, args.checkpoints, args)
    }
    mixes = {"influence": eq5(table, "joint", budget, tokens, args)}
    if "balanced" in args.ablations:
        mixes["balanced"] = eq5(table, "balanced", budget, tokens, args)
    if "shared" in args.ablations:
        mixes["shared"] = eq5(
            shared_table(pool, root / "uniform", root, drawn, args), "joint", budget, tokens, args
        )
    recipes = {
        arm: reweighted(pool, m.weights, root / "recipes" / f"{arm}.yaml", mix_header(m, arm))
        for arm, m in mixes.items()
    }
    recipes["natural"] = reweighted(pool, weights["natural"], root / "recipes" / "natural.yaml")
    weights.update({arm: m.weights for arm, m in mixes.items()})
    for arm, recipe in recipes.items():
        summaries[arm] = train_lm(recipe, init, root / arm, seed, args.steps, 0, args)
    return {
        "seed": seed,
        "weights": weights,
        "rho": {arm: {g: s.rho for g, s in m.stats.items()} for arm, m in mixes.items()},
        "epochs": {arm: {g: w[g] * budget / tokens[g] for g in tokens} for arm, w in weights.items()},
        "diagnostics": diagnostics(table, list(CAPABILITIES)),
        "trained_tokens": {arm: s["tokens"] for arm, s in summaries.items()},
        "train_seconds": {arm: s["elapsed_s"] for arm, s in summaries.items()},
        "nll": {arm: evaluate(root / arm / "final", pool, args) for arm in ARMS + tuple(mixes)[1:]},
    }


# ------------------------------------------------------------------ summary, figure, table
def summarize(seeds: list[dict], metrics: list[str]) -> tuple[dict, dict]:
    """Mean/std per arm and metric; per baseline (uniform, natural) and metric the verdict of
    influence against it (lower NLL is the paper's sign) and the paired verdict."""
    arms = list(seeds[0]["nll"])
    stats = {a: {m: mean_std([s["nll"][a][m] for s in seeds]) for m in metrics} for a in arms}
    verdicts = {}
    for arm in [a for a in arms if a not in BASELINES]:
        for base in BASELINES:
            for m in metrics:
                a, b = [s["nll"][arm][m] for s in seeds], [s["nll"][base][m] for s in seeds]
                verdicts[f"{arm}_vs_{base}/{m}"] = {**verdict(a, b, -1), "paired": paired_verdict(a, b, -1)}
    return stats, verdicts


def plot(result: dict):
    """A row per corpus, a panel per held-out metric: each seed's arms joined by a grey line,
    each arm's mean +- std beside them."""
    plt = pyplot()
    corpora = result["corpora"]
    width = max(len(c["metrics"]) for c in corpora.values())
    fig, axes = plt.subplots(len(corpora), width, figsize=(2.6 * width, 3.2 * len(corpora)), squeeze=False)
    for row, (name, c) in zip(axes, corpora.items(), strict=True):
        arms = list(c["stats"])
        for ax, metric in zip(row, c["metrics"], strict=False):
            for seed in c["seeds"]:
                ax.plot(range(len(arms)), [seed["nll"][a][metric] for a in arms], "o-", color="0.7", ms=3)
            for i, arm in enumerate(arms):
                s = c["stats"][arm][metric]
                ax.errorbar(i + 0.15, s["mean"], yerr=s["std"], fmt="s", color=f"C{i}", capsize=3)
            ax.set_xticks(range(len(arms)), arms, rotation=30, fontsize=7)
            v = c["verdicts"][f"influence_vs_uniform/{metric}"]["paired"]["verdict"]
            ax.set_title(f"{name}: {metric}\nvs uniform: {v}", fontsize=8)
        for ax in row[len(c["metrics"]) :]:
            ax.axis("off")
    fig.suptitle(f"Fig. 4 protocol: held-out NLL per token, {result['settings']['preset']}", fontsize=10)
    fig.tight_layout()
    return fig


def print_table(result: dict) -> None:
    for name, c in result["corpora"].items():
        arms = list(c["stats"])
        print(f"\n{name} ({len(c['seeds'])} seeds): held-out NLL per token, mean ± std")
        print(
            f"{'metric':<16}"
            + "".join(f"{a:>17}" for a in arms)
            + "  influence vs uniform / natural (paired)"
        )
        for m in c["metrics"]:
            cells = "".join(
                f"{c['stats'][a][m]['mean']:>9.4f} ± {c['stats'][a][m]['std']:<5.3f}" for a in arms
            )
            words = [c["verdicts"][f"influence_vs_{b}/{m}"] for b in BASELINES]
            said = " / ".join(
                f"{v['difference']:+.3f} {v['verdict']} ({v['paired']['verdict']})" for v in words
            )
            print(f"{m:<16}{cells}  {said}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, "influence_fig4")
    p.add_argument("--corpora", nargs="+", choices=CORPORA, default=list(CORPORA), help="in this order")
    p.add_argument("--ablations", nargs="*", choices=ABLATIONS, default=[], help="extra arms")
    p.add_argument("--real-corpora", dest="corpora_dir", default="../shared/data/corpora")
    p.add_argument("--eval-dir", default="../shared/data/eval", help="GSM8K/MATH500/HumanEval/MBPP")
    p.add_argument("--doc-cap", type=int, default=1000, help="documents per real source")
    p.add_argument("--steps", type=int, default=100, help="steps of every mixture run (equal tokens)")
    p.add_argument("--capability-steps", type=int, default=40, help="steps of each capability model")
    p.add_argument("--checkpoints", type=int, default=5, help="T of Eq. 3-4 (evenly spaced)")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--samples", type=int, default=8, help="scored documents per source")
    p.add_argument("--probe-size", type=int, default=32, help="probing texts per capability")
    p.add_argument("--score-len", type=int, default=128, help="tokens scored per sample (BOS included)")
    p.add_argument("--floor", type=float, default=0.01, help="Eq. 5: negative rho floored at floor x max")
    p.add_argument("--max-epochs", type=float, default=1.0, help="Eq. 5 epoch cap per source")
    p.add_argument("--eval-limit", type=int, default=64, help="held-out texts / solutions per set")
    args = p.parse_args(argv)
    if args.checkpoints < 1 or args.steps % args.checkpoints or args.capability_steps % args.checkpoints:
        p.error("--steps and --capability-steps must be multiples of --checkpoints (>= 1)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    work = Path(args.work)
    if args.threads < 0:  # as common.setup_run, which prepares only the synthetic corpus
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    corpora = {}
    for name in args.corpora:
        pool = (
            prepare_real(work / "real", args)
            if name == "real"
            else prepare_synthetic(work / "synthetic", args)
        )
        seeds = [run_seed(pool, seed, args) for seed in range(args.seeds)]
        metrics = [
            PRIMARY,
            *CAPABILITIES,
            *(m for m in seeds[0]["nll"]["uniform"] if m not in (PRIMARY, *CAPABILITIES)),
        ]
        stats, verdicts = summarize(seeds, metrics)
        corpora[name] = {"metrics": metrics, "seeds": seeds, "stats": stats, "verdicts": verdicts}
    body = {
        "claim": "Fig. 4: the influence mixture (Eq. 2-5, per-capability models) gives lower held-out "
        "NLL than uniform and natural mixing at equal tokens",
        "primary_metric": PRIMARY,
        "corpora": corpora,
    }
    return finish_claim("influence_fig4", args, argv, time.perf_counter() - start, body, plot, print_table)


if __name__ == "__main__":
    main()
