"""Code templates over integers and lists: gcd, primes, FizzBuzz variants, running sums and more."""

from __future__ import annotations

import math
import random
from itertools import accumulate

from ._codecore import CodeTask, build, int_list, template

LIST_ARGS = ("nums", "values", "xs")
FIZZ_WORDS = (("Fizz", "Buzz"), ("Foo", "Bar"), ("Ping", "Pong"), ("Tick", "Tock"), ("Hip", "Hop"))


@template
def running_max(rng: random.Random) -> CodeTask:
    """Prefix maxima."""
    return build(
        rng, "running_max", ("running_max", "prefix_maximum", "cumulative_max"), [(LIST_ARGS, "list[int]")], "list[int]",
        "Return a list whose i-th element is the largest value among the first i + 1 elements of {a0}.",
        ["    result = []\n    best = None\n    for x in {a0}:\n        if best is None or x > best:\n            best = x\n        result.append(best)\n    return result\n",
         "    result: list[int] = []\n    for x in {a0}:\n        result.append(x if not result else max(result[-1], x))\n    return result\n"],
        lambda xs: list(accumulate(xs, max)), lambda r: (int_list(r),),
    )  # fmt: skip


@template
def fizzbuzz(rng: random.Random) -> CodeTask:
    """FizzBuzz with configurable divisors and words."""
    x, y = rng.choice([(3, 5), (2, 7), (3, 4), (4, 6), (2, 5), (3, 7)])
    wa, wb = rng.choice(FIZZ_WORDS)
    summary = (
        f"Return a list of strings for the numbers 1 to {{a0}}: '{wa}{wb}' for multiples of both {x} and {y}, "
        f"'{wa}' for other multiples of {x}, '{wb}' for other multiples of {y}, and the number itself otherwise."
    )
    return build(
        rng, "fizzbuzz", ("fizzbuzz", f"{wa.lower()}_{wb.lower()}", "play_fizzbuzz"), [(("n", "limit", "count"), "int")], "list[str]",
        summary,
        [f"    out = []\n    for i in range(1, {{a0}} + 1):\n        if i % {x} == 0 and i % {y} == 0:\n            out.append({wa + wb!r})\n        elif i % {x} == 0:\n            out.append({wa!r})\n        elif i % {y} == 0:\n            out.append({wb!r})\n        else:\n            out.append(str(i))\n    return out\n",
         f"    out = []\n    for i in range(1, {{a0}} + 1):\n        word = ''\n        if i % {x} == 0:\n            word += {wa!r}\n        if i % {y} == 0:\n            word += {wb!r}\n        out.append(word or str(i))\n    return out\n"],
        lambda n: [(wa if i % x == 0 else "") + (wb if i % y == 0 else "") or str(i) for i in range(1, n + 1)],
        lambda r: (r.randint(0, 16),), constants=(x, y, wa, wb),
    )  # fmt: skip


@template
def gcd(rng: random.Random) -> CodeTask:
    """Greatest common divisor."""
    return build(
        rng, "gcd", ("gcd", "greatest_common_divisor", "highest_common_factor"), [(("a", "x", "m"), "int"), (("b", "y", "k"), "int")], "int",
        "Return the greatest common divisor of the non-negative integers {a0} and {a1} (not both zero).",
        ["    while {a1}:\n        {a0}, {a1} = {a1}, {a0} % {a1}\n    return {a0}\n",
         "    if {a1} == 0:\n        return {a0}\n    return {name}({a1}, {a0} % {a1})\n"],
        math.gcd, lambda r: (r.randint(1, 120), r.randint(0, 120)),
    )  # fmt: skip


@template
def dedupe(rng: random.Random) -> CodeTask:
    """Remove duplicates keeping first occurrences."""
    return build(
        rng, "dedupe", ("dedupe", "unique_in_order", "remove_duplicates"), [(("items", *LIST_ARGS), "list[int]")], "list[int]",
        "Return the elements of {a0} without duplicates, keeping the first occurrence of each value in its original order.",
        ["    seen = set()\n    out = []\n    for x in {a0}:\n        if x not in seen:\n            seen.add(x)\n            out.append(x)\n    return out\n",
         "    return list(dict.fromkeys({a0}))\n"],
        lambda xs: list(dict.fromkeys(xs)), lambda r: (int_list(r, 0, 6, 9),),
    )  # fmt: skip


