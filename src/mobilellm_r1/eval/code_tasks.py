"""HumanEval and MBPP: loading, check assembly, the MBPP few-shot prompt, sandboxed checking
(:mod:`~mobilellm_r1.eval.code_check`: the program and the tests run in separate sandboxes), and
the two generation tasks :data:`HUMANEVAL` and :data:`MBPP` (listed in
:mod:`~mobilellm_r1.eval.registry`).

Data layout (see ``shared/data/eval/SOURCES.md``)::

    D/humaneval/HumanEval.jsonl.gz   # openai/human-eval, 164 tasks
    D/mbpp/mbpp.jsonl                # full MBPP (974 tasks, fields text/code/test_list/test_setup_code/...)
    D/mbpp/mbpp_test.jsonl           # test split 11-510 (DeepSeek-Coder copy, fields prompt/test/code)

MBPP records are normalised to the original field names (``text``, ``code``, ``test_list``,
``test_setup_code``, ``challenge_test_list``). The test split is taken from ``mbpp.jsonl`` when that file
is present (it carries ``test_setup_code``, which task 367 needs); otherwise ``mbpp_test.jsonl`` is used
with an empty ``test_setup_code``.

MBPP prompt: the 3-shot format of the MBPP paper (Austin et al. 2021, "Program Synthesis with Large
Language Models", tasks 2, 3, 4 as exemplars), as used by common harnesses (DeepSeek-Coder
``Evaluation/MBPP``, bigcode-evaluation-harness ``mbpp``, lm-evaluation-harness ``mbpp``)::

    You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:

    {test_list joined by newlines}
    [BEGIN]
    {code}
    [DONE]
"""

from __future__ import annotations

import ast
import builtins
import warnings
from pathlib import Path
from typing import Any

from mobilellm_r1.data.records import read_jsonl
from mobilellm_r1.deploy.sampling import SamplingParams
from mobilellm_r1.eval.code_check import CodeCheck, run_checks
from mobilellm_r1.eval.engines import GenRequest
from mobilellm_r1.eval.livecodebench import extract_code
from mobilellm_r1.eval.sandbox import ExecResult
from mobilellm_r1.eval.tasks import GenTask, GradeContext, Graded, Grouped, Record, pass_summary
from mobilellm_r1.tokenizer import chat_messages

MBPP_SPLITS: dict[str, tuple[int, int]] = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
    "full": (1, 974),
}
MBPP_SHOT_IDS = (2, 3, 4)
_HUMANEVAL_FILE = "HumanEval.jsonl.gz"
_MBPP_FULL = "mbpp.jsonl"
_MBPP_TEST = "mbpp_test.jsonl"


def _resolve(path_or_dir: str | Path, subdir: str, names: tuple[str, ...]) -> Path:
    """Return the data file: ``path`` itself, or the first of ``names`` in ``path`` or ``path/subdir``."""
    path = Path(path_or_dir)
    if path.is_file():
        return path
    candidates = [base / name for name in names for base in (path / subdir, path)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{subdir} data not found at {path}: put {' or '.join(names)} in {path / subdir} "
        f"(shared layout D/{subdir}/{names[0]}), or pass the file path itself; see shared/data/eval/SOURCES.md"
    )


def load_humaneval(path_or_dir: str | Path) -> list[dict]:
    """Load the 164 HumanEval tasks (task_id, prompt, canonical_solution, test, entry_point)."""
    return read_jsonl(_resolve(path_or_dir, "humaneval", (_HUMANEVAL_FILE,)))


def _normalise_mbpp(record: dict) -> dict:
    """Map the DeepSeek-Coder test-file fields (prompt/test) to the original MBPP names."""
    return {
        "task_id": record["task_id"],
        "text": record.get("text", record.get("prompt", "")),
        "code": record["code"],
        "test_list": list(record.get("test_list", record.get("test", []))),
        "test_setup_code": record.get("test_setup_code", ""),
        "challenge_test_list": list(record.get("challenge_test_list", [])),
    }


