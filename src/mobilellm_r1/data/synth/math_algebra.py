"""Equation templates for levels 4 (linear equations, 2x2 systems) and 5 (fractions).

Registered in `_mathcore.GENERATORS`; word problems among them set `word=True` and have
positive integer answers (usable in GSM8K-style sets).
"""

from __future__ import annotations

import random
from fractions import Fraction

from ._mathcore import MathProblem, Step, level, lin_tex, linear_problem, linear_steps, system_problem
from ._util import fmt_plain, fmt_tex

VENUES = ("museum", "theater", "zoo", "school play", "concert hall", "aquarium")


# -------------------------------------------------------------------------------- level 4
def _nonzero(rng: random.Random, lo: int, hi: int) -> int:
    """A random nonzero integer in [lo, hi]."""
    while True:
        v = rng.randint(lo, hi)
        if v:
            return v


@level(4)
def linear(rng: random.Random) -> MathProblem:
    """Solve a*x + b = c with an integer solution."""
    a, b, x = _nonzero(rng, -9, 9), _nonzero(rng, -25, 25), rng.randint(-12, 12)
    if a == 1:
        a = 2
    c = a * x + b
    q = f"Solve for $x$: ${lin_tex(Fraction(a), Fraction(b))} = {c}$."
    return linear_problem(4, "linear", q, (a, b), (0, c))


@level(4)
def two_sided(rng: random.Random) -> MathProblem:
    """Solve a*x + b = c*x + d with an integer solution."""
    a, c = rng.sample([v for v in range(-9, 10) if v], 2)
    b, x = rng.randint(-20, 20), rng.randint(-10, 10)
    d = (a - c) * x + b
    q = f"Find $x$ if ${lin_tex(Fraction(a), Fraction(b))} = {lin_tex(Fraction(c), Fraction(d))}$."
    return linear_problem(4, "two_sided", q, (a, b), (c, d))


@level(4)
def number_puzzle(rng: random.Random) -> MathProblem:
    """A number multiplied and shifted gives a result: find the number."""
    x, a, b = rng.randint(2, 30), rng.randint(2, 9), rng.randint(1, 40)
    if rng.random() < 0.5:
        r = a * x + b
        q = f"When a number is multiplied by {a} and then {b} is added, the result is {r}. What is the number?"
        undo = Step("Undoing the addition gives {calc}.", f"{r} - {b}", Fraction(a * x))
        lhs = (a, b)
    else:
        b = rng.randint(1, a * x - 1)
        r = a * x - b
        q = f"I think of a number, multiply it by {a} and subtract {b}. The result is {r}. What number did I think of?"
        undo = Step("Undoing the subtraction gives {calc}.", f"{r} + {b}", Fraction(a * x))
        lhs = (a, -b)
    steps = [
        undo,
        Step(f"Dividing by {a} gives the number: {{calc}}.", f"{a * x} / {a}", Fraction(x)),
    ]
    return linear_problem(4, "number_puzzle", q, lhs, (0, r), steps=steps, word=True)


def _term(coef: int, var: str, first: bool) -> str:
    """One signed term `coef*var` of a LaTeX linear expression."""
    mag = "" if abs(coef) == 1 else str(abs(coef))
    if first:
        return f"{'-' if coef < 0 else ''}{mag}{var}"
    return f" {'-' if coef < 0 else '+'} {mag}{var}"


