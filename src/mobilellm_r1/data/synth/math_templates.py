"""Word-problem templates for levels 1-3, registered in `_mathcore.GENERATORS`.

Each generator takes a `random.Random` and returns a `MathProblem` whose numbers are chosen so
that every intermediate and final value of levels 1-3 is a positive integer.
"""

from __future__ import annotations

import random
from fractions import Fraction
from math import gcd

from ._mathcore import MathProblem, Step, expr_problem, level
from ._util import person, two_people

ITEMS = (
    "marbles", "stickers", "apples", "books", "pencils", "seashells", "trading cards", "stamps",
    "coins", "cookies", "flowers", "toy cars", "beads", "comic books", "postcards", "buttons",
)  # fmt: skip
GAIN_VERBS = (("finds", "found"), ("buys", "bought"), ("wins", "won"), ("collects", "collected"))
ACTIVITIES = (("read", "read", "pages"), ("ran", "run", "laps"), ("scored", "score", "points"),
              ("picked", "pick", "strawberries"), ("wrote", "write", "lines of code"),
              ("swam", "swim", "lengths"))  # fmt: skip
FOODS = ("muffins", "cookies", "rolls", "cupcakes", "bagels", "dumplings")
GOODS = (("notebooks", 2, 9), ("pens", 1, 5), ("sandwiches", 4, 12), ("tickets", 5, 15),
         ("plants", 3, 14), ("T-shirts", 6, 15))  # fmt: skip
RATES = (("A train", "travels", "travel", "km", "hours"), ("A printer", "prints", "print", "pages", "minutes"),
         ("A pump", "moves", "move", "liters", "minutes"), ("A cyclist", "rides", "ride", "km", "hours"),
         ("A machine", "fills", "fill", "bottles", "minutes"))  # fmt: skip
FRACTION_WORDS = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth"}
VENUES = ("museum", "theater", "zoo", "school play", "concert hall", "aquarium")


def _pct_unit(pct: int) -> int:
    """The smallest whole number whose `pct` percent is a whole number."""
    return 100 // gcd(pct, 100)


# -------------------------------------------------------------------------------- level 1
@level(1)
def gain(rng: random.Random) -> MathProblem:
    """Someone gets more items."""
    (n, p, _), item = person(rng), rng.choice(ITEMS)
    a, b = rng.randint(3, 80), rng.randint(2, 50)
    now, past = rng.choice(GAIN_VERBS)
    q = rng.choice([
        f"{n} has {a} {item}. {p.capitalize()} {now} {b} more. How many {item} does {n} have now?",
        f"{n} had {a} {item} in a box and then {past} {b} more. How many {item} are in the box now?",
        f"There are {a} {item} on a shelf. {n} puts {b} more {item} on the shelf. How many {item} are on the shelf now?",
    ])  # fmt: skip
    return expr_problem(
        1, "gain", q, [Step(f"Now there are {{calc}} {item}.", f"{a} + {b}", Fraction(a + b))], f"{a} + {b}"
    )


@level(1)
def loss(rng: random.Random) -> MathProblem:
    """Someone gives away or loses items."""
    (n, p, _), (m, _, _) = two_people(rng)
    item = rng.choice(ITEMS)
    a = rng.randint(10, 90)
    b = rng.randint(1, a - 1)
    q = rng.choice([
        f"{n} had {a} {item} and gave {b} of them to {m}. How many {item} does {n} have left?",
        f"A jar holds {a} {item}. {n} takes out {b}. How many {item} remain in the jar?",
        f"{n} had {a} {item}. On the way home {p} lost {b} of them. How many {item} does {n} have now?",
    ])  # fmt: skip
    return expr_problem(
        1, "loss", q, [Step(f"There are {{calc}} {item} left.", f"{a} - {b}", Fraction(a - b))], f"{a} - {b}"
    )


@level(1)
def combine(rng: random.Random) -> MathProblem:
    """Two people's items together."""
    (n, _, _), (m, _, _) = two_people(rng)
    item = rng.choice(ITEMS)
    a, b = rng.randint(5, 99), rng.randint(5, 99)
    q = rng.choice([
        f"{n} collected {a} {item} and {m} collected {b} {item}. How many {item} did they collect altogether?",
        f"{n} has {a} {item} and {m} has {b}. How many {item} do they have in total?",
    ])  # fmt: skip
    return expr_problem(
        1,
        "combine",
        q,
        [Step(f"Together they have {{calc}} {item}.", f"{a} + {b}", Fraction(a + b))],
        f"{a} + {b}",
    )