def load_mbpp(path_or_dir: str | Path, split: str = "test") -> list[dict]:
    """Load an MBPP split (``test`` 11-510, ``validation``, ``train``, ``prompt`` 1-10 or ``full``)."""
    if split not in MBPP_SPLITS:
        raise ValueError(f"unknown MBPP split {split!r}; expected one of {sorted(MBPP_SPLITS)}")
    names = (_MBPP_FULL, _MBPP_TEST) if split == "test" else (_MBPP_FULL,)
    path = _resolve(path_or_dir, "mbpp", names)
    lo, hi = MBPP_SPLITS[split]
    records = [_normalise_mbpp(r) for r in read_jsonl(path)]
    return [r for r in records if lo <= r["task_id"] <= hi]


def mbpp_shots(path_or_dir: str | Path) -> list[dict]:
    """The standard exemplars, MBPP tasks 2, 3 and 4 (from the full ``mbpp.jsonl``)."""
    by_id = {r["task_id"]: r for r in load_mbpp(path_or_dir, split="prompt")}
    return [by_id[i] for i in MBPP_SHOT_IDS]


def humaneval_program(record: dict, completion: str, *, after_prompt: bool = True) -> CodeCheck:
    """HumanEval check: the program is prompt + completion (or the completion alone when it is a whole
    program, ``after_prompt=False``); the checker runs the prompt, the test code and
    ``check(<the program's entry point>)``."""
    program = record["prompt"] + completion if after_prompt else completion
    return CodeCheck(program, record["test"], record["entry_point"], prelude=record["prompt"])


def mbpp_program(record: dict, code: str) -> CodeCheck:
    """MBPP check: ``code``, then ``test_setup_code`` in the program's process; the asserts of
    ``test_list`` in the checker's.

    The setup goes after the code: the only tasks with setup code (367 in test, 927 in train) build
    trees with the ``Node`` class that the solution itself defines, so setup-first raises NameError.
    """
    tests = "\n".join(record["test_list"]) + "\n"
    return CodeCheck(
        code, tests, setup=record.get("test_setup_code", ""), builtin_names=_redefined(record.get("code", ""))
    )


