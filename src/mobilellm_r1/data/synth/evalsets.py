"""Held-out evaluation records in the exact layouts of the real benchmark files.

* GSM8K (`eval/gsm8k/test.jsonl`): `{"question", "answer"}`, the answer's worked steps carry
  `<<expr=value>>` calculator annotations and end with `#### N`;
* MATH500 (`eval/math500/test.jsonl`): `problem`, `solution` (with `\\boxed{}`), `answer`,
  `subject`, `level` (int), `unique_id`;
* HumanEval (`eval/humaneval/HumanEval.jsonl.gz`): `task_id`, `prompt`, `entry_point`,
  `canonical_solution`, `test`;
* MMLU (`eval/mmlu/{dev,val,test}/synthetic_world_{split}.csv`): rows
  `question,A,B,C,D,answer` without a header.

The structured forms behind the math items are kept in `eval/structured/*.jsonl` (same order)
so answers can be re-derived; the benchmark files themselves hold only the standard fields.
"""

from __future__ import annotations

import random
from typing import Any

from . import knowledge
from ._util import boxed, fmt_plain, fmt_tex
from .knowledge import Question
from .math import MathProblem

MMLU_SUBJECT = "synthetic_world"
MMLU_DEV_SIZE = 5
MATH_SUBJECTS = {1: "Prealgebra", 2: "Prealgebra", 3: "Prealgebra", 4: "Algebra", 5: "Algebra"}


def gsm8k_record(problem: MathProblem) -> dict[str, Any]:
    """A GSM8K test record (requires an integer answer)."""
    if problem.answer.denominator != 1:
        raise ValueError("GSM8K answers must be integers")
    return {
        "question": problem.question,
        "answer": f"{problem.solution('gsm8k')}\n#### {problem.answer.numerator}",
    }


def math500_record(problem: MathProblem, index: int) -> dict[str, Any]:
    """A MATH500-style record; `unique_id` mimics `test/<subject>/<n>.json`."""
    subject = MATH_SUBJECTS[problem.level]
    solution = f"{problem.solution()}\nTherefore, the answer is ${boxed(problem.answer)}$."
    return {
        "problem": problem.question,
        "solution": solution,
        "answer": fmt_tex(problem.answer),
        "subject": subject,
        "level": problem.level,
        "unique_id": f"test/synthetic_{subject.lower()}/{index}.json",
    }


def structured_record(problem: MathProblem, index: int) -> dict[str, Any]:
    """Side-car record with the structured form of an eval math item."""
    return {"index": index, "level": problem.level, "kind": problem.kind, "structured": problem.structured,
            "answer_value": fmt_plain(problem.answer)}  # fmt: skip


def mmlu_row(question: Question, rng: random.Random) -> list[str]:
    """One MMLU CSV row: question, four options, answer letter."""
    options, letter = question.choices(rng)
    return [question.question, *options, letter]


def mmlu_splits(questions: list[Question], n_eval: int) -> dict[str, list[Question]]:
    """Split held-out questions: 5 dev exemplars, then val (a fifth of `n_eval`) and test."""
    n_val = n_eval // 5
    dev = questions[:MMLU_DEV_SIZE]
    val = questions[MMLU_DEV_SIZE : MMLU_DEV_SIZE + n_val]
    test = questions[MMLU_DEV_SIZE + n_val : MMLU_DEV_SIZE + n_eval]
    return {"dev": dev, "val": val, "test": test}


def mmlu_structured(question: Question, row: list[str]) -> dict[str, Any]:
    """Side-car record linking an MMLU row to the world fact it asks about."""
    return {"entity": question.entity, "attr": question.attr, "answer": question.answer, "letter": row[5]}


def probe_record(domain: str, index: int, text: str) -> dict[str, Any]:
    """A capability-probing document."""
    return {"id": f"probe_{domain}-{index:05d}", "domain": domain, "text": text}


def knowledge_probe_text(world: Any, rng: random.Random) -> str:
    """A high-quality knowledge document: a full paragraph, biography or country overview."""
    entity = rng.choice(world.entities)
    if entity.kind == "person":
        return knowledge.biography(world, entity, rng)
    if entity.kind == "country":
        return knowledge.overview(world, entity, rng)
    return knowledge.paragraph(entity, rng)
