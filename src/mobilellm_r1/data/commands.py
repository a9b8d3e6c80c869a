"""`mobilellm-r1 data ...`: synth (embedded corpus), train-tokenizer (BPE on your corpus), tokenize
(sources -> shards), mix (shares report).

mobilellm-r1 data synth --out data/synth --seed 0 [--scale 0.1]
mobilellm-r1 data train-tokenizer --recipe data/synthetic --chats 'data/synth/sft/*.jsonl' --vocab-size 4096 --out data/tokenizer
mobilellm-r1 data tokenize --recipe data/synthetic --workers 2
mobilellm-r1 data tokenize --name wiki --files 'raw/wiki/*.jsonl.zst' --out data/shards
mobilellm-r1 data mix --recipe data/pretrain_phase2 --stand-in --tokens 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .formats import AUTO, FORMATS

if TYPE_CHECKING:
    from .recipes import MixtureRecipe
    from .sources import SourceSpec

NAME = "data"
HELP = "make, tokenize and mix training data"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    synth = actions.add_parser(
        "synth", help="write the embedded synthetic reasoning corpus", formatter_class=fmt
    )
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--scale", type=float, default=1.0, help="multiply every default count")
    synth.set_defaults(data_run=run_synth)

    bpe = actions.add_parser(
        "train-tokenizer",
        help="learn a byte-level BPE vocabulary on a corpus (Llama-3 specials, split regex, chat template)",
        formatter_class=fmt,
    )
    bpe.add_argument("--recipe", help="train on the raw files of every source of this mixture recipe")
    bpe.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    bpe.add_argument("--files", nargs="+", default=[], help="more raw files/globs/dirs (text documents)")
    bpe.add_argument("--text-field", default="text", help="text field of --files rows")
    bpe.add_argument("--chats", nargs="+", default=[], help="chat JSONL files/globs ('messages' rows)")
    bpe.add_argument("--vocab-size", type=int, required=True, help="ids in all, 256 specials included")
    bpe.add_argument(
        "--single-digits",
        action="store_true",
        help="split numbers into single digits before BPE (Qwen2's regex; helps small models do arithmetic)",
    )
    bpe.add_argument("--out", required=True, help="tokenizer directory to write")
    bpe.set_defaults(data_run=run_train_tokenizer)

    tok = actions.add_parser("tokenize", help="tokenize sources into uint32 shards", formatter_class=fmt)
    tok.add_argument("--recipe", help="tokenize every source of this mixture recipe that lists raw files")
    tok.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    tok.add_argument("--name", help="source name (without --recipe)")
    tok.add_argument("--files", nargs="+", help="raw files/globs/dirs (without --recipe)")
    tok.add_argument("--format", default=AUTO, choices=[AUTO, *FORMATS])
    tok.add_argument("--text-field", default="text")
    tok.add_argument("--template", default=None, help="str.format template over row fields")
    tok.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    tok.add_argument("--out", default=None, help="shards root (default: the recipe's shards_root)")
    tok.add_argument("--tokenizer", default=None, help="HF dir with tokenizer files (default: Llama-3)")
    tok.add_argument("--workers", type=int, default=2)
    tok.add_argument(
        "--overwrite", action="store_true", help="replace shards made with another tokenizer/spec"
    )
    tok.set_defaults(data_run=run_tokenize)

    mix = actions.add_parser(
        "mix", help="sample a mixture and report token shares / epochs", formatter_class=fmt
    )
    mix.add_argument("--recipe", required=True)
    mix.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    mix.add_argument("--tokens", type=int, default=1_000_000, help="tokens to sample")
    mix.add_argument("--batch-size", type=int, default=16)
    mix.add_argument(
        "--stand-in", action="store_true", help="random stand-in documents instead of the shards"
    )
    mix.add_argument("--json", action="store_true")
    mix.set_defaults(data_run=run_mix)


def run(args: argparse.Namespace) -> int:
    return args.data_run(args)


def run_synth(args: argparse.Namespace) -> int:
    from .synth import SynthConfig, generate

    manifest = generate(SynthConfig(seed=args.seed).scaled(args.scale), Path(args.out))
    for name, entry in sorted(manifest.get("files", {}).items()):
        count = entry.get("records", entry) if isinstance(entry, dict) else entry
        print(f"{name}: {count}")
    print(f"wrote {args.out}")
    return 0


def _recipe_specs(recipe_name: str, overrides: list[str]) -> tuple[MixtureRecipe, list[SourceSpec]]:
    """A mixture recipe and its raw-file sources; ValueError if it lists none."""
    from .recipes import load_mixture, source_spec  # imports torch (the loader)

    recipe = load_mixture(recipe_name, overrides)
    specs = [source_spec(s, recipe.data_root) for s in recipe.sources if s.files]
    if not specs:
        raise ValueError(f"recipe {recipe.name!r} lists no raw files")
    return recipe, specs


def run_train_tokenizer(args: argparse.Namespace) -> int:
    import itertools
    import time

    from .sources import SourceSpec
    from .tokenizer_train import chat_texts, source_texts, train_bpe

    specs = _recipe_specs(args.recipe, args.overrides)[1] if args.recipe else []
    if args.files:
        specs.append(SourceSpec(name="files", path=list(args.files), text_field=args.text_field))
    if not (specs or args.chats):
        raise ValueError("give --recipe, --files or --chats")
    start = time.perf_counter()
    texts = itertools.chain(source_texts(specs), chat_texts(args.chats))
    tokenizer = train_bpe(texts, args.vocab_size, name=args.out, single_digits=args.single_digits)
    tokenizer.save(args.out)
    seconds = time.perf_counter() - start
    print(
        f"{args.out}: {tokenizer.vocab_size:,} ids ({tokenizer.vocab_size - 256:,} learned), {seconds:.1f} s"
    )
    print(json.dumps({"out": args.out, "vocab_size": tokenizer.vocab_size, "seconds": round(seconds, 2)}))
    return 0


def run_tokenize(args: argparse.Namespace) -> int:
    from ..tokenizer import load_tokenizer
    from .shards import tokenize_source
    from .sources import SourceSpec

    tokenizer = load_tokenizer(args.tokenizer)
    if args.recipe:
        recipe, specs = _recipe_specs(args.recipe, args.overrides)
        root = Path(args.out or recipe.shards_root)
    else:
        if not (args.name and args.files):
            raise ValueError("give --recipe, or --name and --files")
        spec = SourceSpec(
            name=args.name,
            path=list(args.files),
            format=args.format,
            text_field=args.text_field,
            template=args.template,
            on_error=args.on_error,
        )
        specs = [spec]
        root = Path(args.out or "data/shards")
    for spec in specs:
        report = tokenize_source(
            spec, root, tokenizer=tokenizer, workers=args.workers, overwrite=args.overwrite
        )
        print(json.dumps({"source": spec.name, **{k: v for k, v in report.items() if k != "shards"}}))
    return 0


def run_mix(args: argparse.Namespace) -> int:
    from .mixture import stand_in_sources
    from .recipes import build_loader, load_mixture

    recipe = load_mixture(args.recipe, args.overrides)
    sources = stand_in_sources([s.name for s in recipe.active]) if args.stand_in else None
    loader = build_loader(recipe, batch_size=args.batch_size, eos_id=128_001, sources=sources)
    per_batch = args.batch_size * (recipe.seq_len + 1)
    for _ in range(max(1, -(-args.tokens // per_batch))):
        loader.next_batch()
    report = loader.report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    worst = max(abs(r["share"] - r["weight"]) for r in report.values())
    print(f"{'source':<28} {'recipe %':>9} {'measured %':>11} {'epochs':>8}")
    for name, r in report.items():
        print(f"{name:<28} {100 * r['weight']:9.3f} {100 * r['share']:11.3f} {r['epochs']:8.3f}")
    total = sum(r["tokens"] for r in report.values())
    print(
        f"{total:,} tokens sampled; largest share error {100 * worst:.3f} percentage points", file=sys.stderr
    )
    return 0
