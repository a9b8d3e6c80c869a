"""The eval task registry: every benchmark by name, generation and log-likelihood alike, and the suites.

A task is a :class:`~mobilellm_r1.eval.tasks.GenTask` (sample completions, grade them) or a
:class:`~mobilellm_r1.eval.choice_tasks.ChoiceTask` (score options by log-likelihood); the runner
dispatches on that type. A new benchmark is one module defining its task object plus one line in
:data:`TASKS` (the key is the task's ``name``). Everything that lists, validates or expands task
names reads this module: the runner, ``eval --tasks``, predictions files, the NLL mode.

Suites: ``base`` and ``post`` are the columns of the paper's base-model and post-trained tables
(:mod:`~mobilellm_r1.eval.reference` holds their numbers), ``commonsense`` the eight tasks of its
"CommonSense Avg.", ``all`` every task.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import choice_tasks, code_tasks, livecodebench, math_tasks
from .choice_tasks import ChoiceTask
from .math_tasks import MathGenTask, MathTask
from .tasks import GenTask

Task = GenTask | ChoiceTask

TASKS: dict[str, Task] = {
    "gsm8k": math_tasks.GSM8K,
    "math500": math_tasks.MATH500,
    "aime24": math_tasks.AIME24,
    "aime25": math_tasks.AIME25,
    "humaneval": code_tasks.HUMANEVAL,
    "mbpp": code_tasks.MBPP,
    "livecodebench": livecodebench.LIVECODEBENCH,
    "mmlu": choice_tasks.MMLU,
    "arc_easy": choice_tasks.ARC_EASY,
    "arc_challenge": choice_tasks.ARC_CHALLENGE,
    "boolq": choice_tasks.BOOLQ,
    "piqa": choice_tasks.PIQA,
    "siqa": choice_tasks.SIQA,
    "hellaswag": choice_tasks.HELLASWAG,
    "openbookqa": choice_tasks.OPENBOOKQA,
    "winogrande": choice_tasks.WINOGRANDE,
}

COMMONSENSE = ("arc_easy", "arc_challenge", "boolq", "piqa", "siqa", "hellaswag", "openbookqa", "winogrande")

# The paper's two tables (README "Evaluation"; the commonsense tasks make up its "CommonSense Avg.").
PAPER_SUITES: dict[str, tuple[str, ...]] = {
    "base": ("math500", "gsm8k", "mbpp", "humaneval", "mmlu", *COMMONSENSE),
    "post": ("math500", "gsm8k", "aime24", "aime25", "livecodebench"),
}

SUITES: dict[str, tuple[str, ...]] = {**PAPER_SUITES, "commonsense": COMMONSENSE, "all": tuple(TASKS)}


def _unknown(what: str, name: str, known: Iterable[str]) -> ValueError:
    return ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(known))}")


def get_task(name: str) -> Task:
    """A task by name (ValueError lists the known tasks and suites)."""
    if name not in TASKS:
        raise _unknown("task", name, [*TASKS, *SUITES])
    return TASKS[name]


def generation_task(name: str) -> GenTask:
    """A generation task by name (ValueError lists the known ones)."""
    task = TASKS.get(name)
    if not isinstance(task, GenTask):
        raise _unknown("generation task", name, [n for n, t in TASKS.items() if isinstance(t, GenTask)])
    return task


def math_task(name: str) -> MathTask:
    """The :class:`MathTask` (records, gold answers, prompts) of a math benchmark by name."""
    task = TASKS.get(name)
    if not isinstance(task, MathGenTask):
        raise _unknown("math task", name, [n for n, t in TASKS.items() if isinstance(t, MathGenTask)])
    return task.math


def expand_tasks(names: Iterable[str]) -> list[str]:
    """Task names with suites (``base``, ``post``, ``commonsense``, ``all``) expanded, order kept."""
    out: list[str] = []
    for name in names:
        for task in SUITES.get(name, (name,)):
            get_task(task)
            if task not in out:
                out.append(task)
    return out
