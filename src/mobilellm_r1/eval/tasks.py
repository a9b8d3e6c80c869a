"""The task registry: every benchmark by name, with its protocol for base and post-trained models.

Two kinds of task:

- **generation** (:class:`GenTask`): build a request per record, sample completions, grade them.
  ``gsm8k math500 aime24 aime25`` (math judge), ``humaneval mbpp livecodebench`` (sandboxed
  execution). Each has a *base* protocol (the paper's base-model table: few-shot, greedy) and a
  *chat* protocol (its post-trained table: 0-shot chat template, temperature 0.6, top-p 0.95,
  long generations, answers in ``\\boxed{}``).
- **log-likelihood** (:mod:`mobilellm_r1.eval.choice_tasks`): ``mmlu`` and the commonsense tasks.

Every generation task also has a reference text per record (gold solution) for the per-token
NLL mode that the trainer calls periodically (the paper's Fig. 7 perplexity tracking).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..deploy.sampling import SamplingParams
from ..tokenizer import chat_messages
from . import code_tasks, livecodebench, math_tasks, metrics
from .code_check import CodeCheck
from .engines import GenRequest
from .math_grading import MathJudge
from .sandbox import ExecResult

Record = dict[str, Any]
Grouped = dict[str, list[str]]  # record id -> completions (n samples)
Graded = tuple[dict[str, float], list[dict[str, Any]]]  # summary, per-sample rows

# Sampling of the paper's post-trained evaluation (MobileLLM-R1 model card).
CHAT_SAMPLING = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=32768)
HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # Codex paper (Chen et al. 2021)


def pass_summary(counts: list[tuple[int, int]]) -> dict[str, float]:
    """:func:`metrics.pass_summary` plus the number of problems scored."""
    return metrics.pass_summary(counts) | {"n_problems": float(len(counts))}


@dataclass
class GradeContext:
    """What graders may need: the math judge and code-execution settings."""

    judge: MathJudge | None = None
    workers: int = 2
    timeout_s: float = 10.0


@dataclass(frozen=True)
class GenTask:
    """A generation benchmark (see module docstring)."""

    name: str
    load: Callable[[Path], list[Record]]
    id_of: Callable[[Record, int], str]
    base_request: Callable[[Record, str, Path], GenRequest]
    chat_request: Callable[[Record, str], GenRequest]
    grade: Callable[[list[Record], list[str], Grouped, bool, GradeContext], Graded]
    reference: Callable[[Record], tuple[str, str] | None]  # (context, gold solution) for NLL
    base_sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=512))
    chat_n: int = 1
    chat_only: bool = False  # the paper evaluates it on post-trained models only

    def sampling(self, chat: bool) -> SamplingParams:
        """The protocol's default sampling (``--n`` / ``--max-new-tokens`` override it)."""
        if chat or self.chat_only:
            return replace(CHAT_SAMPLING, n=self.chat_n)
        return self.base_sampling

    def request(self, record: Record, index: int, chat: bool, data_dir: Path) -> GenRequest:
        rid = self.id_of(record, index)
        if chat or self.chat_only:
            return self.chat_request(record, rid)
        return self.base_request(record, rid, data_dir)


# ------------------------------------------------------------------------------ math
def _math_task(name: str, base_max_new: int, stops: tuple[str, ...], chat_n: int, chat_only: bool) -> GenTask:
    task = math_tasks.get_task(name)

    def grade(records: list[Record], ids: list[str], grouped: Grouped, chat: bool, ctx: GradeContext):
        if ctx.judge is None:
            raise ValueError("math grading needs GradeContext.judge (a MathJudge)")
        preds = [{"id": rid, "completion": c} for rid, comps in grouped.items() for c in comps]
        result = math_tasks.score_predictions(task, records, preds, ctx.judge, chat)
        rows, scored = result.pop("per_sample"), result.pop("n_problems_scored")
        del result["missing"]
        return result | {"n_problems": float(scored)}, rows

    def reference(record: Record) -> tuple[str, str] | None:
        solution = record.get("answer") if name == "gsm8k" else record.get("solution")
        if not solution:
            return None  # e.g. AIME'25 ships answers only
        return f"Problem:\n{math_tasks.problem_text(record)}\n\nSolution:\n", str(solution)

    return GenTask(
        name=name,
        load=lambda d: task.records(d),
        id_of=lambda r, i: task.record_id(r, i),
        base_request=lambda r, rid, d: GenRequest(rid, prompt=task.base_prompt(r)),
        chat_request=lambda r, rid: GenRequest(rid, messages=task.chat_messages(r)),
        grade=grade,
        reference=reference,
        base_sampling=SamplingParams(max_new_tokens=base_max_new, stop_strings=stops),
        chat_n=chat_n,
        chat_only=chat_only,
    )


def _counts(rows: list[dict[str, Any]], key: str) -> list[tuple[int, int]]:
    """(samples, correct) per id, in first-seen order."""
    tally: dict[str, list[int]] = {}
    for row in rows:
        n_c = tally.setdefault(str(row["id"]), [0, 0])
        n_c[0] += 1
        n_c[1] += int(bool(row[key]))
    return [(n, c) for n, c in tally.values()]


