"""Chat-format SFT records: `{"id", "messages": [{"role", "content"}, ...], "meta"}`.

* general: instructions over the knowledge world (describe, list facts, JSON, define, rewrite
  as bullets, short answers, comparisons, tables) and plain formatting tasks (sort, upper-case,
  count words, numbered lists);
* reasoning: math with step-by-step solutions ending in `\\boxed{}` and code tasks answered
  with the solution in a ```python block; `meta` keeps what is needed to verify the answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from . import code, knowledge
from . import math as smath
from ._codecore import sentence as random_sentence
from ._util import boxed
from .knowledge import Question
from .world import Entity, World

GENERAL_SYSTEMS = (
    None,
    "You are a helpful assistant.",
    "You are a concise assistant. Answer accurately and briefly.",
)
MATH_SYSTEMS = (
    None,
    "You are a careful math tutor. Reason step by step and put the final answer in \\boxed{}.",
)
CODE_SYSTEMS = (None, "You are an expert Python programmer. Answer with working, tested code.")
MATH_SUFFIXES = (
    "",
    "\nPlease reason step by step, and put your final answer within \\boxed{}.",
    "\nShow your work.",
)


def chat(system: str | None, user: str, assistant: str) -> list[dict[str, str]]:
    """A message list (system message only if given)."""
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _statements(entity: Entity) -> list[str]:
    """One self-contained sentence per attribute of an entity."""
    return [knowledge.statement(entity, attr) for attr in entity.attrs]


def _about(world: World, rng: random.Random, qs: list[Question]) -> tuple[str, str, str]:
    """Entity-centred instructions."""
    entity = rng.choice(world.entities)
    called = f"the {entity.name}" if entity.kind == "river" else entity.name
    kind = rng.randrange(5)
    if kind == 0:
        prompt = rng.choice(["Tell me about {}.", "What do you know about {}?", "Describe {}."]).format(
            called
        )
        return "describe", prompt, knowledge.paragraph(entity, rng)
    if kind == 1:
        bullets = "\n".join(f"- {s}" for s in _statements(entity))
        return "facts_list", f"List the key facts about {called} as bullet points.", bullets
    if kind == 2:
        obj = {"name": entity.name, "type": entity.kind, **entity.attrs}
        return (
            "json",
            f"Give the facts about {called} as a JSON object.",
            "```json\n" + json.dumps(obj, indent=2) + "\n```",
        )
    if kind == 3:
        return "define", f"In one sentence, what is {called}?", _statements(entity)[0]
    para = knowledge.paragraph(entity, rng)
    bullets = "\n".join(f"- {s.rstrip('.')}." for s in para.split(". "))
    return "rewrite_bullets", f"Rewrite the following paragraph as a bulleted list:\n\n{para}", bullets


def _facts(world: World, rng: random.Random, qs: list[Question]) -> tuple[str, str, str]:
    """Short answers, comparisons and tables about the world."""
    kind = rng.randrange(3)
    if kind == 0:
        q = rng.choice(qs)
        return "short_answer", q.question, q.statement
    if kind == 1:
        pool = [e for e in world.entities if "founded" in e.attrs and e.kind in ("city", "company")]
        a, b = rng.sample(pool, 2)
        ya, yb = a.attrs["founded"], b.attrs["founded"]
        if ya == yb:
            answer = f"Both were founded in {ya}."
        else:
            first = a.name if ya < yb else b.name
            answer = f"{a.name} was founded in {ya} and {b.name} in {yb}, so {first} was founded earlier."
        return "compare", f"Which was founded earlier, {a.name} or {b.name}?", answer
    cities = rng.sample(world.of_kind("city"), rng.randint(2, 4))
    rows = "\n".join(f"| {c.name} | {knowledge.show('population', c.attrs['population'])} |" for c in cities)
    user = (
        f"Make a markdown table of these cities and their populations: {', '.join(c.name for c in cities)}."
    )
    return "table", user, f"| City | Population |\n|---|---|\n{rows}"


def _formatting(world: World, rng: random.Random, qs: list[Question]) -> tuple[str, str, str]:
    """Plain text-manipulation tasks with deterministic answers."""
    kind = rng.randrange(4)
    names = [e.name for e in rng.sample(world.entities, rng.randint(3, 6))]
    if kind == 0:
        return "sort_words", f"Sort these names alphabetically: {', '.join(names)}.", ", ".join(sorted(names))
    if kind == 1:
        text = knowledge.paragraph(rng.choice(world.entities), rng, None).split(". ")[0] + "."
        return "uppercase", f"Convert the following text to upper case:\n{text}", text.upper()
    if kind == 2:
        text = random_sentence(rng, 12) or "hello"
        n = len(text.split())
        return (
            "count_words",
            f'How many words are in this sentence? "{text}"',
            f"The sentence has {n} word{'s' if n != 1 else ''}.",
        )
    numbered = "\n".join(f"{i}. {name}" for i, name in enumerate(names, 1))
    return "numbered_list", f"Turn these items into a numbered list: {'; '.join(names)}", numbered


GENERAL_MAKERS: tuple[Callable[[World, random.Random, list[Question]], tuple[str, str, str]], ...] = (
    _about,
    _facts,
    _formatting,
)


def general_record(
    world: World, qs: list[Question], rng: random.Random
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """One general instruction-following conversation and its metadata."""
    task, user, answer = rng.choice(GENERAL_MAKERS)(world, rng, qs)
    return chat(rng.choice(GENERAL_SYSTEMS), user, answer), {"domain": "general", "task": task}


def math_record(
    problem: smath.MathProblem, rng: random.Random
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """A math conversation: step-by-step solution, optional check, boxed answer."""
    steps = "\n".join(f"Step {i}: {s.render()}" for i, s in enumerate(problem.steps, 1))
    check = f"\n\n{problem.check}" if problem.check else ""
    answer = (
        f"Let's solve this step by step.\n\n{steps}{check}\n\nThe final answer is ${boxed(problem.answer)}$."
    )
    user = problem.question + rng.choice(MATH_SUFFIXES)
    return chat(rng.choice(MATH_SYSTEMS), user, answer), {"domain": "math", **problem.record()}


def code_record(task: code.CodeTask, rng: random.Random) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """A coding conversation answered with the function in a ```python block and example tests."""
    if rng.random() < 0.5:
        user = f"Write a Python function `{task.signature()[4:-1]}`. {task.summary}"
    else:
        user = f"Complete the following Python function:\n\n```python\n{task.prompt()}```"
    answer = (
        f"Here is an implementation of `{task.name}`:\n\n```python\n{task.source()}```\n\n"
        f"These tests pass:\n\n```python\n{task.asserts()}```"
    )
    meta = {
        "domain": "code",
        "template": task.template,
        "entry_point": task.name,
        "test": code.humaneval_test(task),
    }
    return chat(rng.choice(CODE_SYSTEMS), user, answer), meta


def conversation_text(messages: list[dict[str, str]]) -> str:
    """All message contents joined (for leak checks)."""
    return "\n".join(m["content"] for m in messages)
