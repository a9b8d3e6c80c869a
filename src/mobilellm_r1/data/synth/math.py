"""Math word problems and equations at five difficulty levels, with worked solutions.

Levels: 1 one-step addition/subtraction; 2 two-step problems with multiplication; 3 multi-step
problems with division and percentages; 4 linear equations and 2x2 systems; 5 linear equations
with fractions. Every problem keeps a structured form from which its answer can be recomputed
without this module:

* ``{"type": "expr", "expr": "12 + 7"}``: an arithmetic expression (``+ - * /`` and brackets);
* ``{"type": "linear", "lhs": [a, b], "rhs": [c, d]}``: ``a*x + b = c*x + d``;
* ``{"type": "system", "rows": [[a1, b1, c1], [a2, b2, c2]], "target": [p, q]}``:
  ``a1*x + b1*y = c1``, ``a2*x + b2*y = c2``, answer ``p*x + q*y``;

numbers are strings such as ``"3"`` or ``"-7/4"``. Answers are exact (`fractions.Fraction`);
levels 1-3 and the level-4 word problems always have positive integer answers.
"""

from __future__ import annotations

import random

from . import math_algebra, math_templates
from ._mathcore import GENERATORS, MathProblem, Step
from ._util import boxed

__all__ = ["GENERATORS", "LEVELS", "MathProblem", "Step", "document_text", "make_problem"]

LEVELS = (1, 2, 3, 4, 5)


# ---------------------------------------------------------------------------- sampling
# Importing the template modules registers their generators.
_TEMPLATE_MODULES = (math_templates, math_algebra)


def make_problem(rng: random.Random, level: int | None = None, word_only: bool = False) -> MathProblem:
    """One random problem (of `level`, or a random level); `word_only` keeps GSM8K-style ones."""
    for _ in range(1000):
        lvl = level if level is not None else rng.choice(LEVELS)
        gens = GENERATORS[lvl]
        problem = rng.choice(gens)(rng)
        if not word_only or (problem.word and problem.answer.denominator == 1 and problem.answer > 0):
            return problem
    raise RuntimeError(f"no word problem generator for level {level}")


def document_text(problem: MathProblem, rng: random.Random) -> str:
    """A pretraining document: the problem, a worked solution and the boxed answer."""
    sol = problem.solution()
    box = boxed(problem.answer)
    layout = rng.randrange(4)
    if layout == 0:
        return f"Problem: {problem.question}\n\nSolution:\n{sol}\nThe final answer is ${box}$."
    if layout == 1:
        return f"Question: {problem.question}\nAnswer: Let's think step by step.\n{sol}\nSo the answer is ${box}$."
    if layout == 2:
        return f"{problem.question}\n\n{sol}\n\nTherefore, the answer is ${box}$."
    return f"Exercise (level {problem.level}). {problem.question}\n\nWorked solution.\n{sol}\nAnswer: ${box}$"
