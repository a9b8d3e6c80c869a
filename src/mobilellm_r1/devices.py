"""The compute device a command asked for, checked before any work (or output folder) starts.

resolve_device("cuda")      # ValueError "--device cuda: CUDA is not available on this machine; ..."
parser.add_argument("--device", type=device_arg)   # the same check as a usage error (exit 2)
add_device_argument(parser)                         # that option, with the usual help
"""

from __future__ import annotations

import argparse


def device_problem(name: str) -> str | None:
    """Why device `name` (cpu, cuda, cuda:N) cannot be used here, or None when it can."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return "not a device name (use cpu, cuda or cuda:N)"
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"unsupported device type {device.type!r} (use cpu, cuda or cuda:N)"
    if not torch.cuda.is_available():
        return "CUDA is not available on this machine; use --device cpu"
    if device.index is not None and device.index >= torch.cuda.device_count():
        return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def resolve_device(name: str | None, flag: str = "--device") -> str:
    """`name` checked (ValueError naming `flag` if unusable), or the best available for None."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    problem = device_problem(name)
    if problem:
        raise ValueError(f"{flag} {name}: {problem}")
    return name


def device_arg(text: str) -> str:
    """argparse type: a device usable on this machine (a usage error otherwise)."""
    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}")
    return text


def add_device_argument(parser: argparse.ArgumentParser, default_help: str = "cuda when available") -> None:
    """The `--device` option of a command (checked by :func:`device_arg`; None when not given)."""
    parser.add_argument(
        "--device", type=device_arg, default=None, help=f"cpu, cuda or cuda:N (default: {default_help})"
    )