@level(1)
def compare(rng: random.Random) -> MathProblem:
    """One person has more or fewer than another."""
    (n, _, _), (m, _, _) = two_people(rng)
    item = rng.choice(ITEMS)
    a = rng.randint(10, 90)
    b = rng.randint(1, a - 1)
    if rng.random() < 0.5:
        q = f"{n} has {a} {item}. {m} has {b} more {item} than {n}. How many {item} does {m} have?"
        expr, val = f"{a} + {b}", a + b
    else:
        q = f"{n} has {a} {item}. {m} has {b} fewer {item} than {n}. How many {item} does {m} have?"
        expr, val = f"{a} - {b}", a - b
    return expr_problem(1, "compare", q, [Step(f"{m} has {{calc}} {item}.", expr, Fraction(val))], expr)


@level(1)
def difference(rng: random.Random) -> MathProblem:
    """How many more on one day than another."""
    (n, p, _), (past, base, unit) = person(rng), rng.choice(ACTIVITIES)
    a = rng.randint(12, 95)
    b = rng.randint(2, a - 1)
    q = f"{n} {past} {a} {unit} on Monday and {b} {unit} on Tuesday. How many more {unit} did {p} {base} on Monday than on Tuesday?"
    steps = [Step(f"The difference is {{calc}} {unit}.", f"{a} - {b}", Fraction(a - b))]
    return expr_problem(1, "difference", q, steps, f"{a} - {b}")


# -------------------------------------------------------------------------------- level 2
@level(2)
def packs_plus(rng: random.Random) -> MathProblem:
    """Packs of items plus some already owned."""
    (n, p, _), item = person(rng), rng.choice(ITEMS)
    packs, k, c = rng.randint(2, 9), rng.randint(3, 12), rng.randint(1, 30)
    q = (
        f"{n} buys {packs} packs of {item} with {k} {item} in each pack. {p.capitalize()} already had "
        f"{c} {item}. How many {item} does {n} have now?"
    )
    steps = [
        Step(f"The packs hold {{calc}} {item}.", f"{packs} * {k}", Fraction(packs * k)),
        Step(f"In total {n} has {{calc}} {item}.", f"{packs * k} + {c}", Fraction(packs * k + c)),
    ]
    return expr_problem(2, "packs_plus", q, steps, f"{packs} * {k} + {c}")


@level(2)
def trays_sold(rng: random.Random) -> MathProblem:
    """A baker makes trays of food and sells some."""
    (n, p, _), food = person(rng), rng.choice(FOODS)
    trays, k = rng.randint(2, 9), rng.randint(4, 12)
    sold = rng.randint(1, trays * k - 1)
    q = (
        f"{n} bakes {trays} trays of {food} with {k} {food} on each tray. {p.capitalize()} sells {sold} "
        f"of them at the market. How many {food} are left?"
    )
    steps = [
        Step(f"{n} bakes {{calc}} {food}.", f"{trays} * {k}", Fraction(trays * k)),
        Step(
            f"After selling, {{calc}} {food} are left.", f"{trays * k} - {sold}", Fraction(trays * k - sold)
        ),
    ]
    return expr_problem(2, "trays_sold", q, steps, f"{trays} * {k} - {sold}")


@level(2)
def change(rng: random.Random) -> MathProblem:
    """Change from a bill after buying several items."""
    (n, p, _), (goods, lo, hi) = person(rng), rng.choice(GOODS)
    qty, unit = rng.randint(2, 8), rng.randint(lo, hi)
    total = qty * unit
    bill = rng.choice([b for b in (20, 50, 100, 200) if b > total])
    q = f"{n} buys {qty} {goods} that cost ${unit} each. {p.capitalize()} pays with a ${bill} bill. How much change, in dollars, does {n} get?"
    steps = [
        Step(f"The {goods} cost {{calc}} dollars.", f"{qty} * {unit}", Fraction(total)),
        Step("The change is {calc} dollars.", f"{bill} - {total}", Fraction(bill - total)),
    ]
    return expr_problem(2, "change", q, steps, f"{bill} - {qty} * {unit}")


