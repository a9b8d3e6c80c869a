"""Math answer extraction and grading (MATH500, GSM8K, AIME).

Extraction follows the reference evaluation order: last ``\\boxed{}`` / ``\\fbox{}``
(brace-matched), else "the answer is X", else the last number in the text.
Grading uses ``math_verify`` as the primary judge and a sympy equivalence check as a
second opinion, both run in worker processes (math-verify relies on ``signal.alarm``)
with a hard per-item timeout enforced by killing and recreating the pool.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

_BOX_CMDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(r"the answer is[:\s]*(.+?)\s*$", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _match_braces(text: str, start: int) -> str | None:
    """Return the content of the brace group opening at ``text[start] == '{'``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, ``\\boxed X`` or ``\\fbox{...}`` in ``text``."""
    pos = max(text.rfind(cmd) for cmd in _BOX_CMDS)
    if pos < 0:
        return None
    cmd = "\\boxed" if text.startswith("\\boxed", pos) else "\\fbox"
    rest = pos + len(cmd)
    if rest < len(text) and text[rest] == "{":
        return _match_braces(text, rest)
    if rest < len(text) and text[rest] == " ":
        match = re.match(r"\s*([^\s$]+)", text[rest:])
        return match.group(1).rstrip(".") if match else None
    return None


def _clean_number(num: str) -> str:
    """Remove thousands separators from a number string."""
    return num.replace(",", "")


def extract_answer(text: str) -> str | None:
    """Extract the final answer: last boxed, else "the answer is X", else last number."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    lines = [ln for ln in text.splitlines() if re.search("the answer is", ln, re.IGNORECASE)]
    if lines:
        tail = re.split("the answer is", lines[-1], flags=re.IGNORECASE)[-1]
        match = _ANSWER_IS.search("the answer is" + tail)
        if match:
            ans = match.group(1).strip().rstrip(".").strip().strip("$").strip()
            if ans:
                return ans
    numbers = [n.rstrip(",") for n in _NUMBER.findall(text)]
    return _clean_number(numbers[-1]) if numbers else None


def gsm8k_gold(answer_field: str) -> str:
    """GSM8K gold answer: the text after ``####`` with commas removed."""
    return _clean_number(answer_field.split("####")[-1].strip())


def math_gold(solution: str) -> str | None:
    """MATH gold answer from a ``solution`` field: its last boxed expression."""
    return last_boxed(solution)


_STRIP_TOKENS = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "^\\circ", "^{\\circ}", "\\%", "$")


def normalize_answer(ans: str) -> str:
    """Light string normalisation for simple comparisons."""
    s = ans.strip()
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\mbox\{\s*([^{}]*)\}", r"\1", s)
    for tok in _STRIP_TOKENS:
        s = s.replace(tok, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)
    s = s.replace(" ", "").rstrip(".")
    if re.fullmatch(r"-?\d+\.\d*", s):
        s = s.rstrip("0").rstrip(".")
    return s


def _to_sympy(ans: str):
    """Parse an answer with latex2sympy2_extended, falling back to ``sympy.sympify``."""
    import sympy
    from latex2sympy2_extended import latex2sympy

    try:
        return latex2sympy(ans)
    except Exception:
        pass
    try:
        return sympy.sympify(ans.replace("^", "**"))
    except Exception:
        return None


def sympy_equal(gold: str, pred: str) -> bool | None:
    """Sympy equivalence of two answers; ``None`` when either side is unparseable."""
    import sympy

    g_norm, p_norm = normalize_answer(gold), normalize_answer(pred)
    if g_norm == p_norm:
        return True
    a, b = _to_sympy(g_norm), _to_sympy(p_norm)
    if a is None or b is None:
        return None
    try:
        if a == b:
            return True
        diff = sympy.simplify(a - b)
        if diff == 0:
            return True
        val = complex(sympy.N(diff))
        scale = max(1.0, abs(complex(sympy.N(a))))
        return abs(val) <= 1e-9 * scale
    except Exception:
        return False


def _wrap(ans: str) -> str:
    """Wrap a bare answer as ``\\boxed{...}`` for math-verify parsing."""
    return f"\\boxed{{{ans.strip().strip('$').strip()}}}"


def grade_pair(gold: str, prediction: str, timeout_s: int = 5) -> dict:
    """Worker entry: extract and judge one pair with math-verify and sympy."""
    from math_verify import parse, verify

    out: dict = {"correct": False, "sympy": None, "extracted": None, "error": None}
    extracted = extract_answer(prediction)
    out["extracted"] = extracted
    if extracted is None:
        return out
    try:
        gold_parsed = parse(_wrap(gold), parsing_timeout=timeout_s)
        pred_parsed = parse(_wrap(extracted), parsing_timeout=timeout_s)
        out["correct"] = bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))
    except Exception as exc:
        out["error"] = f"math_verify: {type(exc).__name__}: {exc}"[:300]
    try:
        out["sympy"] = sympy_equal(gold, extracted)
    except Exception as exc:
        out["error"] = f"sympy: {type(exc).__name__}: {exc}"[:300]
    return out


@dataclass
class Verdict:
    """Grading outcome for one sample; ``correct`` is math-verify's judgement."""

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


def _failed(pred: str, timeout: bool, error: str) -> Verdict:
    """Verdict for an item that timed out or crashed its worker."""
    return Verdict(False, None, False, extract_answer(pred), timeout, error)


def _warmup() -> bool:
    """Import heavy modules in a worker."""
    import math_verify  # noqa: F401
    import sympy  # noqa: F401

    return True


class MathJudge:
    """Process-pool judge with a hard per-item timeout (hung workers are killed)."""

    def __init__(self, workers: int = 2, timeout_s: float = 10.0, context: str = "spawn") -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self._ctx = mp.get_context(context)
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        """Return the live pool, creating (and warming) it if needed."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._ctx)
            for fut in [self._pool.submit(_warmup) for _ in range(self.workers)]:
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

    def judge(self, gold: str, prediction: str) -> Verdict:
        """Judge a single (gold, prediction) pair."""
        return self.judge_many([(gold, prediction)])[0]

    def judge_many(self, pairs: list[tuple[str, str]]) -> list[Verdict]:
        """Judge (gold, prediction) pairs; at most ``workers`` items run at once."""
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
                inflight[pool.submit(grade_pair, gold, pred, inner)] = (idx, time.monotonic())
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
                        results[idx] = _failed(pairs[idx][1], False, "worker died")
                    else:
                        todo.append(idx)
                except Exception as exc:
                    results[idx] = _failed(pairs[idx][1], False, f"{type(exc).__name__}: {exc}"[:300])
            now = time.monotonic()
            expired = [f for f, (_, t0) in inflight.items() if now - t0 >= self.timeout_s]
            if expired or broken:
                for fut in expired:
                    idx, _ = inflight.pop(fut)
                    results[idx] = _failed(pairs[idx][1], True, "timeout")
                todo.extend(idx for idx, _ in inflight.values())
                inflight.clear()
                self._kill_pool()
        return [r for r in results if r is not None]
