"""Tests for math answer extraction and grading."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import SHARED_DATA
from mobilellm_r1.eval.answer_equivalence import words_to_number
from mobilellm_r1.eval.answer_pairs import labelled_pairs, number_words
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


# ---------------------------------------------------------------- issue 17: answers stay data
def _payloads(marker: Path) -> list[str]:
    """Python that writes ``marker`` when evaluated (as the old ``sympy.sympify`` fallback did)."""
    m = str(marker)
    return [
        f"open('{m}','w').write('x')",
        f"__import__('os').system('touch {m}')",
        f"(lambda: open('{m}','w').write('x'))()",
        f"__import__('pathlib').Path('{m}').touch()",
        f"().__class__.__base__.__subclasses__() and __import__('os').system('touch {m}')",
    ]


def test_sympify_payloads_were_live_and_are_now_inert(judge: MathJudge, tmp_path: Path) -> None:
    import sympy

    markers = [tmp_path / f"marker{i}" for i in range(5)]
    for marker, payload in zip(markers, [_payloads(m)[i] for i, m in enumerate(markers)], strict=True):
        sympy.sympify(payload)  # the old fallback: the payload runs
        assert marker.exists(), payload
        marker.unlink()
    outputs = [f"$\\boxed{{{p}}}$" for m in markers for p in _payloads(m)]
    outputs += [f"The answer is {p}." for m in markers for p in _payloads(m)]
    for protocol in ("auto", "answer_is"):
        verdicts = judge.judge_many([("1", out) for out in outputs], protocol)
        assert not any(v.correct for v in verdicts)
    assert not any(m.exists() for m in markers)


_PATCH = (  # replaces the worker's equivalence check by one that accepts everything
    "setattr(__import__('mobilellm_r1.eval.math_grading', fromlist=['x']), 'equivalent', "
    "eval('lambda g, p, t: True'))"
)


def test_worker_patch_payload_was_live_and_later_wrong_answers_stay_wrong() -> None:
    import sympy

    from mobilellm_r1.eval import math_grading

    original = math_grading.equivalent
    try:
        sympy.sympify(_PATCH)  # the old fallback would have patched the worker's judge
        assert math_grading.equivalent is not original
    finally:
        math_grading.equivalent = original
    with MathJudge(workers=1, timeout_s=10.0) as j:
        first = j.judge("1", f"\\boxed{{{_PATCH}}}")
        later = j.judge_many([("3", r"\boxed{4}"), (r"\frac{1}{2}", r"\boxed{2}"), ("7", "The answer is 8.")])
    assert not first.correct and not any(v.correct for v in later)


def test_parser_guard_refuses_code_but_keeps_numbers(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    script = f"""
import sympy
from mobilellm_r1.eval.answer_equivalence import UnsafeParseError, install_parser_guard
install_parser_guard()
assert sympy.Number("12") == 12 and sympy.Number("2.5") == 2.5
for payload in {_payloads(marker)!r}:
    try:
        sympy.sympify(payload)
    except UnsafeParseError:
        continue
    raise SystemExit("not refused: " + payload)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not marker.exists()


# ---------------------------------------------------------------- issue 17: answer protocols
@pytest.mark.parametrize(
    ("text", "protocol", "expected"),
    [
        (
            "x = 14/3.\nFinal Answer: The final answer is $\\frac{14}{3}$. I hope it is correct.",
            "minerva",
            r"\frac{14}{3}",
        ),
        (
            "Final Answer: The final answer is $\\text{Evelyn}$. I hope it is correct.",
            "minerva",
            r"\text{Evelyn}",
        ),
        ("The answer is 5.\nFinal Answer: The final answer is $6$. I hope it is correct.", "minerva", "6"),
        ("The answer is 5.\nFinal Answer: The final answer is $6$. I hope it is correct.", "auto", "6"),
        ("\\boxed{2} ... Final Answer: The final answer is $3$. I hope it is correct.", "minerva", "3"),
        ("\\boxed{2} ... Final Answer: The final answer is $3$. I hope it is correct.", "boxed", "2"),
        ("The answer is 17.\nWait, no.\nThe answer is 18.", "answer_is", "18"),
        ("The answer is eighteen.", "answer_is", "eighteen"),
        ("The answer is $1,234.50.", "answer_is", "1,234.50"),
        ("The answer is .5", "answer_is", ".5"),
        ("She makes 18 dollars.\n#### 18", "answer_is", "18"),
        ("So \\boxed{7}. The answer is 8.", "boxed", "7"),
        ("So \\boxed{7}. The answer is 8.", "auto", "8"),
        ("we got 3 and then 4", "auto", "4"),
    ],
)
def test_extraction_protocols(text: str, protocol: str, expected: str) -> None:
    assert extract_answer(text, protocol) == expected


