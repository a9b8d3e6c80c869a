"""Command-line building blocks: `Command` (one subcommand, as a stage's `commands.py` declares it)
and argparse types for numeric options (a bad value is a usage error, exit 2, before any work starts).

parser.add_argument("--limit", type=positive_int)
parser.add_argument("--top-p", type=probability)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One subcommand: `add_arguments(parser)` declares its options, `run(args)` returns the exit code."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {kind.__name__}: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _checked(kind: type, ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _number(text, kind)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value:g}")
        return value

    parse.__name__ = f"{kind.__name__} ({rule})"  # argparse names the type in some messages
    return parse


positive_int = _checked(int, lambda v: v >= 1, ">= 1")
non_negative_int = _checked(int, lambda v: v >= 0, ">= 0")
positive_float = _checked(float, lambda v: v > 0, "> 0")
non_negative_float = _checked(float, lambda v: v >= 0, ">= 0")
probability = _checked(float, lambda v: 0 < v <= 1, "in (0, 1]")
fraction = _checked(float, lambda v: 0 <= v <= 1, "in [0, 1]")
