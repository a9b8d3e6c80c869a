"""`mobilellm-r1 train --recipe FILE [--set key=value ...] [--resume | --overwrite | --dump-topk [--samples N]]`.

One entry point for every stage; under torchrun it trains with FSDP2 on every rank:

    mobilellm-r1 train --recipe train/tiny_cpu
    mobilellm-r1 train --recipe train/tiny_cpu --set steps=200 --set optim.lr=1e-3
    torchrun --nproc-per-node 8 -m mobilellm_r1.cli train --recipe train/pretrain_950m_phase1 --resume

`--dump-topk` trains nothing: for a KD recipe it runs `distill.teacher` once over the samples the
run will consume (steps x micro_batch x grad_accum x `--ranks`, or `--samples`) and writes its
top-k log-probs to `distill.topk_dir` (resumable; data-parallel under torchrun). The same recipe
with `distill.topk_dir` set then trains from the store (`train/topk_store.py`):

    mobilellm-r1 train --recipe R --set distill.topk_dir=D --dump-topk --ranks 8   # R: a kd recipe
    torchrun --nproc-per-node 8 -m mobilellm_r1.cli train --recipe R --set distill.topk_dir=D
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..argtypes import positive_int
from ..devices import add_device_argument

if TYPE_CHECKING:
    from .config import TrainConfig

NAME = "train"
HELP = "train a model from a recipe (pretraining, mid-training, SFT, GRPO)"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="recipe file or shipped name (train/tiny_cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    run_dir = parser.add_mutually_exclusive_group()
    run_dir.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    run_dir.add_argument(
        "--overwrite", action="store_true", help="delete a previous run's outputs in out_dir first"
    )
    add_device_argument(parser)
    dump = parser.add_argument_group("offline top-k distillation (objective kd)")
    dump.add_argument("--dump-topk", action="store_true", help="write the teacher top-k store, do not train")
    dump.add_argument(
        "--samples", type=positive_int, default=None, help="global samples to dump (default: the run's)"
    )
    dump.add_argument(
        "--ranks", type=positive_int, default=None, help="GPUs the training run will use (default: these)"
    )
    dump.add_argument("--shard-size", type=positive_int, default=128, help="samples per shard file")
    dump.add_argument("--batch-size", type=positive_int, default=4, help="samples per teacher forward")


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from .config import load_train_config
    from .objectives import prepare_data
    from .trainer import Trainer, check_out_dir

    cfg = load_train_config(args.recipe, args.overrides)
    if args.dump_topk:
        return _dump_topk(cfg, args)
    check_out_dir(Path(cfg.out_dir), args.resume, args.overwrite)  # refuse before preparing data
    prepare_data(cfg, args.device)
    trainer = Trainer(cfg, resume=args.resume, device=args.device, overwrite=args.overwrite)
    summary = trainer.fit()
    is_main = trainer.dist.is_main
    # Free the sharded model before leaving the process group: gloo can abort at exit otherwise.
    del trainer
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()
    if is_main:
        print(format_summary(cfg.name, summary), file=sys.stderr)
        print(json.dumps({"run": cfg.name, "out_dir": cfg.out_dir, **summary}))
    return 0


def format_summary(name: str, summary: dict) -> str:
    """The end-of-run lines a person reads (stderr; the JSON line on stdout carries the same
    values for scripts): steps, tokens, wall time, final loss, and where the model and the
    metrics are."""
    minutes, seconds = divmod(round(summary["elapsed_s"]), 60)
    loss = "n/a" if summary["loss"] is None else f"{summary['loss']:.4f}"
    return (
        f"{name}: done at step {summary['step']} ({summary['steps_run']} steps, "
        f"{summary['tokens']:,} tokens, {minutes}m{seconds:02d}s); final loss {loss}\n"
        f"  final model: {summary['final_model']}\n"
        f"  metrics:     {summary['metrics']}"
    )


def _dump_topk(cfg: TrainConfig, args: argparse.Namespace) -> int:
    """`--dump-topk`: write the teacher top-k store and print its report (rank 0)."""
    import torch.distributed as dist

    from .topk_store import dump_topk

    report = dump_topk(
        cfg,
        samples=args.samples,
        ranks=args.ranks,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        device=args.device,
    )
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    if dist.is_initialized():
        dist.destroy_process_group()
    if is_main:
        print(json.dumps({"run": cfg.name, **report}))
    return 0
