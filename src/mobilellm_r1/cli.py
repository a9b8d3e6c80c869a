"""The `mobilellm-r1` command line: registers each stage's subcommands and runs one.

The subcommands live with their stage: `info` and `init` in `model/commands.py`, `generate` in
`deploy/commands.py`, the `data`, `train`, `eval` and `curate` groups in those packages'
`commands.py`, and `run` (the whole recipe, stage by stage) in `pipeline/commands.py`. A new subcommand is a `Command` (name, help, description, `add_arguments`, `run`)
in its stage's `commands.py` plus one line here. Heavy modules (torch, the model, the tokenizer)
are imported inside the `run` functions only.

Errors: bad arguments give argparse's usage message and exit code 2; expected runtime
errors (missing files, bad checkpoints, invalid values) print one line
`mobilellm-r1: error: <message>` on stderr and exit with 1 (`--debug` re-raises instead).
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

from .argtypes import Command
from .curation import commands as curate_commands
from .data import commands as data_commands
from .deploy import commands as deploy_commands
from .eval import commands as eval_commands
from .model import commands as model_commands
from .pipeline import commands as pipeline_commands
from .train import commands as train_commands

PROG = "mobilellm-r1"
# Errors reported as one line (exit 1). CheckpointError is a ValueError, FileNotFoundError an OSError.
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError)

COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a subcommand to the CLI (name must be new); returns it for convenience."""
    if command.name in COMMANDS:
        raise ValueError(f"subcommand {command.name!r} is already registered")
    COMMANDS[command.name] = command
    return command


def group_command(module: ModuleType) -> Command:
    """A stage's command group (its `commands.py` has `NAME`, `HELP`, `DESCRIPTION`, `add_arguments`, `run`)."""
    return Command(module.NAME, module.HELP, module.DESCRIPTION, module.add_arguments, module.run)


for _command in (
    *model_commands.COMMANDS,
    *deploy_commands.COMMANDS,
    *map(group_command, (data_commands, train_commands, eval_commands, curate_commands, pipeline_commands)),
):
    register(_command)


def _one_line(err: BaseException) -> str:
    """The exception message on one line (type name if the message is empty)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


# =========================================================================== main
def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered `Command`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, evaluate and run sub-billion-parameter reasoning LMs (MobileLLM-R1).",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # Also accepted after the subcommand; SUPPRESS keeps the top-level value otherwise.
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def _exit_code(code: object) -> int:
    """SystemExit.code -> int (None is 0; a message is 1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


LOGGED_PROGRESS_INTERVAL = "30"  # seconds between progress-bar redraws when stderr is a file


def quiet_progress_when_logged() -> None:
    """Progress bars redraw ten times a second; into a file or a scheduler's log (stderr not a
    terminal) that is megabytes of carriage returns, so there they redraw every 30 s (tqdm reads
    TQDM_MININTERVAL; the stages a run starts inherit it; a value the user set wins)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", LOGGED_PROGRESS_INTERVAL)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the subcommand and return its exit code."""
    quiet_progress_when_logged()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0)
        return _exit_code(exc.code)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `| head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except RUNTIME_ERRORS as err:
        if args.debug:
            raise
        from tqdm import tqdm  # its write() puts the line below any open progress bar

        tqdm.write(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
