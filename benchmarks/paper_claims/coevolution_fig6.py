"""The paper's Fig. 6 at small scale: mid-training on data that co-evolves with the model (Eq. 6-7)
against the same token budget on the raw mid-training pool, under cross-entropy and under
knowledge distillation from a larger teacher.

The teacher (one for every seed): a wider and deeper `tiny` variant (--teacher-width 192,
--teacher-layers 4: 2.2M parameters against the student's 1.3M) trained longer than the student
(--teacher-steps) on the clean math / code / knowledge sources.

Per seed (seeds change the student's initialisation, its pretraining data order, the pool's
sample and the mid-training data order):

  1. the student: `tiny` pretrained on the synthetic corpus with its six noise sources (uniform
     source weights, --pretrain-steps);
  2. the raw mid-training pool: --pool-docs documents drawn from the corpus's nine files in
     proportion to their sizes (about 11% of them noise), as three sources that each carry their
     own noise (POOL_SOURCES: math with wrong math, code with broken code, knowledge with spam,
     gibberish, boilerplate and shuffled text), as real datasets do;
  3. per objective (`ce`: cross-entropy; `kd`: pure KL to the teacher's logits):
     (a) *co-evolution* (`curation.coevolve.run_coevolve`): two stages, each scoring the current
         pool with the current model against the capability probes (one checkpoint, Eq. 2-4),
         keeping the samples with I > 0 (Eq. 6), re-mixing them by Eq. 5 (with the len(x) factor
         and an epoch cap) and training --stage-steps from the current model (Eq. 7);
     (b) *raw*: the same two stages of --stage-steps on the whole pool at its natural token
         proportions: the same token budget, schedule, objective and starting model;
  4. curves: each arm's model at --curve-points checkpoints per stage, evaluated on held-out sets:
     NLL of the first half of each capability's probing texts (the influence probes are the
     other half, so no held-out text ever builds a mixture), NLL of the GSM8K- and MATH-format
     reference solutions given their problem, and exact match on held-out MATH-format problems.

Exact match is greedy and graded as the eval harness grades (`score_predictions`: boxed answers,
the math judge) but prompted 0-shot in the corpus's own layout (the problem, a blank line): a
model only pre- and mid-trained has never seen `common.exact_match`'s chat template, and the
harness's few-shot base prompts (real MATH / GSM8K exemplars) scored 0/50 with a pretrained tiny.

The paper (arXiv 2509.24945, Fig. 6) finds the co-evolved data better than the raw data under
both objectives. Each final metric gets a verdict per objective over the seeds (`common.verdict`
and `common.paired_verdict`: co-evolution - raw, with the sign the paper's claim predicts).

    python benchmarks/paper_claims/coevolution_fig6.py --threads 1      # CPU, tiny, learned vocab
    python benchmarks/paper_claims/coevolution_fig6.py --device cuda --preset 140m --vocab llama3 \\
        --scale 20 --teacher-preset 360m --teacher-width 0 --teacher-layers 0 --teacher-steps 4000 \\
        --pretrain-steps 2000 --pool-docs 20000 --stage-steps 500    # -> results/paper_claims/*.json, .png
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import time
from pathlib import Path

import torch
from common import (
    CAPABILITIES,
    Corpus,
    add_common_arguments,
    finish_claim,
    heldout_nll,
    init_model,
    lm_overrides,
    mean_std,
    model_fingerprint,
    paired_verdict,
    pyplot,
    setup_run,
    train,
    verdict,
)

from mobilellm_r1.curation.coevolve import CoevolveConfig, StageTraining, run_coevolve
from mobilellm_r1.curation.influence_run import InfluenceConfig
from mobilellm_r1.curation.mixing import write_recipe
from mobilellm_r1.data.recipes import MixSource, MixtureRecipe
from mobilellm_r1.data.records import JsonlWriter, read_records
from mobilellm_r1.deploy.batching import BatchingEngine
from mobilellm_r1.deploy.sampling import SamplingParams
from mobilellm_r1.eval.engines import GenRequest, LocalEngine
from mobilellm_r1.eval.math_grading import MathJudge
from mobilellm_r1.eval.math_tasks import problem_text, score_predictions
from mobilellm_r1.eval.registry import get_task
from mobilellm_r1.model.config import preset, tokenizer_fields
from mobilellm_r1.model.hf import load_checked, load_pretrained, save_pretrained
from mobilellm_r1.model.model import build_model
from mobilellm_r1.tokenizer import Tokenizer, load_tokenizer
from mobilellm_r1.train.checkpoint import capture_rng, load_checkpoint, restore_rng

ARMS = ("coevolution", "raw")
OBJECTIVES = {"ce": "cross-entropy", "kd": "distillation"}
STAGES = 2  # the paper's two co-evolution stages
TEACHER_SEED = 1000  # the teacher's initialisation and data order (one teacher for all seeds)
SETTINGS = "arm.json"  # an arm directory's settings: it is emptied when they change
# KV pool of the exact-match engine: 100 problems at once for `tiny` (the 4 GiB CPU default takes
# ~1 s to allocate per evaluated model); a larger model decodes fewer at a time
EM_KV_BYTES = 64 << 20
# metric -> (label, sign of the paper's effect on co-evolution - raw: -1 for losses)
METRICS = {
    "heldout": ("NLL, held-out probing texts (mean of math/code/knowledge)", -1),
    "math500_ref": ("NLL, MATH-format reference solutions", -1),
    "gsm8k_ref": ("NLL, GSM8K-format reference solutions", -1),
    "math": ("NLL, held-out math texts", -1),
    "code": ("NLL, held-out code texts", -1),
    "knowledge": ("NLL, held-out knowledge texts", -1),
    "exact_match": ("MATH-format exact match (0-shot, greedy)", 1),
}
# the mid-training pool's sources: each capability with its own kind of noise mixed in, as in a
# real dataset (pool source -> the corpus files it draws from; generic web noise goes with knowledge)
POOL_SOURCES = {
    "math": ["math", "noise_wrong_math"],
    "code": ["code", "noise_broken_code"],
    "knowledge": ["knowledge", "noise_boilerplate", "noise_gibberish", "noise_shuffled", "noise_spam"],
}
PRIMARY = "heldout"  # what the joint influence (Eq. 3-4) aims at: every capability's probe loss
PLOTTED = ("heldout", "math500_ref", "exact_match")


# ------------------------------------------------------------------ the data
def stratified_counts(sizes: dict[str, int], total: int) -> dict[str, int]:
    """How many of `total` documents to draw from each source so that the draw keeps the
    sources' proportions (`sizes`: documents per source): the floor of each quota, at least one
    per source, and the documents left to the largest remainders."""
    n = sum(sizes.values())
    if not len(sizes) <= total <= n or min(sizes.values(), default=0) < 1:
        raise ValueError(
            f"--pool-docs must lie in [{len(sizes)}, {n}] (one per source, at most all), got {total}"
        )
    quota = {g: total * s / n for g, s in sizes.items()}
    counts = {g: max(1, math.floor(q)) for g, q in quota.items()}
    by_remainder = sorted(sizes, key=lambda g: (counts[g] - quota[g], g))  # largest first, ties by name
    for g in by_remainder[: max(0, total - sum(counts.values()))]:
        counts[g] += 1
    while sum(counts.values()) > total:  # the at-least-one rule overshot: take from the most over quota
        g = min((g for g in counts if counts[g] > 1), key=lambda g: (quota[g] - counts[g], g))
        counts[g] -= 1
    return counts


def corpus_inputs(corpus: Corpus, pool_docs: int, eval_limit: int) -> dict[str, dict]:
    """What every seed draws on, read and checked before anything trains: `docs`, the (id, text)
    documents of each corpus file of POOL_SOURCES, and `probes`, the influence probes: the second
    half of each capability's probing texts (the first half is the held-out set `heldout_nll`
    reads). ValueError naming the flag (and file) when --pool-docs or --eval-limit cannot be met."""
    names = [n for parts in POOL_SOURCES.values() for n in parts]
    files = {n: [str(corpus.synth / "pretrain" / f"{n}.jsonl")] for n in names}
    docs = {
        n: [(str(r.row.get("id", r.location)), r.text) for r in read_records(f)] for n, f in files.items()
    }
    stratified_counts({n: len(d) for n, d in docs.items()}, pool_docs)
    probes = {}
    for cap in CAPABILITIES:
        rows = [r.row for r in read_records([str(corpus.probe(cap))])]
        if not 1 <= eval_limit <= len(rows) // 2:
            raise ValueError(
                f"{corpus.probe(cap)}: {len(rows)} probing texts; --eval-limit must lie in "
                f"[1, {len(rows) // 2}] (the first half is held out, the second half scores the pool)"
            )
        probes[cap] = rows[len(rows) // 2 :]
    return {"docs": docs, "probes": probes}


def sample_pool(docs: dict[str, list], out: Path, total: int, seed: int) -> dict[str, list[str]]:
    """The raw mid-training pool: `total` of the `docs` (corpus file -> (id, text)) drawn in
    proportion to the files' sizes (`stratified_counts`) with `seed`, written as the three
    POOL_SOURCES (one JSONL each: `id`, which starts with the file's name, and `text`) in `out`;
    written once per (total, seed): a re-run keeps the files its runs were made from."""
    pool = {g: [str(out / f"{g}.jsonl")] for g in POOL_SOURCES}
    record = out / "pool.json"
    settings = {"docs": total, "seed": seed, "sources": POOL_SOURCES}
    if record.exists() and json.loads(record.read_text())["settings"] == settings:
        return pool
    counts = stratified_counts({n: len(d) for n, d in docs.items()}, total)
    rng = random.Random(seed)
    for g, parts in POOL_SOURCES.items():
        with JsonlWriter(pool[g][0]) as writer:
            for n in parts:
                for i in sorted(rng.sample(range(len(docs[n])), counts[n])):
                    writer.write({"id": docs[n][i][0], "text": docs[n][i][1]})
    record.write_text(json.dumps({"settings": settings, "docs": counts}, indent=1))
    return pool


def source_tokens(files: list[str], tokenizer: Tokenizer) -> tuple[int, int]:
    """(tokens, noise tokens) of a pool source's documents, one EOS each; noise: the documents of
    the corpus's noise_* files."""
    tokens = noise = 0
    for record in read_records(files):
        n = len(tokenizer.encode(record.text)) + 1
        tokens += n
        noise += n if str(record.row["id"]).startswith("noise_") else 0
    return tokens, noise


def noise_share(sources: dict[str, list[str]], weights: dict[str, float], tokenizer: Tokenizer) -> float:
    """The share of noise tokens in the mixture of `sources` with `weights` (token shares)."""
    counts = {g: source_tokens(f, tokenizer) for g, f in sources.items()}
    total = sum(weights.values())
    return sum(w / total * counts[g][1] / counts[g][0] for g, w in weights.items() if counts[g][0])


def raw_recipe(pool: dict[str, list[str]], tokenizer: Tokenizer, path: Path, seed: int, seq_len: int) -> dict:
    """The raw arm's mixture: every pool source weighted by its tokens (the pool at its natural
    proportions), written to `path`; returns the weights."""
    weights = {g: float(source_tokens(f, tokenizer)[0]) for g, f in pool.items()}
    sources = [MixSource(name=g, weight=weights[g], files=f) for g, f in pool.items()]
    recipe = MixtureRecipe(f"raw_pool_seed{seed}", sources, seq_len, seed, str(path.parent / "shards"))
    write_recipe(recipe, path, "the raw mid-training pool at its natural token proportions")
    return weights


def write_probes(probes: dict[str, list[dict]], out: Path) -> dict[str, str]:
    """The influence probes (`corpus_inputs`) as one JSONL per capability in `out`."""
    for cap, rows in probes.items():
        with JsonlWriter(out / f"{cap}.jsonl") as writer:
            for row in rows:
                writer.write(row)
    return {cap: str(out / f"{cap}.jsonl") for cap in probes}


# ------------------------------------------------------------------ the models
def teacher_overrides(width: int, layers: int) -> dict[str, int]:
    """ModelConfig overrides of the teacher: `width` wide with 64-wide heads (one KV head) and a
    3x MLP, `layers` deep; 0 keeps the preset's value."""
    overrides = {}
    if width:
        if width % 64:
            raise ValueError(f"--teacher-width must be a multiple of 64 (64-wide heads), got {width}")
        overrides |= {"hidden_size": width, "num_attention_heads": width // 64, "num_key_value_heads": 1}
        overrides |= {"head_dim": 64, "intermediate_size_mlp": 3 * width}
    if layers:
        overrides["num_hidden_layers"] = layers
    return overrides


def init_teacher(corpus: Corpus, out: Path, args: argparse.Namespace) -> Path:
    """The teacher's random initialisation (the `init` command with model overrides): built once
    per setting, so the trained teacher is reused while they stay the same."""
    settings = {"preset": args.teacher_preset, "width": args.teacher_width, "layers": args.teacher_layers}
    settings |= {"seed": TEACHER_SEED, "tokenizer": corpus.tokenizer}
    record = out / "teacher_init.json"
    if (out / "config.json").exists() and record.exists() and json.loads(record.read_text()) == settings:
        return out
    tokenizer = load_tokenizer(corpus.tokenizer)
    ids = tokenizer_fields(tokenizer) if corpus.tokenizer else {}
    cfg = preset(args.teacher_preset, **ids, **teacher_overrides(args.teacher_width, args.teacher_layers))
    save_pretrained(build_model(cfg, seed=TEACHER_SEED), tokenizer, out)
    record.write_text(json.dumps(settings))
    return out


def stage_overrides(seed: int, objective: str, teacher: Path, args: argparse.Namespace) -> list[str]:
    """train/tiny_cpu overrides of one mid-training stage of either arm (its recipe and starting
    model are set per stage): a checkpoint at each curve point, pure KL for `kd` (the paper's)."""
    every = args.stage_steps // args.curve_points
    overrides = [f"steps={args.stage_steps}", f"optim.lr={args.midtrain_lr}",
                 f"optim.warmup_steps={max(1, args.stage_steps // 10)}", f"data.micro_batch={args.micro_batch}",
                 f"seed={seed}", "eval_every=0", f"checkpoint_every={every}", f"keep_last={args.curve_points}"]  # fmt: skip
    if objective == "kd":
        overrides += ["objective=kd", f"distill.teacher={json.dumps(str(teacher))}", "distill.alpha_ce=0.0"]
    return overrides


def checkpoint_model(step_dir: Path, like: Path, out: Path) -> Path:
    """The model of a training checkpoint (DCP) as an HF directory in `out`: `like` (the run's
    starting model: same architecture and tokenizer) with the checkpoint's weights. A trainer
    objective holds the model as its one submodule `model` (train/objectives/base.py), so a module
    with that one attribute has the checkpoint's state-dict keys; this process's RNG is kept."""
    model, tokenizer = load_pretrained(like, device="cpu", dtype=torch.float32)
    holder = torch.nn.Module()
    holder.model = model
    rng = capture_rng()
    load_checkpoint(step_dir, holder)
    restore_rng(rng)
    save_pretrained(model, tokenizer, out)
    return out


def run_points(run: Path, steps: int) -> list[tuple[int, Path]]:
    """(step, checkpoint directory) of a run's kept checkpoints before its last step, then
    (`steps`, its final model)."""
    found = [p for p in (run / "checkpoints").glob("step_*") if re.fullmatch(r"step_\d+", p.name)]
    points = sorted((int(p.name[5:]), p) for p in found if int(p.name[5:]) < steps)
    return [*points, (steps, run / "final")]


# ------------------------------------------------------------------ evaluation
def zero_shot_exact_match(
    model_dir: Path, corpus: Corpus, out: Path, judge: MathJudge, args: argparse.Namespace
) -> float:
    """Exact match on the first --em-limit held-out MATH-format problems: greedy completions of
    "<problem>\\n\\n" (the corpus's layout), graded as the eval harness grades them (boxed
    answers, the math judge; module docstring). Each completion and its grade go to `out` (JSONL)."""
    task = get_task("math500")
    records = task.load(corpus.eval_dir)[: args.em_limit]
    model, tokenizer = load_checked(model_dir, device=args.device, dtype="float32")
    requests = [GenRequest(task.id_of(r, i), prompt=problem_text(r) + "\n\n") for i, r in enumerate(records)]
    engine = BatchingEngine(model, tokenizer, kv_budget_bytes=EM_KV_BYTES)
    results = LocalEngine(engine, tokenizer, model.config.max_position_embeddings).generate(
        requests, SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    )
    predictions = [{"id": q.id, "completion": r.texts[0]} for q, r in zip(requests, results, strict=True)]
    scored = score_predictions(task.math, records, predictions, judge, chat=True)
    with JsonlWriter(out) as writer:
        for prediction, grade in zip(predictions, scored["per_sample"], strict=True):
            writer.write(prediction | grade)
    return scored["pass@1"]


def evaluate(model: Path, corpus: Corpus, out: Path, judge: MathJudge, args: argparse.Namespace) -> dict:
    """Every metric of METRICS of one model (the exact-match completions go to `out`)."""
    nll = heldout_nll(model, corpus, args.device, args.eval_limit, args.seq_len)
    nll["heldout"] = sum(nll[c] for c in CAPABILITIES) / len(CAPABILITIES)
    return {**nll, "exact_match": zero_shot_exact_match(model, corpus, out, judge, args)}


def arm_curve(
    arm: Path, pretrained: Path, start: dict, corpus: Corpus, judge: MathJudge, args: argparse.Namespace
) -> list[dict]:
    """The metrics of an arm's models over its steps: the pretrained model (step 0, `start`),
    then each stage's checkpoints (stage t's steps follow stage t-1's)."""
    curve, model = [{"step": 0, **start}], pretrained
    for t in range(1, STAGES + 1):
        run = arm / f"stage_{t}" / "train"
        for step, path in run_points(run, args.stage_steps):
            at = (t - 1) * args.stage_steps + step
            if path.name != "final":
                path = checkpoint_model(path, model, arm / "curve" / f"step_{at}")
            graded = arm / "exact_match" / f"step_{at}.jsonl"
            curve.append({"step": at, **evaluate(path, corpus, graded, judge, args)})
        model = run / "final"
    return curve


# ------------------------------------------------------------------ the arms
def prepare_arm(out: Path, settings: dict) -> None:
    """Keep `out` when it was made with `settings` (its runs resume or are reused), else empty it:
    a changed starting model, teacher or setting trains the arm again."""
    record = out / SETTINGS
    if record.exists() and json.loads(record.read_text()) == settings:
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    record.write_text(json.dumps(settings, indent=1))


def coevolution_arm(
    out: Path, start: Path, data: dict, seed: int, overrides: list, args: argparse.Namespace
) -> list:
    """Two co-evolution stages (`run_coevolve`) from the model `start` on `data` (its `pool`,
    `probes` and `tokenizer`); per stage its pool size, positive fraction, kept samples, Eq. 5
    weights, the noise documents it kept and the noise share of its training tokens. RuntimeError
    when a stage kept nothing (the arms' token budgets would then differ)."""
    pool = data["pool"]
    cfg = CoevolveConfig(
        name=f"fig6_seed{seed}",
        pool=pool,
        probes=data["probes"],
        model=str(start),
        train=StageTraining("train/tiny_cpu", overrides),
        influence=InfluenceConfig(seq_len=args.seq_len, chunk_size=512, max_probe=args.probe_texts),
        max_epochs=args.max_epochs,
        seq_len=args.seq_len,
        max_stages=STAGES,
        min_positive_fraction=0.0,
        score_final=False,
        out_dir=str(out),
        device=args.device,
        seed=seed,
    )
    report = run_coevolve(cfg)
    stages = [{k: s[k] for k in ("stage", "samples", "positive_fraction", "kept", "weights")} for s in report["stages"] if s["trained"]]  # fmt: skip
    if len(stages) != STAGES:
        raise RuntimeError(f"{out}: {len(stages)} of {STAGES} co-evolution stages trained ({report['stop']})")
    for stage in stages:
        kept = {g: [str(out / f"stage_{stage['stage']}" / "data" / f"{g}.jsonl")] for g in pool}
        stage["noise_docs_kept"] = sum(
            str(r.row["id"]).startswith("noise_") for f in kept.values() for r in read_records(f)
        )
        stage["noise_token_share"] = noise_share(kept, stage["weights"], data["tokenizer"])
    return stages


def raw_arm(out: Path, pretrained: Path, recipe: Path, overrides: list[str], device: str) -> None:
    """The same two stages on the raw pool, each from the previous stage's model."""
    model = pretrained
    for t in range(1, STAGES + 1):
        run = out / f"stage_{t}" / "train"
        train("train/tiny_cpu", model, run, [f"data.recipe={recipe}", *overrides], device)
        model = run / "final"


def run_seed(
    corpus: Corpus, inputs: dict, teacher: Path, seed: int, judge: MathJudge, args: argparse.Namespace
) -> dict:
    """Pretrain the student, draw the pool from `inputs` (`corpus_inputs`), run both arms under
    both objectives, and evaluate their curves."""
    root = corpus.work / f"seed_{seed}"
    init = init_model(corpus, root / "init", args.preset, seed)
    noisy = lm_overrides(
        corpus.recipe("noisy"),
        seed,
        args.pretrain_steps,
        args.pretrain_lr,
        args.micro_batch,
        max(1, args.pretrain_steps // 20),
    )
    pre_run = train("train/tiny_cpu", init, root / "pretrain", noisy, args.device)
    pretrained = root / "pretrain" / "final"
    pool = sample_pool(inputs["docs"], root / "pool", args.pool_docs, seed)
    tokenizer = load_tokenizer(corpus.tokenizer)
    data = {
        "pool": pool,
        "probes": write_probes(inputs["probes"], root / "probes"),
        "tokenizer": tokenizer,
    }
    raw_weights = raw_recipe(pool, tokenizer, root / "raw_pool.yaml", seed, args.seq_len)
    start = evaluate(pretrained, corpus, root / "pretrained_exact_match.jsonl", judge, args)
    base = {
        "pretrained": model_fingerprint(pretrained),
        "pool": json.loads((root / "pool" / "pool.json").read_text()),
    }
    arms: dict[str, dict] = {}
    for objective in OBJECTIVES:
        overrides = stage_overrides(seed, objective, teacher, args)
        settings = {
            **base,
            "overrides": overrides,
            "teacher": model_fingerprint(teacher) if objective == "kd" else None,
        }
        coevo, raw = root / f"coevolution_{objective}", root / f"raw_{objective}"
        prepare_arm(coevo, {**settings, "coevolve": [args.probe_texts, args.max_epochs, args.seq_len]})
        if objective == "kd" and not (coevo / "stage_1" / "influence").exists():
            # stage 1 scores the same pool with the same pretrained model under either objective:
            # the scorer resumes from the cross-entropy arm's complete parts instead of redoing them
            shutil.copytree(
                root / "coevolution_ce" / "stage_1" / "influence", coevo / "stage_1" / "influence"
            )
        stages = coevolution_arm(coevo, pretrained, data, seed, overrides, args)
        prepare_arm(raw, settings)
        raw_arm(raw, pretrained, root / "raw_pool.yaml", overrides, args.device)
        curves = {
            arm: arm_curve(root / f"{arm}_{objective}", pretrained, start, corpus, judge, args)
            for arm in ARMS
        }
        arms[objective] = {arm: {"curve": curve, "final": curve[-1]} for arm, curve in curves.items()}
        arms[objective]["coevolution"]["stages"] = stages
    return {
        "seed": seed,
        "pool": base["pool"]["docs"],
        "raw_noise_token_share": noise_share(pool, raw_weights, tokenizer),
        "tokens_per_arm": STAGES * args.stage_steps * args.micro_batch * args.seq_len,
        "pretrain_seconds": pre_run["elapsed_s"],
        "pretrained": start,
        **arms,
    }


# ------------------------------------------------------------------ summary, figure, table
def summarize(seeds: list[dict]) -> tuple[dict, dict]:
    """Mean/std of each objective, arm and final metric, and per objective and metric the verdict
    (co-evolution vs raw, pooled standard error) and the paired verdict (per-seed differences:
    both arms share the seed's pretrained model and pool)."""
    stats = {
        o: {a: {m: mean_std([s[o][a]["final"][m] for s in seeds]) for m in METRICS} for a in ARMS}
        for o in OBJECTIVES
    }
    verdicts = {}
    for o in OBJECTIVES:
        verdicts[o] = {}
        for m, (_, sign) in METRICS.items():
            a, b = [s[o]["coevolution"]["final"][m] for s in seeds], [s[o]["raw"]["final"][m] for s in seeds]
            verdicts[o][m] = {**verdict(a, b, sign), "paired": paired_verdict(a, b, sign)}
    return stats, verdicts


def plot(result: dict):
    """Rows: the plotted metrics over mid-training steps; columns: the objectives. Each arm's mean
    over seeds with a +- std band, and each seed's curve as a thin line."""
    plt = pyplot()
    fig, axes = plt.subplots(
        len(PLOTTED), len(OBJECTIVES), figsize=(5.2 * len(OBJECTIVES), 3.0 * len(PLOTTED))
    )
    for col, (o, name) in enumerate(OBJECTIVES.items()):
        for row, metric in enumerate(PLOTTED):
            ax = axes[row][col]
            for i, arm in enumerate(ARMS):
                curves = [[p[metric] for p in s[o][arm]["curve"]] for s in result["seeds"]]
                steps = [p["step"] for p in result["seeds"][0][o][arm]["curve"]]
                mean = [sum(v) / len(v) for v in zip(*curves, strict=True)]
                std = [mean_std(list(v))["std"] for v in zip(*curves, strict=True)]
                for curve in curves:
                    ax.plot(steps, curve, color=f"C{i}", alpha=0.25, lw=0.8)
                ax.plot(steps, mean, "o-", color=f"C{i}", ms=3, label=arm)
                band = [(m - s, m + s) for m, s in zip(mean, std, strict=True)]
                ax.fill_between(steps, *zip(*band, strict=True), color=f"C{i}", alpha=0.15)
            for t in range(1, STAGES):
                ax.axvline(t * result["settings"]["stage_steps"], color="0.7", lw=0.8, ls="--")
            v = result["verdicts"][o][metric]
            ax.set_title(
                f"{name}: {METRICS[metric][0]}\n{v['verdict']} (paired: {v['paired']['verdict']})", fontsize=8
            )
            ax.set_xlabel("mid-training step")
        axes[0][col].legend(fontsize=7)
    fig.suptitle(
        f"Fig. 6 co-evolution vs raw pool, {result['settings']['preset']}, {len(result['seeds'])} seeds"
    )
    fig.tight_layout()
    return fig


def print_table(result: dict) -> None:
    print(
        f"\n{'objective':<14}{'metric':<58}{'co-evolution':>18}{'raw':>18}{'coevo - raw':>13}  verdict (paired)"
    )
    for o, name in OBJECTIVES.items():
        for metric, (label, _) in METRICS.items():
            cells = [
                f"{result['stats'][o][a][metric]['mean']:.4f} ± {result['stats'][o][a][metric]['std']:.4f}"
                for a in ARMS
            ]
            v = result["verdicts"][o][metric]
            print(
                f"{name:<14}{label:<58}{cells[0]:>18}{cells[1]:>18}{v['difference']:>+13.4f}  "
                f"{v['verdict']} ({v['paired']['verdict']})"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, "coevolution_fig6")
    p.add_argument("--pretrain-steps", type=int, default=200, help="the student's pretraining steps")
    p.add_argument("--pretrain-lr", type=float, default=3e-3)
    p.add_argument("--teacher-preset", default="tiny", help="the teacher's preset (before its overrides)")
    p.add_argument("--teacher-width", type=int, default=192, help="teacher hidden size (0: the preset's)")
    p.add_argument("--teacher-layers", type=int, default=4, help="teacher layers (0: the preset's)")
    p.add_argument("--teacher-steps", type=int, default=300, help="the teacher's steps on the clean sources")
    p.add_argument("--pool-docs", type=int, default=400, help="documents in each seed's raw pool")
    p.add_argument("--stage-steps", type=int, default=30, help="training steps of each of the two stages")
    p.add_argument("--midtrain-lr", type=float, default=1e-3)
    p.add_argument("--curve-points", type=int, default=1, help="evaluated checkpoints per stage")
    p.add_argument("--probe-texts", type=int, default=32, help="influence probe texts per capability")
    p.add_argument("--max-epochs", type=float, default=4.0, help="Eq. 5 epoch cap per stage")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256, help="packed row length (training and scoring)")
    p.add_argument("--eval-limit", type=int, default=100, help="held-out probing texts / reference solutions")
    p.add_argument("--em-limit", type=int, default=100, help="held-out MATH-format problems for exact match")
    p.add_argument("--max-new-tokens", type=int, default=64)
    args = p.parse_args(argv)
    if args.stage_steps < 1 or args.curve_points < 1 or args.stage_steps % args.curve_points:
        p.error(
            f"--stage-steps ({args.stage_steps}) must be a positive multiple of --curve-points ({args.curve_points})"
        )
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    corpus = setup_run(args)
    inputs = corpus_inputs(corpus, args.pool_docs, args.eval_limit)
    teacher_init = init_teacher(corpus, corpus.work / "teacher_init", args)
    clean = lm_overrides(
        corpus.recipe("clean"),
        TEACHER_SEED,
        args.teacher_steps,
        args.pretrain_lr,
        args.micro_batch,
        max(1, args.teacher_steps // 20),
    )
    teacher_run = train("train/tiny_cpu", teacher_init, corpus.work / "teacher", clean, args.device)
    teacher = corpus.work / "teacher" / "final"
    shape = {"preset": args.teacher_preset, **teacher_overrides(args.teacher_width, args.teacher_layers)}
    with MathJudge(workers=1) as judge:  # one judge process for every evaluation
        teacher_metrics = evaluate(teacher, corpus, corpus.work / "teacher_exact_match.jsonl", judge, args)
        seeds = [run_seed(corpus, inputs, teacher, seed, judge, args) for seed in range(args.seeds)]
    stats, verdicts = summarize(seeds)
    body = {
        "claim": "Fig. 6: mid-training on co-evolved data (Eq. 6-7) beats the same tokens of the raw pool, "
        "under cross-entropy and under distillation",
        "primary_metric": PRIMARY,
        "metrics": {m: label for m, (label, _) in METRICS.items()},
        "teacher": {
            "shape": shape,
            "parameters": sum(p.numel() for p in load_pretrained(teacher)[0].parameters()),
            "steps": args.teacher_steps,
            "data": "the clean math / code / knowledge sources",
            "train_seconds": teacher_run["elapsed_s"],
            "metrics": teacher_metrics,
        },
        "seeds": seeds,
        "stats": stats,
        "verdicts": verdicts,
    }
    return finish_claim("coevolution_fig6", args, argv, time.perf_counter() - start, body, plot, print_table)


if __name__ == "__main__":
    main()