def _redefined(reference: str) -> tuple[str, ...]:
    """Builtin names that the reference solution defines at top level (task 126 defines ``sum``)."""
    try:
        with warnings.catch_warnings():  # e.g. invalid escape sequences in reference code
            warnings.simplefilter("ignore")
            tree = ast.parse(reference)
    except SyntaxError:
        return ()
    defined = (n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
    return tuple(sorted({name for name in defined if hasattr(builtins, name)}))


def _mbpp_block(record: dict) -> str:
    """One prompt block up to and including ``[BEGIN]\\n``."""
    tests = "\n".join(record["test_list"])
    return (
        f"You are an expert Python programmer, and here is your task: {record['text']} "
        f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
    )


def mbpp_prompt(record: dict, shots: list[dict]) -> str:
    """Few-shot MBPP prompt: each exemplar with its ``code`` and ``[DONE]``, then ``record`` up to ``[BEGIN]``."""
    examples = "".join(_mbpp_block(s) + s["code"] + "\n[DONE]\n" for s in shots)
    return examples + _mbpp_block(record)


def extract_mbpp_code(completion: str) -> str:
    """The code in a completion: text before the first ``[DONE]``, without a leading ``[BEGIN]``."""
    code = completion.split("[DONE]", 1)[0].strip()
    if code.startswith("[BEGIN]"):
        code = code[len("[BEGIN]") :]
    return code.strip("\n")


def run_code_checks(checks: list[CodeCheck], timeout_s: float = 10, workers: int = 2) -> list[ExecResult]:
    """Run each check in the sandboxes (in parallel); ``status == "ok"`` means its tests passed."""
    return run_checks(checks, timeout_s=timeout_s, workers=workers)


# ---------------------------------------------------------------------------------------------
# the generation tasks

HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # Codex paper (Chen et al. 2021)


def _counts(rows: list[dict[str, Any]], key: str) -> list[tuple[int, int]]:
    """(samples, correct) per id, in first-seen order."""
    tally: dict[str, list[int]] = {}
    for row in rows:
        n_c = tally.setdefault(str(row["id"]), [0, 0])
        n_c[0] += 1
        n_c[1] += int(bool(row[key]))
    return [(n, c) for n, c in tally.values()]


def _code_rows(
    items: list[tuple[str, str]], checks: list[CodeCheck], ctx: GradeContext
) -> list[dict[str, Any]]:
    """Run one check per (id, extracted code) item -> per-sample rows."""
    results = run_code_checks(checks, timeout_s=ctx.timeout_s, workers=ctx.workers)
    return [
        {"id": rid, "extracted": code, "passed": r.status == "ok", "status": r.status}
        | ({"stderr": r.stderr[-300:]} if r.status != "ok" else {})
        for (rid, code), r in zip(items, results, strict=True)
    ]


def _humaneval_grade(records, ids, grouped: Grouped, chat: bool, ctx: GradeContext) -> Graded:
    items, programs = [], []
    for record, rid in zip(records, ids, strict=True):
        for completion in grouped.get(rid, []):
            if chat:
                code = extract_code(completion)
                defines = f"def {record['entry_point']}" in code
                program = humaneval_program(record, code, after_prompt=not defines)
            else:
                code = completion
                program = humaneval_program(record, completion)
            items.append((rid, code))
            programs.append(program)
    rows = _code_rows(items, programs, ctx)
    return pass_summary(_counts(rows, "passed")), rows


def _humaneval_chat(record: Record, rid: str) -> GenRequest:
    user = f"Complete the following Python function.\n```python\n{record['prompt']}```"
    return GenRequest(rid, messages=chat_messages(user, system="python"))


def _mbpp_grade(records, ids, grouped: Grouped, chat: bool, ctx: GradeContext) -> Graded:
    items, programs = [], []
    for record, rid in zip(records, ids, strict=True):
        for completion in grouped.get(rid, []):
            code = extract_code(completion) if chat else extract_mbpp_code(completion)
            items.append((rid, code))
            programs.append(mbpp_program(record, code))
    rows = _code_rows(items, programs, ctx)
    return pass_summary(_counts(rows, "passed")), rows


_SHOTS: dict[Path, list[Record]] = {}


def _mbpp_base(record: Record, rid: str, data_dir: Path) -> GenRequest:
    if data_dir not in _SHOTS:
        _SHOTS[data_dir] = mbpp_shots(data_dir)
    return GenRequest(rid, prompt=mbpp_prompt(record, _SHOTS[data_dir]))


def _mbpp_chat(record: Record, rid: str) -> GenRequest:
    tests = "\n".join(record["test_list"])
    user = f"{record['text']} Your code should pass these tests:\n\n{tests}"
    return GenRequest(rid, messages=chat_messages(user, system="python"))


HUMANEVAL = GenTask(
    name="humaneval",
    load=load_humaneval,
    id_of=lambda r, i: str(r["task_id"]),
    base_request=lambda r, rid, d: GenRequest(rid, prompt=r["prompt"]),
    chat_request=_humaneval_chat,
    grade=_humaneval_grade,
    reference=lambda r: (r["prompt"], r["canonical_solution"]),
    base_sampling=SamplingParams(max_new_tokens=512, stop_strings=HUMANEVAL_STOPS),
)

MBPP = GenTask(
    name="mbpp",
    load=lambda d: load_mbpp(d, split="test"),
    id_of=lambda r, i: str(r["task_id"]),
    base_request=_mbpp_base,
    chat_request=_mbpp_chat,
    grade=_mbpp_grade,
    reference=lambda r: (_mbpp_chat(r, "").messages[-1]["content"] + "\n", r["code"]),
    base_sampling=SamplingParams(max_new_tokens=512, stop_strings=("[DONE]",)),
)
