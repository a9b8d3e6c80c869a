"""What a generation benchmark is: :class:`GenTask`, the protocols it samples under, and how it is graded.

A generation task builds a request per record, samples completions, and grades them:
``gsm8k math500 aime24 aime25`` (math judge, :mod:`~mobilellm_r1.eval.math_tasks`),
``humaneval mbpp`` (:mod:`~mobilellm_r1.eval.code_tasks`) and ``livecodebench``
(:mod:`~mobilellm_r1.eval.livecodebench`; sandboxed execution). Each has a *base* protocol
(the paper's base-model table: few-shot, greedy) and a *chat* protocol (its post-trained table:
0-shot chat template, temperature 0.6, top-p 0.95, long generations, answers in ``\\boxed{}``).
Log-likelihood tasks are :class:`~mobilellm_r1.eval.choice_tasks.ChoiceTask`; both kinds are
listed by name in :mod:`~mobilellm_r1.eval.registry`.

Every generation task also has a reference text per record (gold solution) for the per-token
NLL mode that the trainer calls periodically (the paper's Fig. 7 perplexity tracking).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..deploy.sampling import SamplingParams
from . import metrics
from .engines import GenRequest
from .math_grading import MathJudge

Record = dict[str, Any]
Grouped = dict[str, list[str]]  # record id -> completions (n samples)
Graded = tuple[dict[str, float], list[dict[str, Any]]]  # summary, per-sample rows

# Sampling of the paper's post-trained evaluation (MobileLLM-R1 model card).
CHAT_SAMPLING = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=32768)


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