@level(2)
def savings(rng: random.Random) -> MathProblem:
    """Weekly savings minus a purchase."""
    (n, p, _) = person(rng)
    a, w = rng.randint(5, 50), rng.randint(2, 12)
    spent = rng.randint(1, a * w - 1)
    thing = rng.choice(["bike helmet", "board game", "pair of shoes", "guitar", "telescope", "backpack"])
    q = f"{n} saves ${a} every week for {w} weeks. Then {p} spends ${spent} on a {thing}. How many dollars does {n} have left?"
    steps = [
        Step(f"{n} saves {{calc}} dollars.", f"{a} * {w}", Fraction(a * w)),
        Step("After the purchase, {calc} dollars are left.", f"{a * w} - {spent}", Fraction(a * w - spent)),
    ]
    return expr_problem(2, "savings", q, steps, f"{a} * {w} - {spent}")


@level(2)
def two_items(rng: random.Random) -> MathProblem:
    """Total cost of two kinds of goods."""
    (n, _, _) = person(rng)
    (g1, lo1, hi1), (g2, lo2, hi2) = rng.sample(GOODS, 2)
    q1, q2 = rng.randint(2, 9), rng.randint(2, 9)
    p1, p2 = rng.randint(lo1, hi1), rng.randint(lo2, hi2)
    q = f"{n} buys {q1} {g1} at ${p1} each and {q2} {g2} at ${p2} each. How many dollars does {n} spend in total?"
    steps = [
        Step(f"The {g1} cost {{calc}} dollars.", f"{q1} * {p1}", Fraction(q1 * p1)),
        Step(f"The {g2} cost {{calc}} dollars.", f"{q2} * {p2}", Fraction(q2 * p2)),
        Step("In total that is {calc} dollars.", f"{q1 * p1} + {q2 * p2}", Fraction(q1 * p1 + q2 * p2)),
    ]
    return expr_problem(2, "two_items", q, steps, f"{q1} * {p1} + {q2} * {p2}")


# -------------------------------------------------------------------------------- level 3
@level(3)
def percent_then_fraction(rng: random.Random) -> MathProblem:
    """A percentage sold, then a fraction of the rest."""
    item = rng.choice(ITEMS)
    pct, k = rng.choice([10, 20, 25, 30, 40, 50, 60, 75]), rng.choice([2, 3, 4, 5])
    total = _pct_unit(pct) * k * rng.randint(1, 12)
    sold1 = total * pct // 100
    rest = total - sold1
    sold2 = rest // k
    q = (
        f"A store has {total} {item}. It sells {pct}% of them on Monday and {FRACTION_WORDS[k]} of the "
        f"remaining {item} on Tuesday. How many {item} are left?"
    )
    steps = [
        Step(f"On Monday the store sells {{calc}} {item}.", f"{total} * {pct} / 100", Fraction(sold1)),
        Step(f"That leaves {{calc}} {item}.", f"{total} - {sold1}", Fraction(rest)),
        Step(f"On Tuesday it sells {{calc}} {item}.", f"{rest} / {k}", Fraction(sold2)),
        Step(f"So {{calc}} {item} are left.", f"{rest} - {sold2}", Fraction(rest - sold2)),
    ]
    expr = f"{total} - {total} * {pct} / 100 - ({total} - {total} * {pct} / 100) / {k}"
    return expr_problem(3, "percent_then_fraction", q, steps, expr)


@level(3)
def share_equally(rng: random.Random) -> MathProblem:
    """Items pooled and shared equally."""
    (n, p, _), item = person(rng), rng.choice(ITEMS)
    while True:
        friends, each = rng.randint(2, 8), rng.randint(2, 20)
        packs, k = rng.randint(2, 6), rng.randint(2, 10)
        have = friends * each - packs * k
        if have >= 1:
            break
    total = friends * each
    q = (
        f"{n} has {have} {item}. {p.capitalize()} buys {packs} packs with {k} {item} in each. Then {p} shares "
        f"all of the {item} equally among {friends} friends. How many {item} does each friend get?"
    )
    steps = [
        Step(f"The packs contain {{calc}} {item}.", f"{packs} * {k}", Fraction(packs * k)),
        Step(f"{n} has {{calc}} {item} in total.", f"{have} + {packs * k}", Fraction(total)),
        Step(f"Each friend gets {{calc}} {item}.", f"{total} / {friends}", Fraction(each)),
    ]
    return expr_problem(3, "share_equally", q, steps, f"({have} + {packs} * {k}) / {friends}")