# ------------------------------------------------------------------------------ code
def _code_rows(
    items: list[tuple[str, str]], checks: list[CodeCheck], ctx: GradeContext
) -> list[dict[str, Any]]:
    """Run one check per (id, extracted code) item -> per-sample rows."""
    results: list[ExecResult] = code_tasks.run_code_checks(
        checks, timeout_s=ctx.timeout_s, workers=ctx.workers
    )
    return [
        {"id": rid, "extracted": code, "passed": r.status == "ok", "status": r.status}
        | ({"stderr": r.stderr[-300:]} if r.status != "ok" else {})
        for (rid, code), r in zip(items, results, strict=True)
    ]


def _humaneval_grade(records, ids, grouped, chat, ctx) -> Graded:
    items, programs = [], []
    for record, rid in zip(records, ids, strict=True):
        for completion in grouped.get(rid, []):
            if chat:
                code = livecodebench.extract_code(completion)
                defines = f"def {record['entry_point']}" in code
                program = code_tasks.humaneval_program(record, code, after_prompt=not defines)
            else:
                code = completion
                program = code_tasks.humaneval_program(record, completion)
            items.append((rid, code))
            programs.append(program)
    rows = _code_rows(items, programs, ctx)
    return pass_summary(_counts(rows, "passed")), rows


def _humaneval_chat(record: Record, rid: str) -> GenRequest:
    user = f"Complete the following Python function.\n```python\n{record['prompt']}```"
    return GenRequest(rid, messages=chat_messages(user, system="python"))


def _mbpp_grade(records, ids, grouped, chat, ctx) -> Graded:
    items, programs = [], []
    for record, rid in zip(records, ids, strict=True):
        for completion in grouped.get(rid, []):
            code = (
                livecodebench.extract_code(completion) if chat else code_tasks.extract_mbpp_code(completion)
            )
            items.append((rid, code))
            programs.append(code_tasks.mbpp_program(record, code))
    rows = _code_rows(items, programs, ctx)
    return pass_summary(_counts(rows, "passed")), rows


def _mbpp_base(record: Record, rid: str, data_dir: Path) -> GenRequest:
    return GenRequest(rid, prompt=code_tasks.mbpp_prompt(record, _mbpp_shots(data_dir)))


_SHOTS: dict[Path, list[Record]] = {}


def _mbpp_shots(data_dir: Path) -> list[Record]:
    if data_dir not in _SHOTS:
        _SHOTS[data_dir] = code_tasks.mbpp_shots(data_dir)
    return _SHOTS[data_dir]


def _mbpp_chat(record: Record, rid: str) -> GenRequest:
    tests = "\n".join(record["test_list"])
    user = f"{record['text']} Your code should pass these tests:\n\n{tests}"
    return GenRequest(rid, messages=chat_messages(user, system="python"))


def _lcb_grade(records, ids, grouped, chat, ctx) -> Graded:
    return livecodebench.grade(records, grouped, workers=ctx.workers)


TASKS: dict[str, GenTask] = {
    "gsm8k": _math_task("gsm8k", 256, ("Q:", "\n\n\n"), chat_n=1, chat_only=False),
    "math500": _math_task("math500", 512, ("Problem:",), chat_n=1, chat_only=False),
    "aime24": _math_task("aime24", 1024, ("Problem:",), chat_n=64, chat_only=True),
    "aime25": _math_task("aime25", 1024, ("Problem:",), chat_n=64, chat_only=True),
    "humaneval": GenTask(
        name="humaneval",
        load=code_tasks.load_humaneval,
        id_of=lambda r, i: str(r["task_id"]),
        base_request=lambda r, rid, d: GenRequest(rid, prompt=r["prompt"]),
        chat_request=_humaneval_chat,
        grade=_humaneval_grade,
        reference=lambda r: (r["prompt"], r["canonical_solution"]),
        base_sampling=SamplingParams(max_new_tokens=512, stop_strings=HUMANEVAL_STOPS),
    ),
    "mbpp": GenTask(
        name="mbpp",
        load=lambda d: code_tasks.load_mbpp(d, split="test"),
        id_of=lambda r, i: str(r["task_id"]),
        base_request=_mbpp_base,
        chat_request=_mbpp_chat,
        grade=_mbpp_grade,
        reference=lambda r: (_mbpp_chat(r, "").messages[-1]["content"] + "\n", r["code"]),
        base_sampling=SamplingParams(max_new_tokens=512, stop_strings=("[DONE]",)),
    ),
    "livecodebench": GenTask(
        name="livecodebench",
        load=lambda d: livecodebench.load_livecodebench(d),
        id_of=lambda r, i: str(r["question_id"]),
        base_request=lambda r, rid, d: GenRequest(rid, messages=livecodebench.lcb_messages(r)),
        chat_request=lambda r, rid: GenRequest(rid, messages=livecodebench.lcb_messages(r)),
        grade=_lcb_grade,
        reference=lambda r: None,
        chat_n=16,
        chat_only=True,
    ),
}


def get_task(name: str) -> GenTask:
    """A generation task by name (ValueError lists the known ones)."""
    if name not in TASKS:
        raise ValueError(f"unknown generation task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]
