"""Tests for the math task definitions, prompts and scoring (GSM8K, MATH500, AIME)."""

from __future__ import annotations

import re

import pytest

from helpers import SHARED_DATA
from mobilellm_r1.eval.math_grading import MathJudge
from mobilellm_r1.eval.math_tasks import MathTask, score_predictions
from mobilellm_r1.eval.registry import math_task
from mobilellm_r1.tokenizer import SYSTEM_PROMPTS

DATA = SHARED_DATA / "eval"


@pytest.fixture(scope="module")
def judge():
    with MathJudge(workers=2) as j:
        yield j


def load_task(name: str, data_dir) -> tuple[MathTask, list[dict]]:
    """The registry's math task ``name`` and its records read from ``data_dir``."""
    task = math_task(name)
    return task, task.records(data_dir)


def _preds(task: MathTask, records: list[dict], completion) -> list[dict]:
    """One prediction per record built by ``completion(record)``."""
    return [{"id": task.record_id(r, i), "completion": completion(r)} for i, r in enumerate(records)]


def _perturb(gold: str) -> str:
    """A boxed answer that differs from ``gold`` (gold + 1)."""
    if re.fullmatch(r"-?\d+", gold.strip()):
        return f"\\boxed{{{int(gold) + 1}}}"
    return f"\\boxed{{{gold}+1}}"


GOLD_COMPLETIONS = {
    "gsm8k": lambda r: r["answer"],
    "math500": lambda r: r["solution"],
    "aime24": lambda r: f"\\boxed{{{r['answer']}}}",
}


@pytest.mark.parametrize("name", sorted(GOLD_COMPLETIONS))
def test_gold_scores_full_and_perturbed_zero(name, judge):
    task, records = load_task(name, DATA)
    gold = score_predictions(task, records, _preds(task, records, GOLD_COMPLETIONS[name]), judge)
    wrong = [s for s in gold["per_sample"] if not s["correct"]]
    assert wrong == [] and gold["pass@1"] == 1.0
    assert gold["n_problems_scored"] == len(records) and gold["missing"] == 0
    bad = score_predictions(task, records, _preds(task, records, lambda r: _perturb(task.gold(r))), judge)
    assert [s for s in bad["per_sample"] if s["correct"]] == [] and bad["pass@1"] == 0.0


def test_gsm8k_answer_sentence_scores(judge):
    task, records = load_task("gsm8k", DATA)
    res = score_predictions(
        task, records, _preds(task, records, lambda r: f"The answer is {task.gold(r)}."), judge
    )
    assert res["pass@1"] == 1.0


def test_base_protocols_read_the_prompts_own_answer_line(judge):
    """issue 17: MATH500's 4-shot prompt ends its answers with the Minerva line and GSM8K's with
    "The answer is": those lines are read, the last one wins, and chats read ``\\boxed{}``."""
    math, m_records = load_task("math500", DATA)
    m_records = m_records[:40]
    line = "Final Answer: The final answer is ${}$. I hope it is correct."
    right = score_predictions(
        math, m_records, _preds(math, m_records, lambda r: line.format(r["answer"])), judge
    )
    assert right["pass@1"] == 1.0
    wrong = _preds(
        math, m_records, lambda r: f"The answer is ${r['answer']}$.\n" + line.format(r["answer"] + "+1")
    )
    assert score_predictions(math, m_records, wrong, judge)["pass@1"] == 0.0
    gsm, g_records = load_task("gsm8k", DATA)
    g_records = g_records[:40]
    late = _preds(
        gsm, g_records, lambda r: f"The answer is {int(gsm.gold(r)) + 1}.\nThe answer is {gsm.gold(r)}."
    )
    assert score_predictions(gsm, g_records, late, judge)["pass@1"] == 1.0
    boxed_then_line = _preds(gsm, g_records, lambda r: f"\\boxed{{{gsm.gold(r)}}} The answer is 0.")
    assert score_predictions(gsm, g_records, boxed_then_line, judge, chat=True)["pass@1"] == 1.0
    assert score_predictions(gsm, g_records, boxed_then_line, judge)["pass@1"] < 0.1


def test_multiple_samples_missing_and_pass_at_n(judge):
    task, records = load_task("aime24", DATA)
    r0, r1 = records[0], records[1]
    preds = [
        {"id": r0["id"], "completion": f"\\boxed{{{r0['answer']}}}"},
        {"id": r0["id"], "completion": "\\boxed{-1}"},
        {"id": str(r1["id"]), "completion": "\\boxed{-1}"},
        {"id": r1["id"], "completion": "\\boxed{-2}"},
    ]
    res = score_predictions(task, records, preds, judge)
    assert res["n_problems_scored"] == 2 and res["missing"] == len(records) - 2
    assert res["pass@1"] == pytest.approx(0.25) and len(res["per_sample"]) == 4
    if "pass@2" in res:
        assert res["pass@2"] == pytest.approx(0.5)


def test_unknown_id_raises(judge):
    task, records = load_task("aime24", DATA)
    with pytest.raises(ValueError, match="no-such-id"):
        score_predictions(task, records, [{"id": "no-such-id", "completion": "1"}], judge)


def test_gsm8k_prompt_is_8_shot():
    task, records = load_task("gsm8k", DATA)
    prompt = task.base_prompt(records[0])
    assert prompt.count("Q: ") == 9 and prompt.count("The answer is") == 8
    assert prompt.endswith(f"Q: {records[0]['question']}\nA:")
    assert task.record_id(records[3], 3) == "3"


def test_math_prompt_is_4_shot():
    task, records = load_task("math500", DATA)
    prompt = task.base_prompt(records[0])
    assert prompt.count("Problem:\n") == 5 and prompt.count("Final Answer: The final answer is") == 4
    assert prompt.endswith(f"Problem:\n{records[0]['problem']}\n\nSolution:\n")
    assert task.record_id(records[0], 0) == records[0]["unique_id"]


@pytest.mark.parametrize("name", ["gsm8k", "math500", "aime24"])
def test_chat_messages_use_math_system_prompt(name):
    task, records = load_task(name, DATA)
    msgs = task.chat_messages(records[0])
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPTS["math"]}
    assert msgs[1]["role"] == "user" and msgs[1]["content"] in (
        records[0].get("problem"),
        records[0].get("question"),
    )


def test_missing_file_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"aime25.test\.jsonl"):
        load_task("aime25", tmp_path)


def test_aime25_loader_reads_file(tmp_path):
    (tmp_path / "aime25").mkdir()
    (tmp_path / "aime25" / "test.jsonl").write_text('{"id": "I-1", "problem": "P", "answer": "70"}\n')
    task, records = load_task("aime25", tmp_path)
    assert task.record_id(records[0], 0) == "I-1" and task.gold(records[0]) == "70"


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown math task"):
        load_task("nope", DATA)
