"""`mobilellm-r1 curate ...`: the paper's data-curation steps on jsonl corpora.

mobilellm-r1 curate filter --in raw/*.jsonl --out clean.jsonl --heuristics mixed
mobilellm-r1 curate filter --in raw.jsonl --out edu.jsonl --classifier HuggingFaceFW/fineweb-edu-classifier \\
    --threshold 2 --round
mobilellm-r1 curate ask-llm --in raw.jsonl --out top.jsonl --model DIR --domain math --top 0.1
mobilellm-r1 curate dedup --in a.jsonl b.jsonl --out dedup.jsonl --minhash 0.8 [--semantic 0.95 --model DIR]
mobilellm-r1 curate rankme --model DIR --in probe/math.jsonl [--limit 512]

Outputs are written to a temporary file and renamed; a JSON report goes to stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=16)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="curate_action", metavar="ACTION", required=True)

    flt = actions.add_parser("filter", help="heuristic rules and/or a quality classifier")
    _io(flt)
    flt.add_argument("--heuristics", choices=["none", "default", "mixed"], default="none")
    flt.add_argument("--classifier", default=None, help="HF sequence-classification dir or hub id")
    flt.add_argument("--threshold", type=float, default=4.0, help="keep classifier score > this")
    flt.add_argument("--round", action="store_true", help="round scores to int first (FineWeb-Edu)")
    flt.add_argument("--device", default=None)
    flt.set_defaults(curate_run=run_filter)

    ask = actions.add_parser("ask-llm", help="Ask-LLM scoring with a causal LM; keep the top fraction")
    _io(ask)
    _model_args(ask, required=True)
    ask.add_argument("--domain", default="general", choices=["general", "code", "math", "knowledge"])
    ask.add_argument("--domain-field", default=None, help="row field naming each row's domain")
    ask.add_argument("--top", type=float, default=0.1, help="fraction to keep")
    ask.set_defaults(curate_run=run_ask_llm)

    dd = actions.add_parser("dedup", help="exact, MinHash and semantic deduplication")
    _io(dd)
    dd.add_argument("--no-exact", action="store_true", help="skip the exact-hash stage")
    dd.add_argument("--minhash", type=float, default=None, metavar="JACCARD", help="e.g. 0.8")
    dd.add_argument(
        "--semantic", type=float, default=None, metavar="COSINE", help="e.g. 0.95 (needs --model)"
    )
    _model_args(dd, required=False)
    dd.set_defaults(curate_run=run_dedup)

    rk = actions.add_parser("rankme", help="RankMe (paper Eq. 8) of a model's text embeddings")
    _io(rk, output=False)
    _model_args(rk, required=True)
    rk.add_argument("--limit", type=int, default=512, help="texts to embed")
    rk.set_defaults(curate_run=run_rankme)


def run(args: argparse.Namespace) -> int:
    report = args.curate_run(args)
    print(json.dumps(report, indent=2, default=str))
    return 0


def _load(args: argparse.Namespace):
    from ..cli import _resolve_device
    from ..model.hf import load_pretrained

    return load_pretrained(args.model, device=_resolve_device(args.device))


def run_filter(args: argparse.Namespace) -> dict:
    from ..cli import _resolve_device
    from .filters import HeuristicConfig, QualityClassifier
    from .filters import run_filter as _run

    heuristics = {"none": None, "default": HeuristicConfig(), "mixed": HeuristicConfig.mixed()}[
        args.heuristics
    ]
    classifier = None
    if args.classifier:
        classifier = QualityClassifier.from_pretrained(args.classifier, device=_resolve_device(args.device))
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
    from .filters import read_records
    from .rankme import rankme_of_model

    model, tokenizer = _load(args)
    texts = []
    for record in read_records(args.inputs, text_field=args.text_field):
        texts.append(record.text)
        if len(texts) >= args.limit:
            break
    return {"rankme": rankme_of_model(model, tokenizer, texts, args.batch_size), "texts": len(texts)}