@template
def digit_sum(rng: random.Random) -> CodeTask:
    """Sum of decimal digits."""
    return build(
        rng, "digit_sum", ("digit_sum", "sum_of_digits", "add_digits"), [(("n", "number", "value"), "int")], "int",
        "Return the sum of the decimal digits of {a0}; the sign of a negative number is ignored.",
        ["    return sum(int(d) for d in str(abs({a0})))\n",
         "    {a0} = abs({a0})\n    total = 0\n    while {a0}:\n        total += {a0} % 10\n        {a0} //= 10\n    return total\n"],
        lambda n: sum(int(d) for d in str(abs(n))), lambda r: (r.randint(-9999, 99999),),
    )  # fmt: skip


@template
def sum_multiples(rng: random.Random) -> CodeTask:
    """Sum of numbers below a limit divisible by one of two constants."""
    k1, k2 = rng.sample([2, 3, 4, 5, 7], 2)
    return build(
        rng, "sum_multiples", ("sum_of_multiples", "multiples_total", f"sum_multiples_of_{k1}_or_{k2}"), [(("limit", "n", "bound"), "int")], "int",
        f"Return the sum of all non-negative integers below {{a0}} that are divisible by {k1} or by {k2}.",
        [f"    return sum(i for i in range({{a0}}) if i % {k1} == 0 or i % {k2} == 0)\n",
         f"    total = 0\n    for i in range({{a0}}):\n        if i % {k1} == 0 or i % {k2} == 0:\n            total += i\n    return total\n"],
        lambda n: sum(i for i in range(n) if i % k1 == 0 or i % k2 == 0), lambda r: (r.randint(0, 60),), constants=(k1, k2),
    )  # fmt: skip


@template
def prefix_sums(rng: random.Random) -> CodeTask:
    """Running totals."""
    return build(
        rng, "prefix_sums", ("prefix_sums", "running_total", "cumulative_sum"), [(LIST_ARGS, "list[int]")], "list[int]",
        "Return the running totals of {a0}: the i-th output is the sum of the first i + 1 inputs.",
        ["    out = []\n    total = 0\n    for x in {a0}:\n        total += x\n        out.append(total)\n    return out\n",
         "    from itertools import accumulate\n\n    return list(accumulate({a0}))\n"],
        lambda xs: list(accumulate(xs)), lambda r: (int_list(r),),
    )  # fmt: skip


@template
def second_largest(rng: random.Random) -> CodeTask:
    """Second largest distinct value or None."""
    return build(
        rng, "second_largest", ("second_largest", "runner_up", "second_max"), [(LIST_ARGS, "list[int]")], "int | None",
        "Return the second largest distinct value in {a0}, or None if it has fewer than two distinct values.",
        ["    distinct = sorted(set({a0}), reverse=True)\n    return distinct[1] if len(distinct) > 1 else None\n",
         "    top = second = None\n    for x in set({a0}):\n        if top is None or x > top:\n            top, second = x, top\n        elif second is None or x > second:\n            second = x\n    return second\n"],
        lambda xs: sorted(set(xs))[-2] if len(set(xs)) > 1 else None, lambda r: (int_list(r, -5, 9, 6),),
    )  # fmt: skip


@template
def chunk(rng: random.Random) -> CodeTask:
    """Split a list into fixed-size chunks."""
    return build(
        rng, "chunk", ("chunk", "split_into_chunks", "batched_list"), [(("items", "nums", "values"), "list[int]"), (("size", "n", "width"), "int")],
        "list[list[int]]",
        "Split {a0} into consecutive chunks of length {a1} (a positive integer); the last chunk may be shorter.",
        ["    return [{a0}[i : i + {a1}] for i in range(0, len({a0}), {a1})]\n",
         "    out = []\n    for start in range(0, len({a0}), {a1}):\n        out.append({a0}[start : start + {a1}])\n    return out\n"],
        lambda xs, n: [xs[i : i + n] for i in range(0, len(xs), n)], lambda r: (int_list(r, 0, 9, 9), r.randint(1, 4)),
    )  # fmt: skip


