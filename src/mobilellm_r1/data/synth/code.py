"""Small Python functions from parameterised templates, as documents and HumanEval-style records.

Templates (in `code_text` and `code_lists`) vary the function name, argument names, constants
and body style; each task carries test cases whose expected values come from an independent
reference implementation. Renderings:

* `document_text`: a pretraining document (function with docstring + executable asserts);
* `humaneval_record`: `task_id`, `prompt` (signature + docstring), `entry_point`,
  `canonical_solution` (the body), `test` (`def check(candidate): ...`), as in HumanEval.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from . import code_lists, code_text
from ._codecore import TEMPLATES, CodeTask

__all__ = [
    "TEMPLATES",
    "CodeTask",
    "document_text",
    "humaneval_record",
    "humaneval_test",
    "is_eval_identity",
    "make_task",
]

# Importing the template modules registers their templates.
_TEMPLATE_MODULES = (code_text, code_lists)


EVAL_SHARE = 4  # one function identity in EVAL_SHARE is reserved for evaluation


def is_eval_identity(task: CodeTask) -> bool:
    """Whether the task's function identity (template, name, argument names, constants) is held out.

    A fixed hash split of the identity space: eval tasks use only held-out identities and
    training tasks only the others, so no eval function (under its name and signature) is
    ever seen in training, whatever the sizes.
    """
    digest = hashlib.sha256(repr(task.identity[:4]).encode()).digest()
    return digest[0] % EVAL_SHARE == 0


def make_task(rng: random.Random, template_name: str | None = None) -> CodeTask:
    """One random task (from a random template unless `template_name` is given)."""
    name = template_name or rng.choice(sorted(TEMPLATES))
    return TEMPLATES[name](rng)


def _indent(text: str, prefix: str = "    ") -> str:
    """Indent every non-empty line."""
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(keepends=True))


def document_text(task: CodeTask, rng: random.Random) -> str:
    """A pretraining document: the function and its tests, runnable as a script (`__main__`)."""
    layout = rng.randrange(4)
    if layout == 0:
        return f"{task.source()}\n\n# Tests\n{task.asserts()}"
    if layout == 1:
        return f'{task.source()}\n\nif __name__ == "__main__":\n{_indent(task.asserts())}    print("all tests passed")\n'
    if layout == 2:
        test = f"def test_{task.name}() -> None:\n{_indent(task.asserts())}"
        return f'"""Utility: {task.name}."""\n\n\n{task.source()}\n\n{test}\n\ntest_{task.name}()\n'
    return f"# Example: {task.summary}\n{task.source()}\n\n{task.asserts()}"


def humaneval_test(task: CodeTask) -> str:
    """The `test` field: METADATA and a `check(candidate)` function with the asserts."""
    header = "\n\nMETADATA = {\n    'author': 'mobilellm-r1-synth',\n    'dataset': 'test'\n}\n\n\n"
    return f"{header}def check(candidate):\n{task.asserts('candidate', '    ')}\n"


def humaneval_record(task: CodeTask, task_id: str) -> dict[str, Any]:
    """A HumanEval-format record (same keys and key order as the original file)."""
    return {
        "task_id": task_id,
        "prompt": task.prompt(),
        "entry_point": task.name,
        "canonical_solution": task.body,
        "test": humaneval_test(task),
    }
