"""Encyclopedia-style prose about the generated world, and questions about it.

* `paragraph`: one entity described in prose, each attribute by one of several paraphrases;
* `overview`: a country together with the cities, rivers, mountains and people linked to it;
* `questions`: every askable (entity, attribute) pair as a `Question` with a short answer and
  three distractors of the same attribute type (MMLU-style four-choice);
* `qa_doc` / `mc_doc`: practice documents made of short-answer or multiple-choice questions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .world import Entity, World

SENTENCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("country", "continent"): ("{name} is a country on the continent of {v}.", "{name} is a nation located in {v}.",
                               "The country of {name} lies on the continent of {v}."),
    ("country", "capital"): ("Its capital is {v}.", "The capital city of {name} is {v}.", "{v} serves as the capital of {name}."),
    ("country", "language"): ("The official language of {name} is {v}.", "People in {name} speak {v}.", "{v} is the official language of {name}."),
    ("country", "currency"): ("{name} uses the {v} as its currency.", "The currency of {name} is the {v}.", "In {name} people pay with the {v}."),
    ("country", "founded"): ("{name} was founded in {v}.", "The country of {name} was established in {v}.", "{name} became an independent country in {v}."),
    ("city", "country"): ("{name} is a city in {v}.", "{name} is a city located in {v}.", "The city of {name} lies in {v}."),
    ("city", "population"): ("It has a population of {v}.", "About {v} people live in {name}.", "{name} is home to {v} residents."),
    ("city", "founded"): ("{name} was founded in {v}.", "The city of {name} was founded in the year {v}.", "The first settlers built {name} in {v}."),
    ("city", "river"): ("The {v} flows through {name}.", "{name} lies on the banks of the {v}.", "{name} is built along the {v}."),
    ("river", "country"): ("The {name} is a river in {v}.", "The {name} is one of the rivers of {v}.", "The {name} flows through {v}."),
    ("river", "length_km"): ("It is {v} long.", "The {name} has a length of {v}.", "The {name} runs for {v}."),
    ("river", "mouth"): ("It flows into {v}.", "The {name} empties into {v}.", "The mouth of the {name} is on {v}."),
    ("mountain", "country"): ("{name} is a mountain in {v}.", "{name} rises in {v}.", "{name} is the name of a peak in {v}."),
    ("mountain", "height_m"): ("It is {v} high.", "{name} reaches a height of {v}.", "The summit of {name} stands {v} above sea level."),
    ("person", "profession"): ("{name} was {a} {v}.", "{name} was a well-known {v}.", "{name} worked as {a} {v}."),
    ("person", "born"): ("{name} was born in {v}.", "{name} was born in the year {v}.", "The year of {name}'s birth was {v}."),
    ("person", "birthplace"): ("{name} was born in the city of {v}.", "{name}'s birthplace is {v}.", "{name} came from {v}."),
    ("company", "industry"): ("{name} is a company in the {v} industry.", "{name} is {a} {v} company.", "{name} operates in the {v} industry."),
    ("company", "founded"): ("{name} was founded in {v}.", "The company {name} dates from {v}.", "{name} was established in {v}."),
    ("company", "founder"): ("{name} was founded by {v}.", "The founder of {name} was {v}.", "{v} founded {name}."),
    ("company", "headquarters"): ("{name} is headquartered in {v}.", "The headquarters of {name} are in {v}.", "{name} is based in {v}."),
    ("element", "state"): ("{name} is a chemical element that is a {v} at room temperature.", "{name} is an element; at room temperature it is a {v}."),
    ("element", "symbol"): ("The chemical symbol of {name} is {v}.", "Its symbol is {v}.", "Chemists write {name} as {v}."),
    ("element", "atomic_number"): ("The atomic number of {name} is {v}.", "It has atomic number {v}.", "{name} is element number {v}."),
    ("element", "color"): ("Pure {name} is {v} in color.", "{name} has a {v} color.", "Samples of {name} look {v}."),
    ("element", "discovered_by"): ("{name} was discovered by {v}.", "{v} discovered {name}.", "The discoverer of {name} was {v}."),
    ("element", "discovered"): ("{name} was discovered in {v}.", "It was first identified in {v}.", "The discovery of {name} took place in {v}."),
}  # fmt: skip

QUESTIONS: dict[tuple[str, str], str] = {
    ("country", "continent"): "On which continent is {name} located?",
    ("country", "capital"): "What is the capital of {name}?",
    ("country", "language"): "What is the official language of {name}?",
    ("country", "currency"): "What is the currency of {name}?",
    ("country", "founded"): "In which year was the country of {name} founded?",
    ("city", "country"): "In which country is the city of {name}?",
    ("city", "population"): "What is the population of {name}?",
    ("city", "founded"): "In which year was the city of {name} founded?",
    ("city", "river"): "Which river flows through {name}?",
    ("river", "country"): "Through which country does the {name} flow?",
    ("river", "length_km"): "How long is the {name}?",
    ("river", "mouth"): "Into which sea does the {name} flow?",
    ("mountain", "country"): "In which country is {name}?",
    ("mountain", "height_m"): "How high is {name}?",
    ("person", "profession"): "What was the profession of {name}?",
    ("person", "born"): "In which year was {name} born?",
    ("person", "birthplace"): "In which city was {name} born?",
    ("company", "industry"): "In which industry does {name} operate?",
    ("company", "founded"): "In which year was the company {name} founded?",
    ("company", "founder"): "Who founded {name}?",
    ("company", "headquarters"): "In which city is {name} headquartered?",
    ("element", "symbol"): "What is the chemical symbol of {name}?",
    ("element", "atomic_number"): "What is the atomic number of {name}?",
    ("element", "color"): "What color is pure {name}?",
    ("element", "discovered_by"): "Who discovered {name}?",
    ("element", "discovered"): "In which year was {name} discovered?",
}
YEAR_ATTRS = ("founded", "born", "discovered")


@dataclass(frozen=True)
class Question:
    """A question about one attribute of one entity, with distractors for four-choice use."""

    entity: str
    attr: str
    question: str
    answer: str
    distractors: tuple[str, str, str]
    statement: str

    @property
    def key(self) -> tuple[str, str]:
        """Identity of the fact asked about."""
        return (self.entity, self.attr)

    def choices(self, rng: random.Random) -> tuple[list[str], str]:
        """The four options in random order and the letter of the correct one."""
        options = [self.answer, *self.distractors]
        rng.shuffle(options)
        return options, "ABCD"[options.index(self.answer)]


def show(attr: str, value: object) -> str:
    """An attribute value as it appears in text."""
    if attr == "population":
        return f"{value:,}"
    if attr == "length_km":
        return f"{value:,} km"
    if attr == "height_m":
        return f"{value:,} m"
    return str(value)


def fill(template: str, name: str, value: str) -> str:
    """Fill a sentence template: `{name}`, the value `{v}` and its indefinite article `{a}`."""
    article = "an" if value[:1].lower() in "aeiou" else "a"
    return template.format(name=name, v=value, a=article)


def statement(entity: Entity, attr: str) -> str:
    """The attribute as a self-contained sentence (the first paraphrase naming the entity)."""
    template = next(t for t in SENTENCES[(entity.kind, attr)] if "{name}" in t)
    return fill(template, entity.name, show(attr, entity.attrs[attr]))


def sentence(entity: Entity, attr: str, rng: random.Random) -> str:
    """One attribute of an entity as a sentence (random paraphrase)."""
    return fill(rng.choice(SENTENCES[(entity.kind, attr)]), entity.name, show(attr, entity.attrs[attr]))


def paragraph(entity: Entity, rng: random.Random, attrs: list[str] | None = None) -> str:
    """A prose paragraph on `entity`: its first attribute, then the others in random order."""
    names = list(entity.attrs) if attrs is None else attrs
    first, rest = names[0], names[1:]
    rng.shuffle(rest)
    return " ".join(sentence(entity, a, rng) for a in [first, *rest])


def _linked(world: World, country: str, kind: str) -> list[str]:
    """Names of entities of `kind` located in `country`."""
    return [e.name for e in world.of_kind(kind) if e.attrs.get("country") == country]


def _join(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def overview(world: World, country: Entity, rng: random.Random) -> str:
    """A longer article on a country with its cities, rivers, mountains and notable people."""
    parts = [paragraph(country, rng)]
    cities = _linked(world, country.name, "city")
    parts.append(f"Cities of {country.name} include {_join(cities)}.")
    rivers, mountains = _linked(world, country.name, "river"), _linked(world, country.name, "mountain")
    if rivers:
        parts.append(f"Rivers of {country.name}: {_join(rivers)}.")
    if mountains:
        parts.append(f"Its mountains include {_join(mountains)}.")
    people = [p for p in world.of_kind("person") if p.attrs["birthplace"] in cities]
    for p in people[:4]:
        parts.append(
            f"The {p.attrs['profession']} {p.name} was born in {p.attrs['birthplace']} in {p.attrs['born']}."
        )
    return f"{country.name}\n\n" + " ".join(parts)


def biography(world: World, person: Entity, rng: random.Random) -> str:
    """A paragraph on a person, including the companies and elements linked to them."""
    parts = [paragraph(person, rng)]
    for other, attr in world.referencing(person.name):
        if attr == "founder":
            parts.append(f"In {other.attrs['founded']}, {person.name} founded {other.name}.")
        elif attr == "discovered_by":
            parts.append(f"{person.name} discovered the element {other.name} in {other.attrs['discovered']}.")
    return " ".join(parts)


def _distractors(world: World, entity: Entity, attr: str, rng: random.Random) -> tuple[str, str, str] | None:
    """Three wrong answers of the same attribute type, or None if there are too few."""
    answer = show(attr, entity.attrs[attr])
    pool = sorted(
        {show(attr, e.attrs[attr]) for e in world.of_kind(entity.kind) if attr in e.attrs} - {answer}
    )
    if attr in YEAR_ATTRS or attr in ("population", "length_km", "height_m", "atomic_number"):
        value = entity.attrs[attr]
        step = max(1, abs(value) // 10) if attr not in YEAR_ATTRS else rng.randint(3, 40)
        pool = sorted(
            set(pool)
            | {show(attr, value + k * step) for k in (-3, -2, -1, 1, 2, 3) if value + k * step > 0} - {answer}
        )
    if len(pool) < 3:
        return None
    a, b, c = rng.sample(pool, 3)
    return (a, b, c)


def questions(world: World, rng: random.Random) -> list[Question]:
    """All askable (entity, attribute) facts as questions, in world order."""
    out = []
    for entity in world.entities:
        for attr in entity.attrs:
            template = QUESTIONS.get((entity.kind, attr))
            distractors = _distractors(world, entity, attr, rng) if template else None
            if template and distractors:
                text = template.format(name=entity.name)
                answer = show(attr, entity.attrs[attr])
                out.append(Question(entity.name, attr, text, answer, distractors, statement(entity, attr)))
    return out


def mc_block(q: Question, rng: random.Random, with_answer: bool = True) -> str:
    """A question in MMLU prompt layout: question, lettered options, answer letter."""
    options, letter = q.choices(rng)
    lines = [q.question, *(f"{'ABCD'[i]}. {o}" for i, o in enumerate(options))]
    if with_answer:
        lines.append(f"Answer: {letter}")
    return "\n".join(lines)


def qa_doc(qs: list[Question]) -> str:
    """A short-answer practice document."""
    return "\n\n".join(f"Q: {q.question}\nA: {q.statement}" for q in qs)


def mc_doc(qs: list[Question], rng: random.Random) -> str:
    """A multiple-choice practice document (MMLU style, answers given)."""
    header = "The following are multiple choice questions (with answers) about the synthetic world.\n\n"
    return header + "\n\n".join(mc_block(q, rng) for q in qs)
