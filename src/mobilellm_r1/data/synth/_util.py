"""Shared helpers for the synthetic corpus: seeded RNGs, invented names, number formatting, file IO.

Everything here is deterministic: RNGs are seeded from strings (hashed with SHA-512 by
`random.Random`, independent of PYTHONHASHSEED), and files are written in a fixed byte layout
(JSON with insertion-ordered keys, gzip with mtime 0 and no file name) to a temporary name
that is then renamed into place.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from ...atomic import atomic_write

T = TypeVar("T")

SYLLABLES = (
    "ka", "lo", "ri", "ven", "dor", "mi", "sa", "tha", "ul", "bre", "nor", "vi", "zan", "el",
    "qua", "mar", "tes", "or", "ly", "phi", "gan", "ta", "ro", "mel", "sen", "du", "pra", "kel",
    "ost", "ar", "bi", "cor", "fen", "ha", "ju", "lan", "mo", "nes", "pel", "ru", "sil", "tor",
    "val", "wen", "yar", "zo",
)  # fmt: skip

FEMALE_NAMES = (
    "Mia", "Ava", "Sofia", "Lena", "Priya", "Amara", "Chloe", "Hana", "Ines", "Julia", "Keiko",
    "Leila", "Maya", "Nora", "Olivia", "Rosa", "Sara", "Tara", "Yara", "Zoe", "Emma", "Aisha",
    "Beatriz", "Clara", "Dina", "Fatima", "Grace", "Ingrid", "Lucia", "Mei",
)  # fmt: skip
MALE_NAMES = (
    "Liam", "Noah", "Omar", "Ravi", "Mateo", "Kenji", "Lucas", "Ethan", "Felix", "Hugo", "Ivan",
    "Jamal", "Kofi", "Leo", "Marco", "Nikhil", "Oscar", "Pedro", "Samir", "Tomas", "Victor",
    "Wei", "Yusuf", "Aaron", "Bruno", "Carlos", "Diego", "Elias", "Farid", "Gabriel",
)  # fmt: skip


def derive_rng(seed: int, stream: str) -> random.Random:
    """A `random.Random` for one named stream of one seed (streams are independent)."""
    return random.Random(f"mobilellm-r1-synth:{seed}:{stream}")


def person(rng: random.Random) -> tuple[str, str, str]:
    """A random first name with its pronouns: (name, subject pronoun, possessive pronoun)."""
    if rng.random() < 0.5:
        return rng.choice(FEMALE_NAMES), "she", "her"
    return rng.choice(MALE_NAMES), "he", "his"


def two_people(rng: random.Random) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """Two people with different first names."""
    first = person(rng)
    second = person(rng)
    while second[0] == first[0]:
        second = person(rng)
    return first, second


def invent_word(rng: random.Random, n_min: int = 2, n_max: int = 3) -> str:
    """A capitalised invented word made of `n_min`..`n_max` syllables."""
    n = rng.randint(n_min, n_max)
    return "".join(rng.choice(SYLLABLES) for _ in range(n)).capitalize()


def unique_name(rng: random.Random, used: set[str], make: Callable[[random.Random], str]) -> str:
    """Draw names from `make` until one is not in `used`; record and return it."""
    for _ in range(10_000):
        name = make(rng)
        if name not in used:
            used.add(name)
            return name
    raise RuntimeError("name space exhausted; lower n_entities")


def fmt_plain(value: Fraction) -> str:
    """A number as plain text: `12`, `-3`, `7/4`."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


def fmt_tex(value: Fraction) -> str:
    """A number as LaTeX: `12`, `-3`, `\\frac{7}{4}`, `-\\frac{7}{4}`."""
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def boxed(value: Fraction) -> str:
    """`\\boxed{...}` around the LaTeX form of a number."""
    return f"\\boxed{{{fmt_tex(value)}}}"


def split_counts(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` near-equal non-negative counts (earlier parts get the rest)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of `items` of length `size` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ----------------------------------------------------------------------------- file IO
def jsonl_bytes(records: Iterable[dict[str, Any]]) -> bytes:
    """JSON lines (ASCII-escaped, insertion-ordered keys, trailing newline) as bytes."""
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write records as JSON lines."""
    atomic_write(path, jsonl_bytes(records))


def write_jsonl_gz(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write records as gzipped JSON lines with a reproducible header (mtime 0, no file name)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(jsonl_bytes(records))
    atomic_write(path, buf.getvalue())


def write_csv(path: Path, rows: Sequence[Sequence[str]]) -> None:
    """Write rows as CSV without a header, minimal quoting and `\\n` line ends (MMLU layout)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    atomic_write(path, buf.getvalue().encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Write a pretty-printed JSON document."""
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
