"""The evaluation runner in predictions mode: gold scores 100%, perturbed 0%, reports on disk."""

import json
from pathlib import Path

import pytest

from helpers import SHARED_DATA
from mobilellm_r1.eval.registry import TASKS, math_task
from mobilellm_r1.eval.runner import EvalOptions, Evaluator, markdown_table, read_predictions

EVAL = SHARED_DATA / "eval"


def _gold_completion(task: str, record: dict) -> str:
    if task == "gsm8k":
        return (
            record["answer"].split("####")[0] + f"The answer is {record['answer'].split('####')[1].strip()}."
        )
    if task == "humaneval":
        return record["canonical_solution"]
    if task == "mbpp":
        return record["code"] + "\n[DONE]"
    return f"So the answer is $\\boxed{{{_math_gold(task, record)}}}$."


def _math_gold(task: str, record: dict) -> str:
    return math_task(task).gold(record)


def _write_predictions(path: Path, tasks: dict[str, int], perturb: bool = False) -> None:
    rows = []
    for name, limit in tasks.items():
        task = TASKS[name]
        for i, record in enumerate(task.load(EVAL)[:limit]):
            completion = _gold_completion(name, record)
            if perturb:
                completion = _perturb(name, record)
            rows.append({"task": name, "id": task.id_of(record, i), "completion": completion})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _perturb(task: str, record: dict) -> str:
    if task in ("humaneval",):
        return "    return None\n"
    if task == "mbpp":
        return "def f():\n    pass\n[DONE]"
    if task == "gsm8k":
        gold = record["answer"].split("####")[1].strip().replace(",", "")
        return f"The answer is {int(gold) + 1}."
    return "So the answer is $\\boxed{-987654321}$."


LIMITS = {"gsm8k": 40, "math500": 40, "aime24": 30, "humaneval": 12, "mbpp": 12}


@pytest.mark.parametrize("perturb", [False, True])
def test_predictions_gold_and_perturbed(tmp_path, perturb) -> None:
    preds = tmp_path / "preds.jsonl"
    _write_predictions(preds, LIMITS, perturb=perturb)
    opts = EvalOptions(tasks=list(LIMITS), data_dir=EVAL, out_dir=tmp_path / "out", limit=None)
    summary = Evaluator(opts, predictions=read_predictions(preds)).run()
    for name, limit in LIMITS.items():
        assert summary[name]["pass@1"] == (0.0 if perturb else 1.0), name
        assert summary[name]["n_problems"] == limit
        assert summary[name]["missing"] == len(TASKS[name].load(EVAL)) - limit
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved == summary
    rows = [json.loads(x) for x in (tmp_path / "out" / "samples" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(rows) == LIMITS["gsm8k"]
    assert {"id", "sample", "prompt", "completion", "extracted", "correct"} <= set(rows[0])
    assert rows[0]["prompt"].endswith("\nA:")  # the 8-shot base prompt
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| gsm8k | pass@1 | " + ("0.0" if perturb else "100.0") in table


def test_n_samples_per_id_average(tmp_path) -> None:
    """Two samples for one id, one right: pass@1 = 0.5, pass@2 = 1.0."""
    record = TASKS["aime24"].load(EVAL)[0]
    rid, gold = TASKS["aime24"].id_of(record, 0), _math_gold("aime24", record)
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        json.dumps({"task": "aime24", "id": rid, "completion": f"\\boxed{{{gold}}}"})
        + "\n"
        + json.dumps({"task": "aime24", "id": rid, "completion": "\\boxed{1234567}"})
        + "\n"
    )
    opts = EvalOptions(tasks=["aime24"], data_dir=EVAL, out_dir=tmp_path / "o")
    s = Evaluator(opts, predictions=read_predictions(preds)).run()["aime24"]
    assert s["pass@1"] == 0.5 and s["pass@2"] == 1.0 and s["missing"] == 29


def test_bad_predictions_are_named(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "gsm8k", "id": "0", "completion": "x"}\n{"task": "gsm8k"\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        read_predictions(bad)
    bad.write_text('{"task": "gsm8k", "completion": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field 'id'"):
        read_predictions(bad)
    bad.write_text('{"task": "gsm8k", "id": "99999", "completion": "x"}\n')
    opts = EvalOptions(tasks=["gsm8k"], data_dir=EVAL, out_dir=tmp_path / "o")
    with pytest.raises(ValueError, match="unknown id '99999' for task gsm8k"):
        Evaluator(opts, predictions=read_predictions(bad)).run()


def test_missing_dataset_is_skipped_with_reason(tmp_path, capsys) -> None:
    """math500's file is missing: it is skipped with the expected path as its reason (stderr,
    summary.json, results.md) and gsm8k is still scored."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "gsm8k").symlink_to(EVAL / "gsm8k")
    preds = tmp_path / "preds.jsonl"
    _write_predictions(preds, {"gsm8k": 3})
    opts = EvalOptions(tasks=["math500", "gsm8k"], data_dir=data, out_dir=tmp_path / "o")
    evaluator = Evaluator(opts, predictions=read_predictions(preds))
    summary = evaluator.run()
    assert list(summary) == ["gsm8k"] and summary["gsm8k"]["pass@1"] == 1.0
    where = str(data / "math500" / "test.jsonl")
    assert list(evaluator.skipped) == ["math500"] and where in evaluator.skipped["math500"]
    assert f"skipped math500: math500: expected its test set at {where}" in capsys.readouterr().err
    saved = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert saved == summary | {"skipped": evaluator.skipped}
    table = (tmp_path / "o" / "results.md").read_text()
    assert (
        "| gsm8k | pass@1 | 100.0 |" in table
        and f"- math500: math500: expected its test set at {where}" in table
    )
    assert not (tmp_path / "o" / "samples" / "math500.jsonl").exists()


def test_markdown_table_paper_column() -> None:
    summary = {"gsm8k": {"pass@1": 0.5, "pass@1_se": 0.1, "n_problems": 4.0, "seconds": 1.0}}
    table = markdown_table(summary, {"gsm8k": 0.616})
    assert "| gsm8k | pass@1 | 50.0 | 10.0 |  |  | 61.6 | 4 | 1.0 |" in table
