"""`mobilellm-r1 run RECIPE`: the whole recipe, stage by stage, then its report.

    mobilellm-r1 run e2e/tiny_cpu                      # the README's main job (~15 min on 2 CPU cores)
    mobilellm-r1 run e2e/tiny_cpu --dry-run            # the plan: what runs, what is up to date
    mobilellm-r1 run e2e/tiny_cpu --set pretrain_1.steps=80   # re-runs pretrain_1 and what follows
    mobilellm-r1 run e2e/tiny_cpu --from sft_general   # force that stage and the later ones
    mobilellm-r1 run e2e/tiny_cpu --only export        # one stage (its inputs must exist)
    torchrun --nnodes 2 --nproc-per-node 8 ... -m mobilellm_r1.cli run e2e/paper_140m

Each stage is one `mobilellm-r1` command run inside the run directory (`runs/NAME/`); a stage whose
settings and inputs are unchanged since it finished is skipped, so a killed run continues where it
stopped when the same command is run again. The report (`report.html`, `report.json`) is rewritten
at the end of every run, also one that failed or was stopped (Ctrl-C, SIGTERM): it then shows the
stages that finished (`--report-only` rewrites it from the finished stages).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import PipelineConfig
    from .plan import StagePlan

NAME = "run"
HELP = "run a whole recipe: curate -> pretrain -> mid-train -> SFT -> RL -> evaluate -> export -> report"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="e2e recipe file or shipped name (e2e/tiny_cpu)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="append KEY=VALUE to a stage's --set list, e.g. pretrain_1.steps=80 (repeatable)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--from", dest="start", metavar="STAGE", help="re-run this stage and all later ones")
    which.add_argument("--only", metavar="STAGE", help="run this stage alone (its inputs must exist)")
    which.add_argument("--report-only", action="store_true", help="only rewrite the report")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument(
        "--out-dir", default=None, help="the run directory (default: the recipe's, runs/NAME)"
    )


def run(args: argparse.Namespace) -> int:
    from .config import load_pipeline
    from .plan import make_plan
    from .runner import Runner, StageFailed, rank_info

    cfg = load_pipeline(args.recipe, args.overrides, args.out_dir)
    root = Path.cwd()
    command = reproduce_command(args)
    if not args.report_only:
        plan = make_plan(cfg, root, start=args.start, only=args.only)
        if args.dry_run:
            print_plan(plan)
            return 0
        if rank_info()[0] == 0:
            save_recipe(cfg, root)
        try:
            with terminate_as_interrupt():
                Runner(cfg, root).execute(plan)
        except StageFailed as err:
            print(f"mobilellm-r1: error: {err}", file=sys.stderr)
            report(cfg, root, command, "so far")
            return 1
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (a scheduler's time limit)
            report(cfg, root, command, "so far")
            raise
    report(cfg, root, command)
    return 0


def report(cfg: PipelineConfig, root: Path, command: list[str], when: str = "") -> None:
    """Write the report (rank 0): after a stop or a failure it shows the stages that finished."""
    from .report import write_report
    from .runner import rank_info

    if rank_info()[0] != 0:
        return
    paths = write_report(cfg, root, command=command)
    print(f"report{' ' + when if when else ''}: {paths[0]} (numbers: {paths[1]})", file=sys.stderr)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (what Slurm and `timeout` send first) raises KeyboardInterrupt here, so a run
    stopped from outside still writes the report of its finished stages; the running stage
    ends with the orchestrator, keeping its last checkpoint for the next run to resume."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_plan(plan: list[StagePlan]) -> None:
    """One line per stage: what will happen, its key, its command line."""
    width = max(len(p.stage.name) for p in plan)
    for p in plan:
        print(f"{p.stage.name:<{width}}  {p.action:<10} {p.key or '-':<16}  mobilellm-r1 {' '.join(p.argv)}")


def reproduce_command(args: argparse.Namespace) -> list[str]:
    """The `mobilellm-r1 run ...` line that repeats this run's settings."""
    words = ["mobilellm-r1", "run", args.recipe]
    for item in args.overrides:
        words += ["--set", item]
    if args.out_dir:
        words += ["--out-dir", args.out_dir]
    return words


def save_recipe(cfg: PipelineConfig, root: Path) -> None:
    """The recipe as run (overrides applied) at RUN/recipe.yaml, for the report and for a re-run."""
    import yaml

    from ..atomic import atomic_write
    from ..typed_config import to_dict

    run_dir = root / cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "recipe.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False, width=100))
