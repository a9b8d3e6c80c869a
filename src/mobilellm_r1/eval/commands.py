"""`mobilellm-r1 eval`: run the paper's benchmarks on a checkpoint, a server, or a predictions file.

    mobilellm-r1 eval --model facebook/MobileLLM-R1-950M-base --tasks base --data-dir shared/data/eval
    mobilellm-r1 eval --model DIR --tasks post --chat            # AIME n=64, LiveCodeBench n=16
    mobilellm-r1 eval --server http://localhost:8000/v1 --served-model m --tasks aime24 --n 8
    mobilellm-r1 eval --predictions preds.jsonl --tasks gsm8k,math500 --data-dir D

Tasks: gsm8k math500 aime24 aime25 humaneval mbpp livecodebench mmlu arc_easy arc_challenge
boolq piqa siqa hellaswag openbookqa winogrande; suites: base (the paper's base-model table),
post (its post-trained table), commonsense, all. --data-dir D reads D/<task>/... in the layout
of shared/data/eval (see its SOURCES.md); the synthetic corpus writes that layout under
data/synth/eval. Writes OUT/samples/<task>.jsonl, OUT/summary.json and OUT/results.md.

A task whose data is not available (not under --data-dir; for HellaSwag, also not on the hub) is
skipped, named tasks included: the reason goes to stderr at once, under the printed table, into
summary.json as "skipped": {task: reason} and into the final JSON line; the other tasks are scored.
Without local data the hub is asked only when it answers one quick probe (HF_HUB_OFFLINE=1: the
local hub cache only), so an offline run skips at once. Exit status: 0 when at least one task was
scored (check "skipped" for the rest), 1 when every task was skipped.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..argtypes import non_negative_float, positive_int
from ..devices import add_device_argument

NAME = "eval"
HELP = "evaluate a model on the paper's benchmarks (pass@k, log-likelihood)"
DESCRIPTION = __doc__
DEFAULT_DATA_DIR = os.environ.get("MOBILELLM_R1_EVAL_DATA", "data/eval")


def _tasks(text: str) -> list[str]:
    """argparse type: comma-separated task or suite names, each known to the registry."""
    from .registry import expand_tasks

    names = [t.strip() for t in text.split(",") if t.strip()]
    try:
        expand_tasks(names or [""])
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("what to evaluate (one of)")
    src.add_argument(
        "--model", help="checkpoint directory, hub id, or an exported .pte / .gguf file (our engines)"
    )
    src.add_argument("--server", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    src.add_argument("--predictions", type=Path, help="jsonl of {task, id, completion}: score only")
    parser.add_argument("--served-model", default="default", help="model name sent to --server")
    parser.add_argument("--tasks", type=_tasks, required=True, help="comma-separated tasks or suites")
    parser.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR))
    parser.add_argument("--out", type=Path, default=Path("runs/eval"), help="output directory")
    parser.add_argument(
        "--n", type=positive_int, default=None, help="samples per problem (default: protocol's)"
    )
    parser.add_argument("--limit", type=positive_int, default=None, help="first N records of each task")
    parser.add_argument("--chat", action="store_true", help="post-trained protocol for every task")
    parser.add_argument(
        "--nll", action="store_true", help="per-token NLL of the reference solutions instead of sampling"
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=None)
    parser.add_argument("--temperature", type=non_negative_float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=positive_int, default=2, help="sandbox / math-judge processes")
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, help="prompts per generation/loglik batch"
    )
    add_device_argument(parser)
    parser.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: the checkpoint's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the decode step")


def _sources(args: argparse.Namespace) -> None:
    given = [x for x in (args.model, args.server, args.predictions) if x]
    if len(given) != 1:
        raise ValueError("give exactly one of --model, --server, --predictions")


def run(args: argparse.Namespace) -> int:
    from .engines import LocalEngine, OpenAIEngine
    from .runner import EvalOptions, Evaluator, read_predictions

    _sources(args)
    opts = EvalOptions(
        tasks=args.tasks,
        data_dir=args.data_dir,
        out_dir=args.out,
        chat=args.chat or None,
        n=args.n,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        workers=args.workers,
        batch_size=args.batch_size,
        model_name=str(args.model or args.served_model),
        nll=args.nll,
    )
    kwargs: dict = {}
    if args.model:
        from ..deploy.load import is_exported_file, load_for_generation

        if is_exported_file(args.model):
            loaded = load_for_generation(
                args.model, device=args.device, dtype=args.dtype, compile=args.compile
            )
            engine = LocalEngine(
                loaded.generator, loaded.tokenizer, loaded.context, batch_size=args.batch_size
            )
            kwargs = {"engine": engine, "model": None, "tokenizer": loaded.tokenizer}
        else:
            from ..model.hf import load_checked

            model, tokenizer = load_checked(args.model, device=args.device, dtype=args.dtype)
            engine = LocalEngine.for_model(model, tokenizer, batch_size=args.batch_size, compile=args.compile)
            kwargs = {"engine": engine, "model": model, "tokenizer": tokenizer}
    elif args.server:
        kwargs = {
            "engine": OpenAIEngine(args.server, args.served_model, api_key=os.environ.get("OPENAI_API_KEY"))
        }
    else:
        kwargs = {"predictions": read_predictions(args.predictions)}
    evaluator = Evaluator(opts, **kwargs)
    summary = evaluator.run()
    print((args.out / "results.md").read_text(), end="")
    report = {"out": str(args.out), "summary": str(args.out / "summary.json"), "skipped": evaluator.skipped}
    print(json.dumps(report))
    return 0 if summary else 1
