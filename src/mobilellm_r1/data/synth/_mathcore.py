"""Core types for math problems: solution steps, problems with structured forms, equation builders.

See `mobilellm_r1.data.synth.math` for the structured-form conventions."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ._util import fmt_plain, fmt_tex


@dataclass
class Step:
    """One line of a worked solution; `{calc}` in `text` is replaced by `expr = value`."""

    text: str
    expr: str | None = None
    value: Fraction | None = None

    def render(self, style: str = "plain") -> str:
        """The line as text; style "gsm8k" adds calculator annotations `<<expr=value>>`."""
        if self.expr is None or self.value is None:
            return self.text
        shown = fmt_plain(self.value)
        if style == "gsm8k":
            calc = f"{self.expr} = <<{self.expr.replace(' ', '')}={shown}>>{shown}"
        else:
            calc = f"{self.expr} = {shown}"
        return self.text.replace("{calc}", calc)


@dataclass
class MathProblem:
    """A problem with its worked solution, exact answer and structured (checkable) form."""

    level: int
    kind: str
    question: str
    steps: list[Step]
    answer: Fraction
    structured: dict[str, Any]
    word: bool = True
    check: str = field(default="")

    @property
    def key(self) -> str:
        """Identity used for de-duplication and held-out splits."""
        return self.question

    def solution(self, style: str = "plain") -> str:
        """The worked solution, one step per line (no final answer line)."""
        return "\n".join(step.render(style) for step in self.steps)

    def record(self) -> dict[str, Any]:
        """The structured part of a JSON record."""
        return {
            "level": self.level,
            "kind": self.kind,
            "question": self.question,
            "answer": fmt_tex(self.answer),
            "answer_value": fmt_plain(self.answer),
            "structured": self.structured,
        }


# ------------------------------------------------------------------------ construction
def expr_problem(level: int, kind: str, question: str, steps: list[Step], expr: str) -> MathProblem:
    """A word problem whose answer is the value of the last step and of `expr`."""
    answer = steps[-1].value
    assert answer is not None
    return MathProblem(level, kind, question, steps, answer, {"type": "expr", "expr": expr})


def lin_tex(a: Fraction, b: Fraction, var: str = "x") -> str:
    """LaTeX for `a*var + b`, omitting unit coefficients and zero terms."""
    if a == 0:
        return fmt_tex(b)
    coef = "" if a == 1 else "-" if a == -1 else fmt_tex(a)
    text = f"{coef}{var}"
    if b > 0:
        text += f" + {fmt_tex(b)}"
    elif b < 0:
        text += f" - {fmt_tex(-b)}"
    return text


def linear_steps(a: Fraction, b: Fraction, c: Fraction, d: Fraction) -> list[Step]:
    """Text steps solving `a*x + b = c*x + d` (requires a != c)."""
    steps: list[Step] = []
    if c != 0:
        move = (
            f"Subtract ${lin_tex(c, Fraction(0))}$ from" if c > 0 else f"Add ${lin_tex(-c, Fraction(0))}$ to"
        )
        steps.append(Step(f"{move} both sides: ${lin_tex(a - c, b)} = {fmt_tex(d)}$."))
    a, c = a - c, Fraction(0)
    if b != 0:
        move = f"Subtract ${fmt_tex(b)}$ from" if b > 0 else f"Add ${fmt_tex(-b)}$ to"
        steps.append(Step(f"{move} both sides: ${lin_tex(a, Fraction(0))} = {fmt_tex(d - b)}$."))
    x = (d - b) / a
    if a != 1:
        steps.append(Step(f"Divide both sides by ${fmt_tex(a)}$: $x = {fmt_tex(x)}$."))
    return steps


def linear_problem(
    level: int,
    kind: str,
    question: str,
    lhs: tuple[Fraction | int, Fraction | int],
    rhs: tuple[Fraction | int, Fraction | int],
    steps: list[Step] | None = None,
    word: bool = False,
) -> MathProblem:
    """An equation problem `lhs[0]*x + lhs[1] = rhs[0]*x + rhs[1]` solved for x.

    `steps` defaults to the generic text steps of `linear_steps`.
    """
    a, b = (Fraction(v) for v in lhs)
    c, d = (Fraction(v) for v in rhs)
    x = (d - b) / (a - c)
    if steps is None:
        steps = linear_steps(a, b, c, d)
    structured = {"type": "linear", "lhs": [fmt_plain(a), fmt_plain(b)], "rhs": [fmt_plain(c), fmt_plain(d)]}
    left, right = a * x + b, c * x + d
    check = (
        f"Check: substituting $x = {fmt_tex(x)}$ gives ${fmt_tex(left)}$ on the left and "
        f"${fmt_tex(right)}$ on the right, so the solution is correct."
    )
    return MathProblem(level, kind, question, steps, x, structured, word=word, check=check)


def system_problem(
    level: int,
    kind: str,
    question: str,
    rows: list[list[int]],
    target: list[int],
    steps: list[Step],
    word: bool,
) -> MathProblem:
    """A 2x2 system problem; the answer is `target[0]*x + target[1]*y`."""
    (a1, b1, c1), (a2, b2, c2) = rows
    det = a1 * b2 - a2 * b1
    x = Fraction(c1 * b2 - c2 * b1, det)
    y = Fraction(a1 * c2 - a2 * c1, det)
    answer = target[0] * x + target[1] * y
    structured = {
        "type": "system",
        "rows": [[str(v) for v in r] for r in rows],
        "target": [str(t) for t in target],
    }
    check = f"Check: $x = {fmt_tex(x)}$ and $y = {fmt_tex(y)}$ satisfy both equations."
    return MathProblem(level, kind, question, steps, answer, structured, word=word, check=check)


Generator = Callable[[random.Random], MathProblem]
GENERATORS: dict[int, list[Generator]] = {}


def level(n: int) -> Callable[[Generator], Generator]:
    """Decorator registering a generator for difficulty level `n`."""

    def wrap(fn: Generator) -> Generator:
        """Register and return `fn`."""
        GENERATORS.setdefault(n, []).append(fn)
        return fn

    return wrap