@template
def rotate_left(rng: random.Random) -> CodeTask:
    """Rotate a list to the left."""
    return build(
        rng, "rotate_left", ("rotate_left", "shift_left", "left_rotation"), [(("items", "nums", "values"), "list[int]"), (("k", "steps", "by"), "int")],
        "list[int]",
        "Rotate {a0} to the left by {a1} positions ({a1} >= 0 may exceed the length) and return the new list.",
        ["    if not {a0}:\n        return []\n    {a1} %= len({a0})\n    return {a0}[{a1}:] + {a0}[:{a1}]\n",
         "    out = list({a0})\n    for _ in range({a1} % len(out) if out else 0):\n        out.append(out.pop(0))\n    return out\n"],
        lambda xs, k: xs[k % len(xs):] + xs[: k % len(xs)] if xs else [], lambda r: (int_list(r, 0, 9, 6), r.randint(0, 9)),
    )  # fmt: skip


@template
def flatten(rng: random.Random) -> CodeTask:
    """Flatten one level of nesting."""
    return build(
        rng, "flatten", ("flatten", "flatten_once", "concat_lists"), [(("lists", "nested", "groups"), "list[list[int]]")], "list[int]",
        "Concatenate the inner lists of {a0}, in order, into one flat list.",
        ["    return [x for sub in {a0} for x in sub]\n",
         "    out = []\n    for sub in {a0}:\n        out.extend(sub)\n    return out\n"],
        lambda ls: [x for sub in ls for x in sub], lambda r: ([int_list(r, 0, 9, 3) for _ in range(r.randint(0, 4))],),
    )  # fmt: skip


@template
def is_prime(rng: random.Random) -> CodeTask:
    """Primality by trial division."""
    return build(
        rng, "is_prime", ("is_prime", "check_prime", "prime_test"), [(("n", "number", "value"), "int")], "bool",
        "Return True if {a0} is a prime number and False otherwise.",
        ["    if {a0} < 2:\n        return False\n    i = 2\n    while i * i <= {a0}:\n        if {a0} % i == 0:\n            return False\n        i += 1\n    return True\n",
         "    return {a0} > 1 and all({a0} % d for d in range(2, int({a0} ** 0.5) + 1))\n"],
        lambda n: n > 1 and all(n % d for d in range(2, n)), lambda r: (r.randint(-3, 120),),
    )  # fmt: skip


@template
def sequence_term(rng: random.Random) -> CodeTask:
    """N-th term of a Fibonacci-like sequence with chosen start values."""
    s0, s1 = rng.choice([(0, 1), (2, 1), (1, 1), (3, 2), (1, 4)])
    return build(
        rng, "sequence_term", ("fibonacci", "nth_term", "fib_like"), [(("n", "index", "k"), "int")], "int",
        f"Return term number {{a0}} (counting from 0) of the sequence that starts {s0}, {s1} and in which every later term is the sum of the two terms before it.",
        [f"    a, b = {s0}, {s1}\n    for _ in range({{a0}}):\n        a, b = b, a + b\n    return a\n",
         f"    terms = [{s0}, {s1}]\n    while len(terms) <= {{a0}}:\n        terms.append(terms[-1] + terms[-2])\n    return terms[{{a0}}]\n"],
        lambda n: _fib(s0, s1, n), lambda r: (r.randint(0, 20),), constants=(s0, s1),
    )  # fmt: skip


def _fib(s0: int, s1: int, n: int) -> int:
    """Reference Fibonacci-like term."""
    terms = [s0, s1]
    for _ in range(n):
        terms = [terms[1], terms[0] + terms[1]]
    return terms[0]


