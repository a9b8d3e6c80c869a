"""Math answer grading (MATH500, GSM8K, AIME): extraction, equivalence, and the judge pool.

Extraction follows the task's answer protocol (:mod:`.answer_extraction`); equivalence is
math-verify on LaTeX-only parses plus number words, units and text answers
(:mod:`.answer_equivalence`), with a sympy check as a second opinion. No step evaluates answer
text as code, and each worker installs a guard that makes sympy's string evaluator refuse
anything but a number literal, so a completion cannot run code in, or alter, the worker that
grades it. Workers run with a memory cap and a hard per-item timeout enforced by killing and
recreating the pool (math-verify's own timeouts rely on ``signal.alarm``).
"""

from __future__ import annotations

import importlib.metadata
import multiprocessing as mp
import resource
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from .answer_equivalence import (
    equivalent,
    install_parser_guard,
    normalize_answer,
    parser_guard_installed,
    sympy_equal,
)
from .answer_extraction import PROTOCOLS, extract_answer, gsm8k_gold, last_boxed, math_gold

__all__ = [
    "PROTOCOLS",
    "MathJudge",
    "Verdict",
    "extract_answer",
    "grade_pair",
    "gsm8k_gold",
    "last_boxed",
    "math_gold",
    "normalize_answer",
    "sympy_equal",
]

WORKER_MEMORY_BYTES = 4 << 30  # address-space cap of a judge worker (a huge matrix fails, not the host)


def grade_pair(gold: str, prediction: str, timeout_s: int = 5, protocol: str = "auto") -> dict:
    """Worker entry: extract and judge one pair (``correct``), with sympy's second opinion."""
    out: dict = {"correct": False, "sympy": None, "extracted": None, "error": None}
    if not parser_guard_installed():
        raise RuntimeError("judge worker lost its parser guard; refusing to grade")
    extracted = extract_answer(prediction, protocol)
    out["extracted"] = extracted
    if extracted is None:
        return out
    try:
        out["correct"] = equivalent(gold, extracted, timeout_s)
    except Exception as exc:
        out["error"] = f"equivalence: {type(exc).__name__}: {exc}"[:300]
    try:
        out["sympy"] = sympy_equal(gold, extracted)
    except Exception as exc:
        out["error"] = f"sympy: {type(exc).__name__}: {exc}"[:300]
    return out


@dataclass
class Verdict:
    """Grading outcome for one sample; ``correct`` is the judge's verdict, ``sympy`` the second
    opinion (None when sympy cannot parse a side) and ``disagree`` whether the two differ."""

    correct: bool
    sympy: bool | None
    disagree: bool
    extracted: str | None
    timeout: bool = False
    error: str | None = None


def _make_verdict(res: dict) -> Verdict:
    """Build a Verdict from a worker result dict."""
    disagree = res["sympy"] is not None and res["sympy"] != res["correct"]
    return Verdict(res["correct"], res["sympy"], disagree, res["extracted"], False, res["error"])


def _failed(pred: str, protocol: str, timeout: bool, error: str) -> Verdict:
    """Verdict for an item that timed out or crashed its worker."""
    return Verdict(False, None, False, extract_answer(pred, protocol), timeout, error)


