"""HumanEval / MBPP task plumbing, checked against the real data sets in ../shared/data/eval."""

from __future__ import annotations

import pytest

from helpers import SHARED_DATA
from mobilellm_r1.eval.code_tasks import (
    extract_mbpp_code,
    humaneval_program,
    load_humaneval,
    load_mbpp,
    mbpp_program,
    mbpp_prompt,
    mbpp_shots,
    run_code_checks,
)

EVAL = SHARED_DATA / "eval"


@pytest.fixture(scope="module")
def humaneval() -> list[dict]:
    return load_humaneval(EVAL)


@pytest.fixture(scope="module")
def mbpp() -> list[dict]:
    return load_mbpp(EVAL)


def _passing(tasks: list[dict], programs: list[str]) -> set:
    results = run_code_checks(programs, timeout_s=10, workers=2)
    return {t["task_id"] for t, r in zip(tasks, results, strict=True) if r.status == "ok"}


def test_load_accepts_dir_and_file(humaneval: list[dict], mbpp: list[dict]) -> None:
    assert len(humaneval) == 164
    assert [r["task_id"] for r in mbpp] == list(range(11, 511))
    assert load_humaneval(EVAL / "humaneval" / "HumanEval.jsonl.gz") == humaneval
    from_test_file = load_mbpp(EVAL / "mbpp" / "mbpp_test.jsonl")
    # the DeepSeek-Coder test file lacks test_setup_code and challenge_test_list; else same as mbpp.jsonl
    keys = ("task_id", "text", "code", "test_list")
    assert [[r[k] for k in keys] for r in mbpp] == [[r[k] for k in keys] for r in from_test_file]
    assert len(load_mbpp(EVAL, split="train")) == 374
    with pytest.raises(ValueError, match="unknown MBPP split"):
        load_mbpp(EVAL, split="dev")


def test_missing_dataset_raises_helpful_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"HumanEval\.jsonl\.gz.*SOURCES\.md"):
        load_humaneval(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"mbpp\.jsonl or mbpp_test\.jsonl"):
        load_mbpp(tmp_path / "nowhere")


# A fixed eighth of each set (every 8th task, plus MBPP 367 below); the whole sets are
# benchmarks/code_references.py (~6 min on 2 cores): every reference passes, every stub fails.
def _eighth(tasks: list[dict]) -> list[dict]:
    return tasks[::8]


def test_humaneval_canonical_solutions_pass(humaneval: list[dict]) -> None:
    tasks = _eighth(humaneval)
    programs = [humaneval_program(r, r["canonical_solution"]) for r in tasks]
    assert _passing(tasks, programs) == {r["task_id"] for r in tasks}


@pytest.mark.parametrize("completion", ["    pass\n", "    return None\n"])
def test_humaneval_stub_completions_fail(humaneval: list[dict], completion: str) -> None:
    # no HumanEval task has a None-returning solution, so every stub must fail
    tasks = _eighth(humaneval)
    assert _passing(tasks, [humaneval_program(r, completion) for r in tasks]) == set()


def test_mbpp_reference_code_passes(mbpp: list[dict]) -> None:
    # task 367 passes only because test_setup_code follows the code (it uses the solution's Node)
    tasks = _eighth(mbpp) + [r for r in mbpp if r["task_id"] == 367]
    programs = [mbpp_program(r, r["code"]) for r in tasks]
    assert _passing(tasks, programs) == {r["task_id"] for r in tasks}


def test_mbpp_wrong_code_fails(mbpp: list[dict]) -> None:
    tasks = mbpp[:20]
    assert _passing(tasks, [mbpp_program(r, "def f():\n    return None\n") for r in tasks]) == set()


def test_mbpp_program_order() -> None:
    # the setup runs after the code, in the program's process: it uses the program's Node
    record = {"test_setup_code": "x = Node()", "test_list": ["assert x.v == 1"], "code": ""}
    program = mbpp_program(record, "class Node:\n    v = 1")
    assert (program.program, program.setup, program.tests) == (
        "class Node:\n    v = 1",
        "x = Node()",
        "assert x.v == 1\n",
    )
    assert [r.status for r in run_code_checks([program])] == ["ok"]


def test_mbpp_three_shot_prompt(mbpp: list[dict]) -> None:
    shots = mbpp_shots(EVAL)
    assert [s["task_id"] for s in shots] == [2, 3, 4]
    prompt = mbpp_prompt(mbpp[0], shots)
    assert prompt.count("You are an expert Python programmer, and here is your task: ") == 4
    assert prompt.count("[DONE]") == 3
    for shot in shots:
        assert shot["text"] in prompt and shot["code"] in prompt
        assert all(t in prompt for t in shot["test_list"])
    last = prompt.rsplit("You are an expert", 1)[1]
    assert mbpp[0]["text"] in last and "\n".join(mbpp[0]["test_list"]) in last
    assert prompt.endswith("\n[BEGIN]\n")
    assert "Your code should pass these tests:\n\nassert similar_elements(" in prompt


def test_extract_mbpp_code() -> None:
    assert extract_mbpp_code("def f():\n    return 1\n[DONE]\nmore text") == "def f():\n    return 1"
    assert extract_mbpp_code("[BEGIN]\ndef f():\n    return 1\n[DONE]") == "def f():\n    return 1"
    assert extract_mbpp_code("def g(): pass") == "def g(): pass"
