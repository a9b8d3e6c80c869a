"""`mobilellm-r1 train --recipe FILE [--set key=value ...] [--resume]`.

One entry point for every stage; under torchrun it trains with FSDP2 on every rank:

    mobilellm-r1 train --recipe train/tiny_cpu
    mobilellm-r1 train --recipe train/tiny_cpu --set steps=200 --set optim.lr=1e-3
    torchrun --nproc-per-node 8 -m mobilellm_r1.cli train --recipe train/pretrain_950m_phase1 --resume
"""

from __future__ import annotations

import argparse
import gc
import json

NAME = "train"
HELP = "train a model from a recipe (pretraining, mid-training, SFT, GRPO)"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="recipe file or shipped name (train/tiny_cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from .config import load_train_config
    from .trainer import Trainer

    cfg = load_train_config(args.recipe, args.overrides)
    trainer_cls = Trainer
    if cfg.objective == "grpo":
        from .grpo import GRPOTrainer as trainer_cls
    trainer = trainer_cls(cfg, resume=args.resume, device=args.device)
    summary = trainer.fit()
    is_main = trainer.dist.is_main
    # Free the sharded model before leaving the process group: gloo can abort at exit otherwise.
    del trainer
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()
    if is_main:
        print(json.dumps({"run": cfg.name, "out_dir": cfg.out_dir, **summary}))
    return 0
