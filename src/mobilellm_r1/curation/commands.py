"""`mobilellm-r1 curate ...`: the paper's data-curation steps on jsonl corpora.

mobilellm-r1 curate filter --in raw/*.jsonl --out clean.jsonl --heuristics mixed
mobilellm-r1 curate filter --in raw.jsonl --out edu.jsonl --classifier HuggingFaceFW/fineweb-edu-classifier \\
    --threshold 2 --round
mobilellm-r1 curate ask-llm --in raw.jsonl --out top.jsonl --model DIR --domain math --top 0.1
mobilellm-r1 curate dedup --in a.jsonl b.jsonl --out dedup.jsonl --minhash 0.8 [--semantic 0.95 --model DIR]
mobilellm-r1 curate rankme --model DIR --in probe/math.jsonl [--limit 512]
mobilellm-r1 curate loo --config curation/loo_synthetic [--set train_overrides=[steps=30]] [--out DIR]
mobilellm-r1 curate mix --scores influence.parquet --recipe data/synthetic --out mix.yaml [--floor 0.01] \\
    [--max-epochs 4 --token-budget 1e9]
mobilellm-r1 curate coevolve --config curation/coevolve_synthetic [--set max_stages=3] [--device cpu]
mobilellm-r1 curate probe-sets --config curation/probe_sets_synthetic --out runs/curation/probe_sets_synthetic
mobilellm-r1 curate influence --config curation/influence_synthetic [--set batch_size=8]
torchrun --nproc-per-node 8 -m mobilellm_r1.cli curate influence --samples rep/ --probe math=probe/math.jsonl \\
    --checkpoint t1:1000:ckpt/t1 --checkpoint t2:2000:ckpt/t2 --out runs/influence [--preconditioner adam]

Outputs are written to a temporary file and renamed; a JSON report goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ..argtypes import fraction, positive_float, positive_int, probability
from ..devices import add_device_argument, resolve_device

NAME = "curate"
HELP = "curate data: quality filters, Ask-LLM, dedup, RankMe"
DESCRIPTION = __doc__


def _io(parser: argparse.ArgumentParser, output: bool = True) -> None:
    parser.add_argument("--in", dest="inputs", nargs="+", required=True, help="jsonl files")
    parser.add_argument("--text-field", default="text")
    if output:
        parser.add_argument("--out", required=True, type=Path, help="kept rows (jsonl)")
        parser.add_argument("--rejected", type=Path, default=None, help="also write the dropped rows here")


def _model_args(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--model", required=required, help="HF-format checkpoint directory or hub id")
    add_device_argument(parser)
    parser.add_argument("--batch-size", type=positive_int, default=16)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="curate_action", metavar="ACTION", required=True)

    flt = actions.add_parser("filter", help="heuristic rules and/or a quality classifier")
    _io(flt)
    flt.add_argument("--heuristics", choices=["none", "default", "mixed"], default="none")
    flt.add_argument("--classifier", default=None, help="HF sequence-classification dir or hub id")
    flt.add_argument("--threshold", type=float, default=4.0, help="keep classifier score > this")
    flt.add_argument("--round", action="store_true", help="round scores to int first (FineWeb-Edu)")
    add_device_argument(flt)
    flt.set_defaults(curate_run=run_filter)

    ask = actions.add_parser("ask-llm", help="Ask-LLM scoring with a causal LM; keep the top fraction")
    _io(ask)
    _model_args(ask, required=True)
    ask.add_argument("--domain", default="general", choices=["general", "code", "math", "knowledge"])
    ask.add_argument("--domain-field", default=None, help="row field naming each row's domain")
    ask.add_argument("--top", type=probability, default=0.1, help="fraction to keep")
    ask.set_defaults(curate_run=run_ask_llm)

    dd = actions.add_parser("dedup", help="exact, MinHash and semantic deduplication")
    _io(dd)
    dd.add_argument("--no-exact", action="store_true", help="skip the exact-hash stage")
    dd.add_argument("--minhash", type=fraction, default=None, metavar="JACCARD", help="e.g. 0.8")
    dd.add_argument(
        "--semantic", type=float, default=None, metavar="COSINE", help="e.g. 0.95 (needs --model)"
    )
    _model_args(dd, required=False)
    dd.set_defaults(curate_run=run_dedup)

    rk = actions.add_parser("rankme", help="RankMe (paper Eq. 8) of a model's text embeddings")
    _io(rk, output=False)
    _model_args(rk, required=True)
    rk.add_argument("--limit", type=positive_int, default=512, help="texts to embed")
    rk.set_defaults(curate_run=run_rankme)

    lo = actions.add_parser("loo", help="leave-one-out source analysis (paper Eq. 1)")
    lo.add_argument("--config", required=True, help="config file or shipped name")
    lo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    lo.add_argument("--out", default=None, help="output directory (default: the config's out)")
    add_device_argument(lo)
    lo.set_defaults(curate_run=run_loo)

    mx = actions.add_parser("mix", help="Eq. 5 source weights from influence scores -> a data recipe")
    mx.add_argument("--scores", required=True, type=Path, help="influence.parquet (curate influence)")
    mx.add_argument("--recipe", required=True, help="base data recipe (file or shipped name)")
    mx.add_argument("--out", required=True, type=Path, help="the new data recipe (yaml)")
    mx.add_argument(
        "--column",
        default="joint",
        help="score column (default: joint, Eq. 3-4; balanced: capabilities scaled to unit std)",
    )
    mx.add_argument("--floor", type=fraction, default=0.01, help="rho floor as a fraction of the largest rho")
    mx.add_argument("--max-epochs", type=positive_float, default=None, help="epoch cap per source")
    mx.add_argument(
        "--token-budget", type=positive_float, default=None, help="training tokens (for --max-epochs)"
    )
    mx.add_argument("--name", default=None, help="recipe name (default: <base>_eq5)")
    mx.set_defaults(curate_run=run_mix)

    co = actions.add_parser("coevolve", help="data-model co-evolution (Eq. 6-7): score, filter, mix, train")
    co.add_argument("--config", required=True, help="config file or shipped name")
    co.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    add_device_argument(co)
    co.set_defaults(curate_run=run_coevolve)

    ps = actions.add_parser("probe-sets", help="representative subsets and capability-probing sets")
    ps.add_argument("--config", required=True, help="config file or shipped name")
    ps.add_argument("--out", required=True, type=Path, help="output directory")
    ps.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ps.set_defaults(curate_run=run_probe_sets)

    inf = actions.add_parser("influence", help="influence scores (Eq. 2-4) of samples on probing sets")
    inf.add_argument("--config", default=None, help="job file or shipped name (flags override it)")
    inf.add_argument("--samples", nargs="+", default=None, help="jsonl files, globs or directories")
    inf.add_argument("--probe", action="append", default=[], metavar="CAP=FILE", help="repeatable")
    inf.add_argument("--checkpoint", action="append", default=[], metavar="NAME:STEP:DIR[:ADAM]")
    inf.add_argument("--out", default=None, help="output directory")
    inf.add_argument("--tokenizer", default=None, help="default: the first checkpoint's directory")
    inf.add_argument("--subset", default=None, help="all, embeddings, last:K (default: all)")
    inf.add_argument("--preconditioner", choices=["identity", "adam", "datainf"], default=None)
    inf.add_argument("--seq-len", dest="seq_len", type=positive_int, default=None)
    inf.add_argument("--batch-size", dest="batch_size", type=positive_int, default=None)
    inf.add_argument("--chunk-size", dest="chunk_size", type=positive_int, default=None)
    inf.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast of the JVPs")
    add_device_argument(inf, "cuda:<LOCAL_RANK> when available, else cpu")
    inf.add_argument(
        "--max-chunks", type=positive_int, default=None, help="stop after this many chunks per rank"
    )
    inf.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    inf.set_defaults(curate_run=run_influence)


def run(args: argparse.Namespace) -> int:
    report = args.curate_run(args)
    if report is not None:  # None: a non-zero rank under torchrun
        print(json.dumps(report, indent=2, default=str))
    return 0


def _load(args: argparse.Namespace):
    from ..model.hf import load_checked

    return load_checked(args.model, device=args.device)


def run_filter(args: argparse.Namespace) -> dict:
    from .filters import HeuristicConfig, QualityClassifier
    from .filters import run_filter as _run

    heuristics = {"none": None, "default": HeuristicConfig(), "mixed": HeuristicConfig.mixed()}[
        args.heuristics
    ]
    classifier = None
    if args.classifier:
        classifier = QualityClassifier.from_pretrained(args.classifier, device=resolve_device(args.device))
    if heuristics is None and classifier is None:
        raise ValueError("give --heuristics default|mixed and/or --classifier")
    return _run(
        args.inputs,
        args.out,
        text_field=args.text_field,
        heuristics=heuristics,
        classifier=classifier,
        threshold=args.threshold,
        round_scores=args.round,
        rejected_output=args.rejected,
    )


def run_ask_llm(args: argparse.Namespace) -> dict:
    from .ask_llm import AskLLMScorer
    from .ask_llm import run_ask_llm as _run

    model, tokenizer = _load(args)
    scorer = AskLLMScorer(model, tokenizer, batch_size=args.batch_size)
    return _run(
        args.inputs,
        args.out,
        scorer,
        text_field=args.text_field,
        top_fraction=args.top,
        domain=args.domain,
        domain_field=args.domain_field,
        rejected_output=args.rejected,
    )


def run_dedup(args: argparse.Namespace) -> dict:
    from .dedup import MinHashConfig, SemDedupConfig, model_embedder
    from .dedup import run_dedup as _run

    embed = semantic = None
    if args.semantic is not None:
        if not args.model:
            raise ValueError("--semantic needs --model (the embedding model)")
        model, tokenizer = _load(args)
        embed = model_embedder(model, tokenizer, batch_size=args.batch_size)
        semantic = SemDedupConfig(threshold=args.semantic)
    minhash = MinHashConfig(threshold=args.minhash) if args.minhash is not None else None
    return _run(
        args.inputs,
        args.out,
        text_field=args.text_field,
        exact=None if args.no_exact else "sha1",
        minhash=minhash,
        semantic=semantic,
        embed=embed,
        removed_output=args.rejected,
    )


def run_rankme(args: argparse.Namespace) -> dict:
    from ..data.records import read_records
    from ..eval.rankme import rankme_of_model
    from .progress import progress_bar

    texts = []
    for record in read_records(args.inputs, text_field=args.text_field):
        texts.append(record.text)
        if len(texts) >= args.limit:
            break
    model, tokenizer = _load(args)
    with progress_bar("rankme: embed", len(texts), unit="text") as bar:
        value = rankme_of_model(model, tokenizer, texts, args.batch_size, progress=bar.update)
    return {"rankme": value, "texts": len(texts)}


def run_loo(args: argparse.Namespace) -> dict:
    from .loo import load_loo_config
    from .loo import run_loo as _run

    cfg = load_loo_config(args.config, args.overrides)
    if args.out:
        cfg.out = args.out
    return _run(cfg, device=resolve_device(args.device))


def run_mix(args: argparse.Namespace) -> dict:
    from .mixing import run_mix as _run

    return _run(
        args.scores,
        args.recipe,
        args.out,
        column=args.column,
        floor=args.floor,
        max_epochs=args.max_epochs,
        token_budget=args.token_budget,
        name=args.name,
    )


def run_coevolve(args: argparse.Namespace) -> dict:
    from .coevolve import load_coevolve_config
    from .coevolve import run_coevolve as _run

    cfg = load_coevolve_config(args.config, args.overrides)
    cfg.device = args.device or cfg.device
    for device in (cfg.device, cfg.influence.device):
        if device:
            resolve_device(device, "device")
    out = Path(cfg.out_dir)
    created = not out.exists()
    try:
        return _run(cfg)
    except BaseException:
        if created and _holds_nothing(out):  # nothing to resume from: leave no partial folder
            shutil.rmtree(out, ignore_errors=True)
        raise


def _holds_nothing(out: Path) -> bool:
    """True when `out` holds no file but the run's config.json (folders aside)."""
    return all(p.is_dir() or p == out / "config.json" for p in out.rglob("*"))


def run_probe_sets(args: argparse.Namespace) -> dict:
    from .probe_sets import build_probe_sets, load_probe_config

    return build_probe_sets(load_probe_config(args.config, args.overrides), args.out)


def run_influence(args: argparse.Namespace) -> dict | None:
    from ..data.recipes import recipe_path
    from .influence_job import load_job, parse_checkpoint, parse_probe, run_job

    names = ("samples", "out", "tokenizer", "subset", "preconditioner", "seq_len", "batch_size", "chunk_size")
    flags = {k: getattr(args, k) for k in (*names, "bf16", "device") if getattr(args, k) is not None}
    if args.probe:
        flags["probes"] = dict(parse_probe(p) for p in args.probe)
    if args.checkpoint:
        flags["checkpoints"] = [parse_checkpoint(c) for c in args.checkpoint]
    config = recipe_path(args.config) if args.config else None
    job = load_job(config, flags, args.overrides)
    if job.device:
        resolve_device(job.device, "device")
    return run_job(job, max_chunks=args.max_chunks)