def test_unknown_protocol_is_refused(judge: MathJudge) -> None:
    with pytest.raises(ValueError, match="unknown answer protocol 'minerva2'"):
        judge.judge("1", "1", "minerva2")


@pytest.mark.parametrize(
    ("gold", "output", "protocol", "correct"),
    [
        (
            r"\frac{14}{3}",
            "Final Answer: The final answer is $\\frac{14}{3}$. I hope it is correct.",
            "minerva",
            True,
        ),
        (
            r"\text{Evelyn}",
            "Final Answer: The final answer is $\\text{Evelyn}$. I hope it is correct.",
            "minerva",
            True,
        ),
        (
            r"\text{Evelyn}",
            "Final Answer: The final answer is $\\text{Nevely}$. I hope it is correct.",
            "minerva",
            False,
        ),
        ("18", "The answer is eighteen.", "answer_is", True),
        ("18", "The answer is eighteen dollars.", "answer_is", True),
        ("18", "The answer is nineteen.", "answer_is", False),
        ("125", "The answer is one hundred twenty-five.", "answer_is", True),
        ("18", "The answer is $18.00.", "answer_is", True),
        ("1234", "The answer is 1,234 eggs.", "answer_is", True),
        ("25", "The answer is 25%.", "answer_is", True),
        ("18", "The answer is 18.\nOn second thought:\nThe answer is 19.", "answer_is", False),
        ("-2,1", r"\boxed{1, -2}", "boxed", True),
        ("-2,1", r"\boxed{-21}", "boxed", False),
        (r"15\mbox{ cm}^2", r"\boxed{15}", "boxed", True),
        (
            r"90^\circ",
            "Final Answer: The final answer is $90$ degrees. I hope it is correct.",
            "minerva",
            True,
        ),
        ("5", r"\boxed{5 x}", "boxed", False),
    ],
)
def test_judge_protocols_and_surface_forms(
    judge: MathJudge, gold: str, output: str, protocol: str, correct: bool
) -> None:
    assert judge.judge(gold, output, protocol).correct is correct


def test_number_words_round_trip() -> None:
    assert all(words_to_number(number_words(n)) == n for n in range(0, 1_000_000, 997))
    assert words_to_number("eighteen apples") is None and words_to_number("") is None


def test_labelled_slice_has_no_false_accepts_or_rejects(judge: MathJudge) -> None:
    math500, gsm8k = _rows("math500"), _rows("gsm8k")
    special = [r for r in math500 if re.search(r"\\text|matrix|\[|\\%|\\circ", r["answer"])]
    records = {"math500": math500[::25] + special[::2], "gsm8k": gsm8k[::60]}
    pairs = labelled_pairs(records, seed=1)
    assert len(pairs) > 400 and len({p.category for p in pairs}) >= 25
    for protocol in sorted({p.protocol for p in pairs}):
        subset = [p for p in pairs if p.protocol == protocol]
        verdicts = judge.judge_many([(p.gold, p.output) for p in subset], protocol)
        wrong = [
            (p.category, p.gold, p.output[-80:])
            for p, v in zip(subset, verdicts, strict=True)
            if v.correct != p.correct
        ]
        assert wrong == []


