"""A generated fictional world: countries, cities, rivers, mountains, people, companies, elements.

Names are invented from syllables (unique across the world); attributes are years, numbers,
labels and references to other entities (by display name). The world is a pure function of
the RNG and the entity count.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ._util import invent_word, unique_name

KIND_SHARES = (
    ("country", 0.08), ("city", 0.25), ("river", 0.10), ("mountain", 0.07),
    ("person", 0.25), ("company", 0.12), ("element", 0.13),
)  # fmt: skip
MIN_PER_KIND = 4
PROFESSIONS = ("chemist", "painter", "engineer", "poet", "explorer", "composer", "astronomer",
               "architect", "physician", "mathematician", "sculptor", "botanist")  # fmt: skip
INDUSTRIES = (("shipbuilding", "Shipyards"), ("software", "Systems"), ("textiles", "Mills"),
              ("food", "Foods"), ("automobile", "Motors"), ("pharmaceutical", "Pharma"),
              ("mining", "Minerals"), ("aviation", "Aero"), ("publishing", "Press"))  # fmt: skip
COLORS = ("silver", "gold", "green", "red", "blue", "violet", "grey", "black", "white", "orange")
STATES = ("solid", "liquid", "gas")
CURRENCY_UNITS = ("crown", "mark", "florin", "shell", "dinar", "real")


@dataclass
class Entity:
    """One thing in the world; `attrs` keeps a fixed attribute order per kind."""

    kind: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class World:
    """All entities, in generation order, with (cached) lookup helpers."""

    entities: list[Entity]

    @cached_property
    def _by_kind(self) -> dict[str, list[Entity]]:
        """Entities grouped by kind, each group in generation order."""
        groups: dict[str, list[Entity]] = {}
        for e in self.entities:
            groups.setdefault(e.kind, []).append(e)
        return groups

    @cached_property
    def _refs(self) -> dict[str, list[tuple[Entity, str]]]:
        """For each referenced name, the (entity, attribute) pairs whose value is that name."""
        refs: dict[str, list[tuple[Entity, str]]] = {}
        for e in self.entities:
            for a, v in e.attrs.items():
                if isinstance(v, str):
                    refs.setdefault(v, []).append((e, a))
        return refs

    def of_kind(self, kind: str) -> list[Entity]:
        """Entities of one kind, in generation order."""
        return self._by_kind.get(kind, [])

    def referencing(self, name: str) -> list[tuple[Entity, str]]:
        """(entity, attribute) pairs whose value refers to `name`."""
        return self._refs.get(name, [])


def kind_counts(n_entities: int) -> dict[str, int]:
    """How many entities of each kind (at least `MIN_PER_KIND` each)."""
    return {kind: max(MIN_PER_KIND, round(share * n_entities)) for kind, share in KIND_SHARES}


def _names(rng: random.Random, used: set[str], n: int, suffixes: tuple[str, ...]) -> list[str]:
    """`n` unique invented base words with an optional suffix."""
    return [unique_name(rng, used, lambda r: _attach(invent_word(r), r.choice(suffixes))) for _ in range(n)]


def _attach(word: str, suffix: str) -> str:
    """`word + suffix`, dropping the word's final vowel before a suffix starting with a vowel."""
    if suffix and word[-1] in "aeiou" and suffix[0] in "aeiou":
        word = word[:-1]
    return word + suffix