@level(4)
def system(rng: random.Random) -> MathProblem:
    """A 2x2 linear system with integer solution; ask for x, y or x + y."""
    while True:
        a1, b1, a2, b2 = (_nonzero(rng, -5, 5) for _ in range(4))
        if a1 * b2 - a2 * b1:
            break
    x, y = rng.randint(-9, 9), rng.randint(-9, 9)
    c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y
    name, target = rng.choice([("x", [1, 0]), ("y", [0, 1]), ("x + y", [1, 1])])
    e1 = _term(a1, "x", True) + _term(b1, "y", False)
    e2 = _term(a2, "x", True) + _term(b2, "y", False)
    q = f"Solve the system ${e1} = {c1}$ and ${e2} = {c2}$. What is the value of ${name}$?"
    steps = [
        Step(
            f"Multiply the first equation by ${a2}$ and the second by ${a1}$, then subtract to eliminate $x$: "
            f"${b1 * a2 - b2 * a1}y = {c1 * a2 - c2 * a1}$, so $y = {y}$."
        ),
        Step(f"Substitute into the first equation: ${a1}x = {c1} - ({b1})({y}) = {a1 * x}$, so $x = {x}$."),
    ]
    if name == "x + y":
        steps.append(Step(f"Therefore $x + y = {x} + ({y}) = {x + y}$."))
    return system_problem(4, "system", q, [[a1, b1, c1], [a2, b2, c2]], target, steps, word=False)


@level(4)
def tickets(rng: random.Random) -> MathProblem:
    """Adult and child tickets: a word problem solved as a 2x2 system."""
    adults, kids = rng.randint(5, 60), rng.randint(5, 60)
    pc = rng.randint(3, 12)
    pa = rng.randint(pc + 1, pc + 10)
    n, total = adults + kids, pa * adults + pc * kids
    venue = rng.choice(VENUES)
    ask_adults = rng.random() < 0.5
    who = "adult" if ask_adults else "child"
    q = (
        f"A {venue} sold {n} tickets for a total of ${total}. Adult tickets cost ${pa} and child tickets cost "
        f"${pc}. How many {who} tickets were sold?"
    )
    base, other = (pc, "child") if ask_adults else (pa, "adult")
    extra = abs(total - n * base)
    steps = [
        Step(f"If all {n} tickets were {other} tickets, they would bring in {{calc}} dollars.", f"{n} * {base}", Fraction(n * base)),
        Step("The difference from the real total is {calc} dollars." if ask_adults else "That is {calc} dollars more than the real total.",
             f"{total} - {n * base}" if ask_adults else f"{n * base} - {total}", Fraction(extra)),
        Step(f"Each {who} ticket changes the total by {{calc}} dollars.", f"{pa} - {pc}", Fraction(pa - pc)),
        Step(f"So the number of {who} tickets is {{calc}}.", f"{extra} / {pa - pc}", Fraction(adults if ask_adults else kids)),
    ]  # fmt: skip
    target = [1, 0] if ask_adults else [0, 1]
    return system_problem(4, "tickets", q, [[1, 1, n], [pa, pc, total]], target, steps, word=True)


@level(4)
def sum_difference(rng: random.Random) -> MathProblem:
    """Two numbers from their sum and difference."""
    small = rng.randint(1, 60)
    large = small + rng.randint(1, 40)
    s, d = large + small, large - small
    ask_large = rng.random() < 0.5
    q = f"The sum of two numbers is {s} and their difference is {d}. What is the {'larger' if ask_large else 'smaller'} number?"
    if ask_large:
        steps = [Step("Adding the sum and the difference gives twice the larger number: {calc}.", f"{s} + {d}", Fraction(2 * large)),
                 Step("The larger number is {calc}.", f"{2 * large} / 2", Fraction(large))]  # fmt: skip
    else:
        steps = [Step("Subtracting the difference from the sum gives twice the smaller number: {calc}.", f"{s} - {d}", Fraction(2 * small)),
                 Step("The smaller number is {calc}.", f"{2 * small} / 2", Fraction(small))]  # fmt: skip
    return system_problem(
        4, "sum_difference", q, [[1, 1, s], [1, -1, d]], [1, 0] if ask_large else [0, 1], steps, word=True
    )


# -------------------------------------------------------------------------------- level 5
def _proper(rng: random.Random) -> Fraction:
    """A random non-integer fraction with small numerator and denominator."""
    while True:
        f = Fraction(rng.randint(1, 11), rng.randint(2, 9))
        if f.denominator > 1:
            return f


