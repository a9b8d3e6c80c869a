"""Tests for math answer extraction and grading."""

from __future__ import annotations

import json
import time

import pytest

from helpers import SHARED_DATA
from mobilellm_r1.eval.math_grading import (
    MathJudge,
    extract_answer,
    gsm8k_gold,
    math_gold,
    normalize_answer,
    sympy_equal,
)

DATA = SHARED_DATA / "eval"


def _rows(name: str) -> list[dict]:
    path = DATA / name / "test.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def judge():
    with MathJudge(workers=2, timeout_s=10.0) as j:
        yield j


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"first \boxed{3} then \boxed{\frac{a}{\sqrt{b^{2}}}}", r"\frac{a}{\sqrt{b^{2}}}"),
        (r"\boxed{1} and finally \boxed{7}.", "7"),
        (r"Hence \boxed 5", "5"),
        (r"\fbox{x^{2}}", "x^{2}"),
        ("Thus, the answer is 42.", "42"),
        ("So THE ANSWER IS $\\frac{3}{4}$.", r"\frac{3}{4}"),
        ("we got 1,234 and then 12,345,678 eggs", "12345678"),
        ("temperature fell to -17 degrees", "-17"),
        ("it costs 3.75 dollars, i.e. 4 rounded... no: 2.5", "2.5"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_boxed_takes_precedence_over_answer_is() -> None:
    assert extract_answer(r"The answer is 3. Actually \boxed{4}. 99") == "4"
    # issue 17: "The answer is X." ends at the sentence's full stop (was "3. Later 99")
    assert extract_answer("The answer is 3. Later 99") == "3"


def test_gsm8k_gold_real_lines() -> None:
    rows = _rows("gsm8k")
    assert gsm8k_gold(rows[0]["answer"]) == "18"
    golds = [gsm8k_gold(r["answer"]) for r in rows]
    assert len(golds) == 1319
    assert all(g.lstrip("-").replace(".", "").isdigit() for g in golds)
    assert gsm8k_gold("so\n#### 1,000") == "1000"


def test_math_gold_from_solution() -> None:
    rows = _rows("math500")
    assert sum(math_gold(r["solution"]) == r["answer"] for r in rows) == len(rows)


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        (r"$\left( 3, \frac{\pi}{2} \right)$", r"(3,\frac{\pi}{2})"),
        (r"90^\circ", "90"),
        (r"\text{Evelyn}", "Evelyn"),
        (r"\dfrac12", r"\frac{1}{2}"),
        ("1,000.", "1000"),
        ("0.50", "0.5"),
    ],
)
def test_normalize_answer(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm


def test_sympy_equal() -> None:
    assert sympy_equal(r"\frac{1}{2}", "0.50") is True
    assert sympy_equal(r"2\sqrt{2}", r"\sqrt{8}") is True
    assert sympy_equal("1450000", "1450001") is False
    assert sympy_equal("3", "4") is False


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        (r"\frac{1}{2}", r"\boxed{0.5}"),
        (r"\frac12", r"\boxed{\dfrac{1}{2}}"),
        (r"2\sqrt{2}", r"so \boxed{\sqrt{8}}"),
        (r"10^\circ", r"\boxed{10}"),
        ("(1,2)", r"\boxed{(1, 2)}"),
        (r"[1,2)", r"\boxed{[1,2)}"),
        ("1000", "The answer is 1,000."),
        ("-3", "we find x = -3"),
    ],
)
def test_judge_equivalent(judge: MathJudge, gold: str, pred: str) -> None:
    v = judge.judge(gold, pred)
    assert v.correct and not v.timeout and not v.disagree, v


@pytest.mark.parametrize(
    ("gold", "pred"),
    [("3", r"\boxed{4}"), (r"\frac{1}{2}", r"\boxed{0.51}"), ("(1,2)", r"\boxed{(2,1)}"), ("7", "no answer")],
)
def test_judge_wrong(judge: MathJudge, gold: str, pred: str) -> None:
    assert not judge.judge(gold, pred).correct


def _self_and_perturbed(judge: MathJudge, golds: list[str]) -> None:
    same = judge.judge_many([(g, f"\\boxed{{{g}}}") for g in golds])
    assert sum(v.correct for v in same) == len(golds)
    assert not any(v.disagree or v.timeout for v in same)
    pert = judge.judge_many([(g, p) for g in golds for p in (f"\\boxed{{{g}+1}}", r"\boxed{-987654.25}")])
    assert sum(not v.correct for v in pert) == 2 * len(golds)
    assert not any(v.disagree or v.timeout for v in pert)


def test_math500_gold_self_consistency(judge: MathJudge) -> None:
    _self_and_perturbed(judge, [r["answer"] for r in _rows("math500")])


def test_gsm8k_gold_self_consistency(judge: MathJudge) -> None:
    _self_and_perturbed(judge, [gsm8k_gold(r["answer"]) for r in _rows("gsm8k")])


def test_aime24_gold_self_consistency(judge: MathJudge) -> None:
    _self_and_perturbed(judge, [str(r["answer"]) for r in _rows("aime24")])


def test_pathological_input_times_out_and_pool_recovers() -> None:
    with MathJudge(workers=2, timeout_s=3.0) as j:
        start = time.monotonic()
        pairs = [("5", r"\boxed{10^{10^{10^{10}}}}"), ("7", r"\boxed{7}"), ("8", r"\boxed{8}")]
        verdicts = j.judge_many(pairs)
        assert time.monotonic() - start < 30
        assert verdicts[0].timeout and not verdicts[0].correct
        assert [v.correct for v in verdicts[1:]] == [True, True]
        assert j.judge("1", r"\boxed{1}").correct


def test_pool_recreated_after_worker_death() -> None:
    import os
    import signal

    with MathJudge(workers=2, timeout_s=10.0) as j:
        assert j.judge("1", r"\boxed{1}").correct
        os.kill(next(iter(j._pool._processes)), signal.SIGKILL)
        verdicts = j.judge_many([(str(i), f"\\boxed{{{i}}}") for i in range(10)])
        assert all(v.correct for v in verdicts)