def _places(rng: random.Random, counts: dict[str, int], used: set[str]) -> list[Entity]:
    """Countries, cities, rivers and mountains."""
    continents = _names(rng, used, 4, ("", "ia"))
    seas = [f"the Sea of {w}" for w in _names(rng, used, 6, ("",))]
    countries = [
        Entity("country", n)
        for n in _names(rng, used, counts["country"], ("ia", "land", "stan", "or", "a", ""))
    ]
    cities = [
        Entity("city", n)
        for n in _names(rng, used, counts["city"], ("", "ton", "burg", "port", "grad", "ia"))
    ]
    rivers = [Entity("river", n + " River") for n in _names(rng, used, counts["river"], ("",))]
    mountains = [Entity("mountain", "Mount " + n) for n in _names(rng, used, counts["mountain"], ("",))]
    for i, city in enumerate(cities):
        country = countries[i] if i < len(countries) else rng.choice(countries)
        city.attrs = {
            "country": country.name,
            "population": rng.randint(20, 30000) * 100,
            "founded": rng.randint(600, 1900),
        }
    for country in countries:
        own = [c for c in cities if c.attrs["country"] == country.name]
        language = country.name.rstrip("aeiou") + rng.choice(["ish", "ese", "ic", "i"])
        currency = f"{invent_word(rng, 1, 2).lower()} {rng.choice(CURRENCY_UNITS)}"
        country.attrs = {"continent": rng.choice(continents), "capital": rng.choice(own).name,
                         "language": language, "currency": currency, "founded": rng.randint(900, 1990)}  # fmt: skip
    for river in rivers:
        river.attrs = {
            "country": rng.choice(countries).name,
            "length_km": rng.randint(40, 4000),
            "mouth": rng.choice(seas),
        }
    for city in cities:
        local = [r for r in rivers if r.attrs["country"] == city.attrs["country"]]
        if local and rng.random() < 0.7:
            city.attrs["river"] = rng.choice(local).name
    for mountain in mountains:
        mountain.attrs = {"country": rng.choice(countries).name, "height_m": rng.randint(800, 8800)}
    return countries + cities + rivers + mountains


def _people(rng: random.Random, counts: dict[str, int], used: set[str], cities: list[Entity]) -> list[Entity]:
    """People with birth year, birthplace and profession."""
    people = []
    for _ in range(counts["person"]):
        first = unique_name(rng, used, lambda r: invent_word(r, 2, 2))
        name = f"{first} {unique_name(rng, used, lambda r: invent_word(r, 2, 3))}"
        attrs = {
            "profession": rng.choice(PROFESSIONS),
            "born": rng.randint(1600, 1980),
            "birthplace": rng.choice(cities).name,
        }
        people.append(Entity("person", name, attrs))
    return people


def _organisations(
    rng: random.Random, counts: dict[str, int], used: set[str], people: list[Entity], cities: list[Entity]
) -> list[Entity]:
    """Companies and chemical elements, linked to founders/discoverers."""
    out = []
    for _ in range(counts["company"]):
        industry, suffix = rng.choice(INDUSTRIES)
        name = unique_name(rng, used, lambda r: invent_word(r)) + " " + suffix
        founder = rng.choice(people)
        attrs = {"industry": industry, "founded": founder.attrs["born"] + rng.randint(20, 50), "founder": founder.name,
                 "headquarters": rng.choice(cities).name}  # fmt: skip
        out.append(Entity("company", name, attrs))
    numbers = rng.sample(range(1, max(140, 2 * counts["element"])), counts["element"])
    symbols: set[str] = set()
    for number in numbers:
        name = unique_name(
            rng, used, lambda r: _attach(invent_word(r), r.choice(["ium", "on", "ine", "ite"]))
        )
        symbol = _symbol(name, symbols)
        finder = rng.choice(people)
        attrs = {"state": rng.choice(STATES), "symbol": symbol, "atomic_number": number, "color": rng.choice(COLORS),
                 "discovered_by": finder.name, "discovered": finder.attrs["born"] + rng.randint(20, 50)}  # fmt: skip
        out.append(Entity("element", name, attrs))
    return out


def _symbol(name: str, used: set[str]) -> str:
    """A unique chemical symbol: the capitalised first letter plus one or two lower-case letters."""
    first = name[0].upper()
    preferred = [c for c in name[1:].lower() if c.isalpha()]
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    options = [first + c for c in preferred + list(alphabet)] + [
        first + a + b for a in alphabet for b in alphabet
    ]
    for option in options:
        if option not in used:
            used.add(option)
            return option
    raise RuntimeError("out of chemical symbols; lower n_entities")


def build_world(rng: random.Random, n_entities: int) -> World:
    """Generate the world: places first, then people, then companies and elements."""
    counts = kind_counts(n_entities)
    used: set[str] = set()
    places = _places(rng, counts, used)
    cities = [e for e in places if e.kind == "city"]
    people = _people(rng, counts, used, cities)
    return World(places + people + _organisations(rng, counts, used, people, cities))