def _init_worker() -> None:
    """Worker setup: cap its memory, import the parsers, guard sympy's string evaluator."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(hard, WORKER_MEMORY_BYTES)
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    import math_verify  # noqa: F401
    import sympy  # noqa: F401

    install_parser_guard()


def _ready() -> bool:
    """A no-op task that returns once a worker has run its initializer."""
    return parser_guard_installed()


# math-verify's LaTeX parser (latex2sympy2_extended) ships ANTLR parsers for runtimes 4.9, 4.11 and
# 4.13, but its 4.9 one is older than its grammar code and misreads answers (e.g. "25%"). ExecuTorch
# depends on hydra-core, which pins antlr4-python3-runtime 4.9, so installing `.[deploy]` breaks
# grading silently unless 4.13 is reinstalled afterwards (the README's test command does).
BROKEN_ANTLR = "4.9"


def check_latex_parser() -> None:
    """RuntimeError, with the fix, when the installed ANTLR runtime breaks math-verify's parser."""
    try:
        version = importlib.metadata.version("antlr4-python3-runtime")
    except importlib.metadata.PackageNotFoundError:
        return  # math-verify brings its own pinned runtime when it is installed normally
    if version.startswith(BROKEN_ANTLR + "."):
        raise RuntimeError(
            f"antlr4-python3-runtime {version} is installed (executorch's hydra-core pins 4.9), and "
            "math-verify's LaTeX parser misreads answers with it; run "
            "`pip install antlr4-python3-runtime==4.13.2` (hydra's own pytest plugin then needs "
            "`-p no:hydra_pytest`, which this project's pytest settings pass)"
        )


class MathJudge:
    """Process-pool judge with a hard per-item timeout (hung workers are killed)."""

    def __init__(self, workers: int = 2, timeout_s: float = 10.0, context: str = "spawn") -> None:
        check_latex_parser()
        self.workers = workers
        self.timeout_s = timeout_s
        self._ctx = mp.get_context(context)
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        """Return the live pool, creating (and warming) it if needed."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_init_worker)
            for fut in [self._pool.submit(_ready) for _ in range(self.workers)]:
                fut.result()
        return self._pool

    def _kill_pool(self) -> None:
        """Kill all worker processes and drop the pool."""
        if self._pool is None:
            return
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        for proc in procs:
            proc.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.join(timeout=5)
        self._pool = None

    def close(self) -> None:
        """Shut down the worker pool."""
        self._kill_pool()

    def __enter__(self) -> MathJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def judge(self, gold: str, prediction: str, protocol: str = "auto") -> Verdict:
        """Judge a single (gold, prediction) pair."""
        return self.judge_many([(gold, prediction)], protocol)[0]

    def judge_many(self, pairs: list[tuple[str, str]], protocol: str = "auto") -> list[Verdict]:
        """Judge (gold, prediction) pairs, extracting answers under ``protocol`` (see
        :mod:`.answer_extraction`); at most ``workers`` items run at once."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown answer protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
        results: list[Verdict | None] = [None] * len(pairs)
        todo = list(range(len(pairs)))[::-1]
        retries: dict[int, int] = {}
        inflight: dict[Future, tuple[int, float]] = {}
        inner = max(1, int(self.timeout_s / 2))
        while todo or inflight:
            pool = self._get_pool()
            while todo and len(inflight) < self.workers:
                idx = todo.pop()
                gold, pred = pairs[idx]
                inflight[pool.submit(grade_pair, gold, pred, inner, protocol)] = (idx, time.monotonic())
            first_deadline = min(t0 for _, t0 in inflight.values()) + self.timeout_s
            done, _ = wait(
                inflight, timeout=max(0.0, first_deadline - time.monotonic()), return_when=FIRST_COMPLETED
            )
            broken = False
            for fut in done:
                idx, _ = inflight.pop(fut)
                try:
                    results[idx] = _make_verdict(fut.result())
                except BrokenProcessPool:
                    broken = True
                    retries[idx] = retries.get(idx, 0) + 1
                    if retries[idx] > 1:
                        results[idx] = _failed(pairs[idx][1], protocol, False, "worker died")
                    else:
                        todo.append(idx)
                except Exception as exc:
                    results[idx] = _failed(
                        pairs[idx][1], protocol, False, f"{type(exc).__name__}: {exc}"[:300]
                    )
            now = time.monotonic()
            expired = [f for f, (_, t0) in inflight.items() if now - t0 >= self.timeout_s]
            if expired or broken:
                for fut in expired:
                    idx, _ = inflight.pop(fut)
                    results[idx] = _failed(pairs[idx][1], protocol, True, "timeout")
                todo.extend(idx for idx, _ in inflight.values())
                inflight.clear()
                self._kill_pool()
        return [r for r in results if r is not None]