@level(5)
def frac_sum(rng: random.Random) -> MathProblem:
    """Solve x/a + B = D with fractions."""
    a, b_, d_ = rng.randint(2, 9), _proper(rng), _proper(rng)
    if rng.random() < 0.5:
        b_ = -b_
    x = a * (d_ - b_)
    sign = "+" if b_ > 0 else "-"
    q = f"Solve for $x$: $\\frac{{x}}{{{a}}} {sign} {fmt_tex(abs(b_))} = {fmt_tex(d_)}$."
    move = f"Subtract ${fmt_tex(b_)}$ from" if b_ > 0 else f"Add ${fmt_tex(-b_)}$ to"
    steps = [
        Step(f"{move} both sides: $\\frac{{x}}{{{a}}} = {fmt_tex(d_ - b_)}$."),
        Step(f"Multiply both sides by ${a}$: $x = {fmt_tex(x)}$."),
    ]
    return linear_problem(5, "frac_sum", q, (Fraction(1, a), b_), (0, d_), steps=steps)


@level(5)
def cross_multiply(rng: random.Random) -> MathProblem:
    """Solve (p x + q)/r = (s x + t)/u by cross-multiplying."""
    while True:
        p, s = _nonzero(rng, -6, 6), _nonzero(rng, -6, 6)
        r, u = rng.sample(range(2, 10), 2)
        q, t = rng.randint(-9, 9), rng.randint(-9, 9)
        if u * p != r * s:
            break
    lhs = lin_tex(Fraction(p), Fraction(q))
    rhs = lin_tex(Fraction(s), Fraction(t))
    question = f"Solve for $x$: $\\frac{{{lhs}}}{{{r}}} = \\frac{{{rhs}}}{{{u}}}$."
    steps = [
        Step(f"Multiply both sides by ${r * u}$: ${u}({lhs}) = {r}({rhs})$."),
        Step(
            f"Expand: ${lin_tex(Fraction(u * p), Fraction(u * q))} = {lin_tex(Fraction(r * s), Fraction(r * t))}$."
        ),
        *linear_steps(Fraction(u * p), Fraction(u * q), Fraction(r * s), Fraction(r * t)),
    ]
    return linear_problem(
        5,
        "cross_multiply",
        question,
        (Fraction(p, r), Fraction(q, r)),
        (Fraction(s, u), Fraction(t, u)),
        steps=steps,
    )


@level(5)
def scaled(rng: random.Random) -> MathProblem:
    """Solve F (x - c) = D with fractions F and D."""
    f, c, d_ = _proper(rng), rng.randint(1, 9), _proper(rng)
    x = c + d_ / f
    q = f"What value of $x$ satisfies ${fmt_tex(f)}(x - {c}) = {fmt_tex(d_)}$?"
    steps = [
        Step(f"Multiply both sides by ${fmt_tex(1 / f)}$: $x - {c} = {fmt_tex(d_ / f)}$."),
        Step(f"Add ${c}$ to both sides: $x = {fmt_tex(x)}$."),
    ]
    return linear_problem(5, "scaled", q, (f, -f * c), (0, d_), steps=steps)


@level(5)
def fraction_words(rng: random.Random) -> MathProblem:
    """'If you add G to F of a number you get H': a fraction equation in words."""
    f, g, h = _proper(rng), _proper(rng), _proper(rng)
    q = (
        f"If you add {fmt_plain(g)} to {fmt_plain(f)} of a number, you get {fmt_plain(h)}. "
        f"What is the number? Express your answer as a fraction in lowest terms if needed."
    )
    pre = [Step(f"Let the number be $x$. Then ${lin_tex(f, g)} = {fmt_tex(h)}$.")]
    return linear_problem(
        5, "fraction_words", q, (f, g), (0, h), steps=pre + linear_steps(f, g, Fraction(0), h)
    )
