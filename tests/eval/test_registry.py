"""The one eval task registry: suites, lookups, and a toy task added with one registry line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mobilellm_r1.cli import main
from mobilellm_r1.eval import registry
from mobilellm_r1.eval.choice_tasks import ChoiceItem, ChoiceTask
from mobilellm_r1.eval.engines import GenRequest, LocalEngine
from mobilellm_r1.eval.reference import PAPER_RESULTS, SUITE_PROTOCOL
from mobilellm_r1.eval.registry import PAPER_SUITES as SUITES
from mobilellm_r1.eval.registry import TASKS, expand_tasks, generation_task, get_task, math_task
from mobilellm_r1.eval.runner import EvalOptions, Evaluator, read_predictions
from mobilellm_r1.eval.tasks import GenTask, GradeContext, Graded, Grouped, Record, pass_summary
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.tokenizer import load_tokenizer

GENERATION = {"gsm8k", "math500", "aime24", "aime25", "humaneval", "mbpp", "livecodebench"}
LOGLIK = {
    "mmlu",
    "arc_easy",
    "arc_challenge",
    "boolq",
    "piqa",
    "siqa",
    "hellaswag",
    "openbookqa",
    "winogrande",
}
KNOWN_TASKS = GENERATION | LOGLIK


# ------------------------------------------------------------------ moved from test_runner / test_reference
def test_suites_expand() -> None:
    assert expand_tasks(["post"]) == ["math500", "gsm8k", "aime24", "aime25", "livecodebench"]
    base = expand_tasks(["base", "gsm8k"])
    assert base[:4] == ["math500", "gsm8k", "mbpp", "humaneval"] and len(base) == len(set(base)) == 13
    with pytest.raises(ValueError, match="unknown task 'gsm9k'"):
        expand_tasks(["gsm9k"])


def test_suites_use_known_task_names() -> None:
    assert set(SUITES) == {"base", "post"}
    for tasks in SUITES.values():
        assert set(tasks) <= KNOWN_TASKS
    assert SUITES["post"] == ("math500", "gsm8k", "aime24", "aime25", "livecodebench")


# ------------------------------------------------------------------ the registry itself
def test_one_registry_lists_every_task_under_its_own_name() -> None:
    assert all(task.name == name for name, task in TASKS.items())
    assert {n for n, t in TASKS.items() if isinstance(t, GenTask)} == GENERATION
    assert {n for n, t in TASKS.items() if isinstance(t, ChoiceTask)} == LOGLIK
    assert registry.SUITES["all"] == tuple(TASKS)
    assert set(registry.SUITES["commonsense"]) == {
        n for n, t in TASKS.items() if isinstance(t, ChoiceTask)
    } - {"mmlu"}
    for suite in registry.SUITES.values():
        assert set(suite) <= KNOWN_TASKS


def test_result_tasks_are_known_or_aggregate() -> None:
    for results in PAPER_RESULTS.values():
        assert set(results) <= KNOWN_TASKS | {"commonsense_avg"}


def test_reference_protocols_name_suite_tasks() -> None:
    for suite, columns in SUITE_PROTOCOL.items():
        assert set(columns) - {"commonsense_avg"} <= set(SUITES[suite]), suite


def test_lookups_name_the_kind_and_the_known_names() -> None:
    assert math_task("gsm8k").base_protocol == "answer_is"
    assert generation_task("humaneval") is TASKS["humaneval"]
    with pytest.raises(ValueError, match="unknown math task 'mbpp'; known: aime24, aime25, gsm8k, math500"):
        math_task("mbpp")
    with pytest.raises(ValueError, match="unknown generation task 'mmlu'"):
        generation_task("mmlu")
    with pytest.raises(ValueError, match=r"unknown task 'nope'; known: .*winogrande"):
        get_task("nope")


def test_prediction_for_an_unregistered_task_names_file_and_line(tmp_path) -> None:
    """A line whose task is misspelt used to be dropped silently (its task then counted as missing)."""
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        '{"task": "gsm8k", "id": "0", "completion": "x"}\n{"task": "gsm8kk", "id": "0", "completion": "x"}\n'
    )
    with pytest.raises(ValueError, match=r"p.jsonl:2: unknown task 'gsm8kk'"):
        read_predictions(preds)


# ------------------------------------------------------------------ a toy task: one module-level object + one line
def _toy_records(data_dir: Path) -> list[Record]:
    with open(data_dir / "toy_add" / "test.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _toy_grade(
    records: list[Record], ids: list[str], grouped: Grouped, chat: bool, ctx: GradeContext
) -> Graded:
    rows = []
    for record, rid in zip(records, ids, strict=True):
        gold = str(record["a"] + record["b"])
        rows += [{"id": rid, "extracted": c.strip(), "correct": c.strip() == gold} for c in grouped[rid]]
    tally: dict[str, list[int]] = {}
    for row in rows:
        tally.setdefault(row["id"], []).append(int(row["correct"]))
    return pass_summary([(len(v), sum(v)) for v in tally.values()]), rows


TOY_ADD = GenTask(
    name="toy_add",
    load=_toy_records,
    id_of=lambda r, i: str(r["id"]),
    base_request=lambda r, rid, d: GenRequest(rid, prompt=f"{r['a']}+{r['b']}="),
    chat_request=lambda r, rid: GenRequest(
        rid, messages=[{"role": "user", "content": f"{r['a']}+{r['b']}?"}]
    ),
    grade=_toy_grade,
    reference=lambda r: (f"{r['a']}+{r['b']}=", str(r["a"] + r["b"])),
)

TOY_PICK = ChoiceTask(
    "toy_pick",
    lambda d: [ChoiceItem(str(i), ["The sky is"], [" blue", " loud", " seven"], 0) for i in range(4)],
)

TOY_ROWS = [{"id": f"t{i}", "a": i, "b": 2 * i + 1} for i in range(3)]


@pytest.fixture
def toy_data(tmp_path) -> Path:
    (tmp_path / "data" / "toy_add").mkdir(parents=True)
    rows = "".join(json.dumps(r) + "\n" for r in TOY_ROWS)
    (tmp_path / "data" / "toy_add" / "test.jsonl").write_text(rows)
    return tmp_path / "data"


def test_toy_tasks_run_end_to_end_once_registered(tmp_path, toy_data, monkeypatch, capsys) -> None:
    preds = tmp_path / "preds.jsonl"
    rows = [{"task": "toy_add", "id": r["id"], "completion": str(r["a"] + r["b"])} for r in TOY_ROWS]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cli = ["eval", "--predictions", str(preds), "--tasks", "toy_add", "--data-dir", str(toy_data)]
    # not registered yet: a usage error while parsing --tasks
    assert main([*cli, "--out", str(tmp_path / "refused")]) == 2
    assert "unknown task 'toy_add'" in capsys.readouterr().err

    monkeypatch.setitem(TASKS, "toy_add", TOY_ADD)  # the one registry line of each toy task
    monkeypatch.setitem(TASKS, "toy_pick", TOY_PICK)
    assert main([*cli, "--out", str(tmp_path / "cli")]) == 0
    assert "| toy_add | pass@1 | 100.0 |" in capsys.readouterr().out

    tokenizer = load_tokenizer()
    model = build_model(preset("tiny"), seed=0).eval()
    engine = LocalEngine.for_model(model, tokenizer, batch_size=4)
    out = tmp_path / "out"
    opts = EvalOptions(tasks=["toy_add", "toy_pick"], data_dir=toy_data, out_dir=out, n=2, max_new_tokens=3)
    summary = Evaluator(opts, engine=engine, model=model, tokenizer=tokenizer).run()
    assert list(summary) == ["toy_add", "toy_pick"]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["toy_add"]["n_problems"] == 3 and 0.0 <= summary["toy_add"]["pass@1"] <= 1.0
    assert summary["toy_pick"]["n"] == 4 and 0.0 <= summary["toy_pick"]["acc"] <= 1.0
    rows = [json.loads(x) for x in (out / "samples" / "toy_add.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"], r["prompt"]) for r in rows[:2]] == [("t0", 0, "0+1="), ("t0", 1, "0+1=")]
    assert len(rows) == 6 and all(r["extracted"] == r["completion"].strip() for r in rows)
    assert "| toy_pick | acc |" in (out / "results.md").read_text()

    opts = EvalOptions(tasks=["toy_add"], data_dir=toy_data, out_dir=tmp_path / "nll", nll=True)
    nll = Evaluator(opts, model=model, tokenizer=tokenizer).run()["toy_add"]
    assert nll["n"] == 3 and nll["tokens"] > 0 and nll["nll"] > 0


def test_toy_task_predictions_are_graded_by_its_own_grader(tmp_path, toy_data, monkeypatch) -> None:
    monkeypatch.setitem(TASKS, "toy_add", TOY_ADD)
    for answer, expected in ((lambda r: r["a"] + r["b"], 1.0), (lambda r: r["a"] - r["b"], 0.0)):
        preds = tmp_path / "preds.jsonl"
        preds.write_text(
            "".join(
                json.dumps({"task": "toy_add", "id": r["id"], "completion": f" {answer(r)}"}) + "\n"
                for r in TOY_ROWS
            )
        )
        opts = EvalOptions(tasks=["toy_add"], data_dir=toy_data, out_dir=tmp_path / "out")
        summary = Evaluator(opts, predictions=read_predictions(preds)).run()
        assert summary["toy_add"]["pass@1"] == expected and summary["toy_add"]["missing"] == 0
