"""Math evaluation tasks: GSM8K, MATH500, AIME'24 and AIME'25.

Each :class:`MathTask` knows how to load its records, where the problem id and gold answer
live, and how to build a few-shot prompt (base models) or a 0-shot chat (post-trained models).
:func:`score_predictions` grades completions with a :class:`~mobilellm_r1.eval.math_grading.MathJudge`,
reading each answer where the prompt asked for it (:meth:`MathTask.answer_protocol`).
:func:`generation_task` wraps a :class:`MathTask` as the :class:`MathGenTask` that the runner
samples; :data:`GSM8K`, :data:`MATH500`, :data:`AIME24` and :data:`AIME25` are listed in
:mod:`~mobilellm_r1.eval.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilellm_r1.data.records import read_jsonl
from mobilellm_r1.deploy.sampling import SamplingParams
from mobilellm_r1.eval.engines import GenRequest
from mobilellm_r1.eval.math_grading import MathJudge, gsm8k_gold, math_gold
from mobilellm_r1.eval.metrics import pass_summary
from mobilellm_r1.eval.tasks import GenTask, GradeContext, Graded, Grouped, Record
from mobilellm_r1.tokenizer import chat_messages as _chat

# The 8 chain-of-thought exemplars for GSM8K from Wei et al. 2022, "Chain-of-Thought Prompting
# Elicits Reasoning in Large Language Models", Appendix Table 20 (as used by lm-evaluation-harness
# `gsm8k_cot`).
GSM8K_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
        "After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. "
        "So there must have been 21 - 15 = 6. The answer is 6.",
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have "
        "left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. "
        "After eating 35, they had 74 - 35 = 39. The answer is 39.",
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. "
        "How many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. "
        "So he gave Denny 20 - 12 = 8. The answer is 8.",
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. "
        "How many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more "
        "toys. 5 + 4 = 9. The answer is 9.",
    ),
    (
        "There were nine computers in the server room. Five more computers were installed each day, "
        "from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. "
        "So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.",
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. "
        "How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
        "After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. "
        "So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.",
    ),
)

# The 4 fixed Minerva exemplars for MATH from Lewkowycz et al. 2022, "Solving Quantitative
# Reasoning Problems with Language Models", Appendix D.2 (as used by lm-evaluation-harness
# `minerva_math`).
MATH_EXEMPLARS: tuple[tuple[str, str, str], ...] = (
    (
        "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.}",
        "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, "
        "so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to "
        "zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is "
        "$\\boxed{[2,5)}$.",
        "[2,5)",
    ),
    (
        "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find "
        "$\\det (\\mathbf{A} \\mathbf{B}).$",
        "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) "
        "= (2)(12) = \\boxed{24}.$",
        "24",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights "
        "instead, how many times must Terrell lift them in order to lift the same total weight?",
        "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ "
        "pounds of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a "
        "total of $2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can "
        "solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n"
        "\\end{align*}",
        "16",
    ),
    (
        "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}"
        "has a solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming "
        "$b$ is nonzero.",
        "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$"
        "Since we also know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}="
        "\\boxed{-\\frac{2}{3}}.$$",
        "-\\frac{2}{3}",
    ),
)


def gsm8k_prompt(record: Record) -> str:
    """8-shot chain-of-thought prompt (Wei et al. 2022) ending with the question and ``A:``."""
    shots = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in GSM8K_EXEMPLARS)
    return f"{shots}Q: {record['question']}\nA:"


def math_prompt(record: Record) -> str:
    """4-shot Minerva prompt (Lewkowycz et al. 2022) ending with ``Solution:``."""
    shots = "".join(
        f"Problem:\n{p}\n\nSolution:\n{s}\nFinal Answer: The final answer is ${a}$. I hope it is correct.\n\n"
        for p, s, a in MATH_EXEMPLARS
    )
    return f"{shots}Problem:\n{record['problem']}\n\nSolution:\n"


def zero_shot_prompt(record: Record) -> str:
    """Plain 0-shot prompt for base models on tasks without few-shot exemplars (AIME)."""
    return f"Problem:\n{problem_text(record)}\n\nSolution:\n"


def problem_text(record: Record) -> str:
    """The problem statement of a record (``question`` for GSM8K, ``problem`` otherwise)."""
    return str(record.get("problem", record.get("question", "")))


def math500_gold(record: Record) -> str:
    """MATH gold: the ``answer`` field, else the last ``\\boxed{}`` of the solution."""
    if record.get("answer"):
        return str(record["answer"])
    gold = math_gold(record["solution"])
    if gold is None:
        raise ValueError(f"no boxed answer in solution of {record.get('unique_id')}")
    return gold


@dataclass(frozen=True)
class MathTask:
    """One math benchmark: where its data is, how to identify, grade and prompt a record.

    ``base_protocol`` is where the few-shot prompt's exemplars state the answer (see
    :mod:`~mobilellm_r1.eval.answer_extraction`); the chat protocol asks for ``\\boxed{}``.
    """

    name: str
    id_field: str | None
    gold_fn: Callable[[Record], str]
    prompt_fn: Callable[[Record], str]
    loader: Callable[[Path], list[Record]] = read_jsonl
    base_protocol: str = "auto"

    def records(self, data_dir: Path | str) -> list[Record]:
        """Load ``data_dir/<name>/test.jsonl`` (FileNotFoundError says where to put it)."""
        path = Path(data_dir) / self.name / "test.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.name}: expected its test set at {path} (JSONL, one problem per line)"
            )
        return self.loader(path)

    def record_id(self, record: Record, index: int) -> str:
        """The record's id as a string (the 0-based line index when the task has no id field)."""
        return str(index) if self.id_field is None else str(record[self.id_field])

    def gold(self, record: Record) -> str:
        """The gold answer string."""
        return self.gold_fn(record)

    def base_prompt(self, record: Record) -> str:
        """Few-shot prompt for base (pre-trained) models."""
        return self.prompt_fn(record)

    def answer_protocol(self, chat: bool) -> str:
        """Where a completion states its answer: ``boxed`` for chats, else the prompt's protocol."""
        return "boxed" if chat else self.base_protocol

    def chat_messages(self, record: Record) -> list[dict[str, str]]:
        """0-shot chat for post-trained models: the MobileLLM-R1 math system prompt + the problem."""
        return _chat(problem_text(record), system="math")