@level(3)
def discount(rng: random.Random) -> MathProblem:
    """Several items bought at a percentage discount."""
    (n, _, _) = person(rng)
    pct = rng.choice([10, 20, 25, 30, 40, 50])
    price = _pct_unit(pct) * rng.randint(1, 30)
    qty = rng.randint(2, 5)
    off = price * pct // 100
    thing = rng.choice(["jacket", "lamp", "chair", "video game", "watch", "rug"])
    q = f"A {thing} normally costs ${price}. During a sale everything is {pct}% off. {n} buys {qty} of them. How many dollars does {n} pay?"
    steps = [
        Step("The discount on one is {calc} dollars.", f"{price} * {pct} / 100", Fraction(off)),
        Step("The sale price is {calc} dollars.", f"{price} - {off}", Fraction(price - off)),
        Step(
            f"For {qty} of them {n} pays {{calc}} dollars.",
            f"{qty} * {price - off}",
            Fraction(qty * (price - off)),
        ),
    ]
    return expr_problem(3, "discount", q, steps, f"{qty} * ({price} - {price} * {pct} / 100)")


@level(3)
def average(rng: random.Random) -> MathProblem:
    """The mean of a few test scores (a whole number)."""
    (n, _, poss) = person(rng)
    count = rng.randint(3, 5)
    while True:
        scores = [rng.randint(50, 100) for _ in range(count)]
        if sum(scores) % count == 0:
            break
    listed = ", ".join(map(str, scores[:-1])) + f" and {scores[-1]}"
    q = f"{n} scored {listed} points on {count} tests. What is {poss} average score?"
    total = " + ".join(map(str, scores))
    steps = [
        Step("The total is {calc} points.", total, Fraction(sum(scores))),
        Step("The average is {calc} points.", f"{sum(scores)} / {count}", Fraction(sum(scores) // count)),
    ]
    return expr_problem(3, "average", q, steps, f"({total}) / {count}")


@level(3)
def rate(rng: random.Random) -> MathProblem:
    """Constant rate: scale a quantity to a new time."""
    subject, verb, base, unit, time = rng.choice(RATES)
    hours, speed, hours2 = rng.randint(2, 8), rng.randint(3, 90), rng.randint(2, 10)
    dist = speed * hours
    q = f"{subject} {verb} {dist} {unit} in {hours} {time}. At the same rate, how many {unit} does it {base} in {hours2} {time}?"
    steps = [
        Step(f"Its rate is {{calc}} {unit} per {time[:-1]}.", f"{dist} / {hours}", Fraction(speed)),
        Step(f"In {hours2} {time} that is {{calc}} {unit}.", f"{speed} * {hours2}", Fraction(speed * hours2)),
    ]
    return expr_problem(3, "rate", q, steps, f"{dist} / {hours} * {hours2}")


@level(3)
def growth(rng: random.Random) -> MathProblem:
    """Percentage growth followed by a decrease."""
    pct = rng.choice([10, 20, 25, 50])
    pop = _pct_unit(pct) * rng.randint(10, 400)
    inc = pop * pct // 100
    moved = rng.randint(1, pop + inc - 1)
    place = rng.choice(["A town", "A village", "A school", "A club"])
    people = {"A town": "residents", "A village": "residents", "A school": "students", "A club": "members"}[
        place
    ]
    q = f"{place} had {pop} {people}. The number grew by {pct}%, and then {moved} {people} left. How many {people} are there now?"
    steps = [
        Step(f"The increase is {{calc}} {people}.", f"{pop} * {pct} / 100", Fraction(inc)),
        Step(f"After growing there are {{calc}} {people}.", f"{pop} + {inc}", Fraction(pop + inc)),
        Step(
            f"After {moved} left there are {{calc}} {people}.",
            f"{pop + inc} - {moved}",
            Fraction(pop + inc - moved),
        ),
    ]
    return expr_problem(3, "growth", q, steps, f"{pop} + {pop} * {pct} / 100 - {moved}")
