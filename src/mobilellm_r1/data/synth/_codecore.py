"""Core types for code tasks: `CodeTask`, the template registry and input helpers.

A template is a function `rng -> CodeTask` that picks a function name, argument names, constants
and one of several equivalent body styles; it computes the expected outputs of its test inputs
with a separate reference implementation (so a wrong body is caught when the tests run).
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

WORDS = (
    "apple", "river", "stone", "light", "green", "quick", "zebra", "music", "table", "ocean",
    "tiger", "plant", "cloud", "bread", "sky", "moon", "level", "radar", "noon", "civic", "sun",
    "a", "an", "the", "of", "garden", "window", "yellow", "python", "code", "data", "tree",
    "mountain", "idea", "queue", "rhythm", "eye", "banana", "kayak", "refer", "wow", "umbrella",
)  # fmt: skip


@dataclass(frozen=True)
class CodeTask:
    """A small Python function with its specification and test cases."""

    template: str
    name: str
    params: tuple[tuple[str, str], ...]
    returns: str
    summary: str
    body: str
    cases: tuple[tuple[tuple[Any, ...], Any], ...]
    identity: tuple[Any, ...]

    def call(self, args: tuple[Any, ...], name: str | None = None) -> str:
        """Source text of a call with the given argument values."""
        return f"{name or self.name}({', '.join(repr(a) for a in args)})"

    def signature(self) -> str:
        """The `def` line."""
        params = ", ".join(f"{a}: {t}" for a, t in self.params)
        return f"def {self.name}({params}) -> {self.returns}:"

    def docstring(self, n_examples: int = 2) -> str:
        """The indented docstring (HumanEval style) with doctest examples."""
        lines = textwrap.wrap(self.summary, width=88)
        text = '    """ ' + "\n    ".join(lines) + "\n"
        for args, expected in self.cases[:n_examples]:
            text += f"    >>> {self.call(args)}\n    {expected!r}\n"
        return text + '    """\n'

    def prompt(self) -> str:
        """Signature plus docstring: what a model must complete."""
        return f"{self.signature()}\n{self.docstring()}"

    def source(self) -> str:
        """The complete function definition."""
        return self.prompt() + self.body

    def asserts(self, name: str | None = None, indent: str = "") -> str:
        """One `assert call == expected` line per test case."""
        return "".join(
            f"{indent}assert {self.call(args, name)} == {expected!r}\n" for args, expected in self.cases
        )


Template = Callable[[random.Random], CodeTask]
TEMPLATES: dict[str, Template] = {}


def template(fn: Template) -> Template:
    """Decorator registering a code template under its function name."""
    TEMPLATES[fn.__name__] = fn
    return fn


def build(
    rng: random.Random,
    template_name: str,
    names: Sequence[str],
    params: Sequence[tuple[Sequence[str], str]],
    returns: str,
    summary: str,
    bodies: Sequence[str],
    ref: Callable[..., Any],
    inputs: Callable[[random.Random], tuple[Any, ...]],
    constants: tuple[Any, ...] = (),
    n_cases: int = 6,
) -> CodeTask:
    """Assemble a task: choose the name, argument names and body style, and compute test cases.

    `summary` and each body are `str.format` templates over the chosen argument names
    (`{a0}`, `{a1}`, ...) and `{name}`; `ref` computes expected outputs from inputs.
    """
    name = rng.choice(list(names))
    arg_names = [rng.choice(list(options)) for options, _ in params]
    if len(set(arg_names)) < len(arg_names):
        arg_names = [next(iter(options)) for options, _ in params]
    fields = {f"a{i}": a for i, a in enumerate(arg_names)} | {"name": name}
    variant = rng.randrange(len(bodies))
    body = bodies[variant].format(**fields)
    typed = tuple((a, t) for a, (_, t) in zip(arg_names, params, strict=True))
    cases: list[tuple[tuple[Any, ...], Any]] = []
    for _ in range(n_cases * 20):
        if len(cases) >= n_cases:
            break
        args = inputs(rng)
        if all(args != prev for prev, _ in cases):
            cases.append((args, ref(*args)))
    identity = (template_name, name, tuple(arg_names), constants, variant)
    return CodeTask(
        template_name, name, typed, returns, summary.format(**fields), body, tuple(cases), identity
    )


def int_list(rng: random.Random, lo: int = -20, hi: int = 20, max_len: int = 8) -> list[int]:
    """A random list of integers (possibly empty)."""
    return [rng.randint(lo, hi) for _ in range(rng.randint(0, max_len))]


def sentence(rng: random.Random, max_words: int = 6) -> str:
    """A random lowercase sentence of common words (possibly empty)."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, max_words)))


def mixed_case(rng: random.Random, text: str) -> str:
    """`text` with some letters upper-cased at random."""
    return "".join(ch.upper() if rng.random() < 0.3 else ch for ch in text)