def group_predictions(
    task: MathTask, records: list[Record], predictions: list[dict[str, Any]]
) -> dict[str, list[str]]:
    """Map record id -> its completions; an id not among the records raises ValueError."""
    known = {task.record_id(r, i) for i, r in enumerate(records)}
    grouped: dict[str, list[str]] = {}
    for pred in predictions:
        pid = str(pred["id"])
        if pid not in known:
            raise ValueError(f"prediction for unknown id {pid!r} in task {task.name}")
        grouped.setdefault(pid, []).append(str(pred["completion"]))
    return grouped


def score_predictions(
    task: MathTask,
    records: list[Record],
    predictions: list[dict[str, Any]],
    judge: MathJudge,
    chat: bool = False,
) -> dict[str, Any]:
    """Grade ``{"id", "completion"}`` predictions (several per id = n samples) against gold,
    reading answers under ``task.answer_protocol(chat)``.

    pass@1 is the mean over scored problems of the fraction of its samples judged correct;
    ``missing`` counts records without any prediction (they are not in the mean).
    """
    grouped = group_predictions(task, records, predictions)
    items: list[tuple[str, str, str]] = []
    missing = 0
    for i, record in enumerate(records):
        rid = task.record_id(record, i)
        if rid not in grouped:
            missing += 1
            continue
        gold = task.gold(record)
        items.extend((rid, gold, completion) for completion in grouped[rid])
    verdicts = judge.judge_many([(gold, comp) for _, gold, comp in items], task.answer_protocol(chat))
    per_sample, tally = [], {}
    for (rid, gold, _), v in zip(items, verdicts, strict=True):
        n, c = tally.get(rid, (0, 0))
        tally[rid] = (n + 1, c + int(v.correct))
        per_sample.append(
            {"id": rid, "gold": gold, "extracted": v.extracted, "correct": v.correct}
            | {"sympy": v.sympy, "disagree": v.disagree, "timeout": v.timeout, "error": v.error}
        )
    result = pass_summary(list(tally.values()))
    return result | {"n_problems_scored": len(tally), "missing": missing, "per_sample": per_sample}


# ---------------------------------------------------------------------------------------------
# the generation tasks


@dataclass(frozen=True, kw_only=True)
class MathGenTask(GenTask):
    """A math benchmark as a generation task; ``math`` holds its records, gold answers and prompts."""

    math: MathTask


def _grader(task: MathTask):
    def grade(
        records: list[Record], ids: list[str], grouped: Grouped, chat: bool, ctx: GradeContext
    ) -> Graded:
        if ctx.judge is None:
            raise ValueError("math grading needs GradeContext.judge (a MathJudge)")
        preds = [{"id": rid, "completion": c} for rid, comps in grouped.items() for c in comps]
        result = score_predictions(task, records, preds, ctx.judge, chat)
        rows, scored = result.pop("per_sample"), result.pop("n_problems_scored")
        del result["missing"]
        return result | {"n_problems": float(scored)}, rows

    return grade


def _reference(solution_field: str):
    def reference(record: Record) -> tuple[str, str] | None:
        solution = record.get(solution_field)
        if not solution:
            return None  # e.g. AIME'25 ships answers only
        return f"Problem:\n{problem_text(record)}\n\nSolution:\n", str(solution)

    return reference


def generation_task(
    task: MathTask,
    base_max_new: int,
    stops: tuple[str, ...],
    chat_n: int = 1,
    chat_only: bool = False,
    solution_field: str = "solution",
) -> MathGenTask:
    """``task`` sampled and judged: the few-shot base protocol (``base_max_new`` tokens, cut at
    ``stops``) or the chat protocol (``chat_n`` samples; ``chat_only`` for post-trained-only tasks).
    The NLL mode scores the record's ``solution_field`` as the reference solution."""
    return MathGenTask(
        name=task.name,
        load=task.records,
        id_of=task.record_id,
        base_request=lambda r, rid, d: GenRequest(rid, prompt=task.base_prompt(r)),
        chat_request=lambda r, rid: GenRequest(rid, messages=task.chat_messages(r)),
        grade=_grader(task),
        reference=_reference(solution_field),
        base_sampling=SamplingParams(max_new_tokens=base_max_new, stop_strings=stops),
        chat_n=chat_n,
        chat_only=chat_only,
        math=task,
    )


GSM8K = generation_task(
    MathTask("gsm8k", None, lambda r: gsm8k_gold(r["answer"]), gsm8k_prompt, base_protocol="answer_is"),
    256,
    ("Q:", "\n\n\n"),
    solution_field="answer",
)
MATH500 = generation_task(
    MathTask("math500", "unique_id", math500_gold, math_prompt, base_protocol="minerva"), 512, ("Problem:",)
)
AIME24 = generation_task(
    MathTask("aime24", "id", lambda r: str(r["answer"]), zero_shot_prompt), 1024, ("Problem:",), 64, True
)
AIME25 = generation_task(
    MathTask("aime25", "id", lambda r: str(r["answer"]), zero_shot_prompt), 1024, ("Problem:",), 64, True
)
