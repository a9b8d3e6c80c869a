"""Low-quality sources for curation experiments, each record labelled `quality: "low"`.

Kinds (`NOISE_KINDS`): near-duplicate spam ads (`cluster` groups the near-duplicates),
web boilerplate, keyboard-mash gibberish, math with a corrupted boxed answer (`boxed_value`
differs from the true `answer_value`), code whose tests fail (`tests_pass: false`) and texts
with shuffled words.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from . import code, knowledge
from . import math as smath
from ._util import boxed, fmt_plain, fmt_tex, invent_word
from .world import World

NOISE_KINDS = ("spam", "boilerplate", "gibberish", "wrong_math", "broken_code", "shuffled")

ADS = (
    "BUY NOW!!! {product} at {pct}% OFF - limited time only! Click here: {url} Free shipping on all orders!!! Offer ends {day}!",
    "Congratulations! You have been selected to receive a FREE {product}. Claim your prize now at {url} before {day}. Only {n} left!!!",
    "Lose {n} pounds in {m} days with {product}! Doctors hate this one trick. Order today at {url} and save {pct}%!",
    "Earn ${n} per day working from home! No experience needed. Sign up at {url} now! {pct}% of our members succeed!!!",
    "HOT DEAL: {product} for only ${n}.99 (was ${m}9.99)!!! Visit {url} - hurry, sale ends {day}!",
)
PRODUCTS = (
    "SuperSlim Tea",
    "iPhone 99",
    "Miracle Cream",
    "Crypto Course",
    "Gold Watch",
    "Wonder Pills",
    "Smart Ring",
)
DAYS = ("Friday", "Sunday", "midnight", "tomorrow", "this weekend")
BOILERPLATE = (
    "We use cookies to improve your experience. By continuing to browse you agree to our use of cookies. Accept | Decline | Settings",
    "This website uses cookies. Learn more in our Cookie Policy. [Accept all] [Reject all] [Manage preferences]",
    "Home | About Us | Products | Services | Blog | Careers | Contact | Login | Register",
    "Skip to main content. Menu. Search. Sign in. Cart (0)",
    "(c) {year} {company}. All rights reserved. Privacy Policy | Terms of Service | Sitemap",
    "Subscribe to our newsletter! Enter your email address: [ ] [Subscribe]",
    "Share this page: Facebook Twitter LinkedIn Email Print",
    "You are here: Home > Category > Subcategory > Page",
    "Loading... Please enable JavaScript to view this page.",
    "Previous post | Next post | Back to top",
)
KEY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm", "1234567890")


def _spam(rng: random.Random, cluster: int, salt: int) -> str:
    """One near-duplicate of spam cluster `cluster` (fixed base ad, small random edits)."""
    base = random.Random(f"spam-cluster-{salt}-{cluster}")
    fields = {"product": base.choice(PRODUCTS), "pct": base.choice([50, 70, 80, 90]), "day": base.choice(DAYS),
              "url": f"www.{invent_word(base).lower()}-deals.biz", "n": base.randint(5, 500), "m": base.randint(2, 30)}  # fmt: skip
    words = base.choice(ADS).format(**fields).split(" ")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(words))
        edit = rng.randrange(4)
        if edit == 0:
            words[i] = words[i].upper()
        elif edit == 1:
            words[i] += "!"
        elif edit == 2 and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words.insert(i, rng.choice(["FREE", "NOW", "BEST", "!!!", "100%"]))
    return " ".join(words) + rng.choice(["", f" ref={rng.randint(1000, 9999)}", " Unsubscribe."])


def _boilerplate(rng: random.Random) -> str:
    """A few web page boilerplate fragments, one per line."""
    parts = rng.sample(BOILERPLATE, rng.randint(2, 4))
    company = invent_word(rng) + " Inc."
    return "\n".join(p.format(year=rng.randint(2005, 2024), company=company) for p in parts)


def _gibberish(rng: random.Random) -> str:
    """Keyboard mash: runs of neighbouring keys and random characters."""
    tokens = []
    for _ in range(rng.randint(15, 60)):
        row = rng.choice(KEY_ROWS)
        start = rng.randrange(len(row))
        run = row[start : start + rng.randint(2, 6)]
        if rng.random() < 0.3:
            run = "".join(rng.choice("asdfjkl;'/.,#@%&*") for _ in range(rng.randint(2, 7)))
        tokens.append(run * rng.randint(1, 2))
    return " ".join(tokens)


def _wrong_value(rng: random.Random, value: Fraction) -> Fraction:
    """A plausible but different answer."""
    choice = rng.randrange(4)
    if choice == 0:
        wrong = value + rng.randint(1, 9)
    elif choice == 1:
        wrong = value - rng.randint(1, 9)
    elif choice == 2:
        wrong = value * 10
    else:
        wrong = value * 2 + 1
    return wrong if wrong != value else value + 1


def _wrong_math(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A solved problem whose boxed answer is wrong."""
    problem = smath.make_problem(rng)
    wrong = _wrong_value(rng, problem.answer)
    text = smath.document_text(problem, rng).replace(boxed(problem.answer), boxed(wrong))
    extra = {
        **problem.record(),
        "boxed_answer": fmt_tex(wrong),
        "boxed_value": fmt_plain(wrong),
        "corrupted": True,
    }
    return text, extra


def _corrupt(value: Any) -> Any:
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, 0] if not value or value[-1] != 0 else value[:-1]
    return 0


def _broken_code(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A function document in which one test asserts a wrong value."""
    task = code.make_task(rng)
    cases = list(task.cases)
    i = rng.randrange(len(cases))
    cases[i] = (cases[i][0], _corrupt(cases[i][1]))
    broken = dataclasses.replace(task, cases=tuple(cases))
    extra = {"template": task.template, "entry_point": task.name, "tests_pass": False, "corrupted_case": i}
    return code.document_text(broken, rng), extra


def _shuffled(rng: random.Random, world: World) -> tuple[str, dict[str, Any]]:
    """A knowledge paragraph or math document with its words shuffled."""
    if rng.random() < 0.6:
        source, text = "knowledge", knowledge.paragraph(rng.choice(world.entities), rng)
    else:
        source, text = "math", smath.document_text(smath.make_problem(rng), rng)
    words = text.split()
    rng.shuffle(words)
    return " ".join(words), {"source": source}


def noise_records(
    kind: str, n: int, rng: random.Random, world: World, accept: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """`n` records of one noise kind (texts rejected by `accept` are redrawn)."""
    records: list[dict[str, Any]] = []
    n_clusters, salt = max(1, n // 5), rng.getrandbits(32)
    while len(records) < n:
        extra: dict[str, Any] = {}
        if kind == "spam":
            cluster = rng.randrange(n_clusters)
            text, extra = _spam(rng, cluster, salt), {"cluster": cluster}
        elif kind == "boilerplate":
            text = _boilerplate(rng)
        elif kind == "gibberish":
            text = _gibberish(rng)
        elif kind == "wrong_math":
            text, extra = _wrong_math(rng)
        elif kind == "broken_code":
            text, extra = _broken_code(rng)
        elif kind == "shuffled":
            text, extra = _shuffled(rng, world)
        else:
            raise ValueError(f"unknown noise kind {kind!r}")
        if accept(text):
            records.append(
                {
                    "id": f"noise_{kind}-{len(records):06d}",
                    "text": text,
                    "quality": "low",
                    "noise_kind": kind,
                    **extra,
                }
            )
    return records