@template
def clamp_all(rng: random.Random) -> CodeTask:
    """Clamp every value into a fixed range."""
    lo = rng.randint(-10, 5)
    hi = lo + rng.randint(1, 15)
    return build(
        rng, "clamp_all", ("clamp_all", "clip_values", "bound_values"), [(LIST_ARGS, "list[int]")], "list[int]",
        f"Return a copy of {{a0}} in which values below {lo} are replaced by {lo} and values above {hi} by {hi}.",
        [f"    return [min(max(x, {lo}), {hi}) for x in {{a0}}]\n",
         f"    out = []\n    for x in {{a0}}:\n        if x < {lo}:\n            x = {lo}\n        elif x > {hi}:\n            x = {hi}\n        out.append(x)\n    return out\n"],
        lambda xs: [min(max(x, lo), hi) for x in xs], lambda r: (int_list(r),), constants=(lo, hi),
    )  # fmt: skip


@template
def keep_multiples(rng: random.Random) -> CodeTask:
    """Filter the multiples of a constant."""
    k = rng.randint(2, 7)
    return build(
        rng, "keep_multiples", ("keep_multiples", "multiples_only", f"multiples_of_{k}"), [(LIST_ARGS, "list[int]")], "list[int]",
        f"Return the elements of {{a0}} that are divisible by {k}, in their original order.",
        [f"    return [x for x in {{a0}} if x % {k} == 0]\n",
         f"    out = []\n    for x in {{a0}}:\n        if x % {k} == 0:\n            out.append(x)\n    return out\n"],
        lambda xs: [x for x in xs if x % k == 0], lambda r: (int_list(r, -30, 30),), constants=(k,),
    )  # fmt: skip


@template
def value_range(rng: random.Random) -> CodeTask:
    """Largest minus smallest value."""
    return build(
        rng, "value_range", ("value_range", "spread", "max_minus_min"), [(LIST_ARGS, "list[int]")], "int",
        "Return the difference between the largest and the smallest value of {a0}, or 0 if {a0} is empty.",
        ["    return max({a0}) - min({a0}) if {a0} else 0\n",
         "    if not {a0}:\n        return 0\n    lo = hi = {a0}[0]\n    for x in {a0}:\n        lo = min(lo, x)\n        hi = max(hi, x)\n    return hi - lo\n"],
        lambda xs: max(xs) - min(xs) if xs else 0, lambda r: (int_list(r, -50, 50),),
    )  # fmt: skip


@template
def lcm(rng: random.Random) -> CodeTask:
    """Least common multiple."""
    return build(
        rng, "lcm", ("lcm", "least_common_multiple", "smallest_common_multiple"), [(("a", "x", "m"), "int"), (("b", "y", "k"), "int")], "int",
        "Return the least common multiple of the positive integers {a0} and {a1}.",
        ["    p, q = {a0}, {a1}\n    while q:\n        p, q = q, p % q\n    return {a0} * {a1} // p\n",
         "    best = max({a0}, {a1})\n    while best % {a0} or best % {a1}:\n        best += 1\n    return best\n"],
        lambda a, b: a * b // math.gcd(a, b), lambda r: (r.randint(1, 30), r.randint(1, 30)),
    )  # fmt: skip


@template
def alternating_sum(rng: random.Random) -> CodeTask:
    """Add even positions, subtract odd positions."""
    return build(
        rng, "alternating_sum", ("alternating_sum", "plus_minus_sum", "signed_total"), [(LIST_ARGS, "list[int]")], "int",
        "Return {a0}[0] - {a0}[1] + {a0}[2] - {a0}[3] + ..., i.e. add elements at even positions and subtract elements at odd positions.",
        ["    return sum(x if i % 2 == 0 else -x for i, x in enumerate({a0}))\n",
         "    return sum({a0}[::2]) - sum({a0}[1::2])\n"],
        lambda xs: sum(xs[::2]) - sum(xs[1::2]), lambda r: (int_list(r),),
    )  # fmt: skip