# ------------------------------------------- issue 17 finding 8: held-out grading errors, fixed
@pytest.mark.parametrize(
    ("text", "protocol"),
    [  # strict protocols: no fall back to the last number or to another protocol's marker
        ("we got 3 and then 4", "minerva"),  # the old judge read 4 (the last number)
        ("The angle between the lines is $90^\\circ.$", "boxed"),  # truncated after the gold value
        ("He needs 10/5=2 more cows.\n\nThe answer is $2$.", "boxed"),  # no box under boxed
        ("So a loaf lasts 24/6 = 4 days.\n\\boxed{4}", "answer_is"),  # a box under answer_is
        ("Thus, our final answer is $8000$.", "minerva"),  # not the "Final Answer" line
    ],
)
def test_strict_protocols_read_no_answer_outside_their_slot(text: str, protocol: str) -> None:
    assert extract_answer(text, protocol) is None


def test_minerva_reads_a_boxed_only_answer_and_answer_is_a_hashes_line() -> None:
    assert extract_answer("so it is 3^3=27. Therefore the answer is $\\boxed{27}$.", "minerva") == "27"
    assert extract_answer("She makes 18 dollars.\n#### 18", "answer_is") == "18"


@pytest.mark.parametrize(
    ("gold", "output", "correct"),
    [
        ("90^\\circ", "\\boxed{90°}", True),  # Unicode degree sign (was rejected)
        ("(2,\\infty)", "\\boxed{(2, ∞)}", True),  # Unicode infinity (was rejected)
        ("26000", "\\boxed{2.6 \\times 10^{4}}", True),  # scientific notation (was rejected)
        ("p - q", "\\boxed{-q + p}", True),  # letters-only expression read as words (was rejected)
        ("p - q", "\\boxed{p-q}", True),
        ("p - q", "\\boxed{q - p}", False),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{[3, \\frac{\\pi}{2}]}", False),  # was accepted
        ("(8,-2)", "\\boxed{[8, -2]}", False),  # a closed interval is not the point (was accepted)
        ("(8,-2)", "\\boxed{\\left(8, -2\\right)}", True),
        ("[-2,7]", "\\boxed{[-2, 7]}", True),
        ("(3,4]", "\\boxed{(3, 4]}", True),
        (".0000672", "\\boxed{0.0000673}", False),  # close decimals are not equal (was accepted)
        (".0000672", "\\boxed{0.0000672}", True),
        ("\\frac{1}{3}", "\\boxed{0.3333}", False),
        ("\\frac{3}{4}", "\\boxed{0.75}", True),
        ("\\text{(C)}", "\\boxed{C}", True),
        ("\\text{Evelyn}", "\\boxed{\\text{Evelyn}}", True),
    ],
)
def test_heldout_equivalence_errors_are_fixed(
    judge: MathJudge, gold: str, output: str, correct: bool
) -> None:
    assert judge.judge(gold, output, "boxed").correct is correct


def test_parser_guard_keeps_sympy_simplify_working() -> None:
    """sympy.simplify imports sympy.physics.units lazily, and that module sympifies its own unit
    names; under the guard the first simplify in a worker used to fail (2.6*10^4 vs 26000)."""
    script = """
from mobilellm_r1.eval.answer_equivalence import install_parser_guard, equivalent
install_parser_guard()
assert equivalent("26000", "2.6 \\\\times 10^{4}")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_judge_refuses_the_antlr_runtime_that_breaks_its_latex_parser(monkeypatch) -> None:
    """ExecuTorch's hydra-core pins ANTLR 4.9, under which math-verify misreads '25%': refuse it."""
    from mobilellm_r1.eval import math_grading

    monkeypatch.setattr(math_grading.importlib.metadata, "version", lambda name: "4.9.3")
    with pytest.raises(
        RuntimeError, match=r"antlr4-python3-runtime 4\.9\.3 .*pip install antlr4-python3-runtime==4\.13\.2"
    ):
        math_grading.MathJudge(workers=1)
