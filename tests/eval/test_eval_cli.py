"""`mobilellm-r1 eval` end to end: a tiny random model on every task with --limit 5."""

import json
from pathlib import Path

from helpers import SHARED_DATA
from mobilellm_r1.cli import main
from mobilellm_r1.eval import hub

FIXTURES = Path(__file__).parent / "fixtures"
COMMONSENSE = ("arc_easy", "arc_challenge", "boolq", "piqa", "siqa", "openbookqa", "winogrande")


def _data_dir(root: Path) -> Path:
    """The shared eval data plus fixtures for what it lacks (HellaSwag, LiveCodeBench, AIME'25)."""
    shared = SHARED_DATA / "eval"
    root.mkdir()
    for task in ("gsm8k", "math500", "aime24", "humaneval", "mbpp", "mmlu"):
        (root / task).symlink_to(shared / task)
    (root / "aime25").symlink_to(FIXTURES / "aime25")
    (root / "commonsense").mkdir()
    for task in COMMONSENSE:
        (root / "commonsense" / task).symlink_to(shared / "commonsense" / task)
    (root / "commonsense" / "hellaswag").symlink_to(FIXTURES / "hellaswag")
    (root / "livecodebench").mkdir()
    (root / "livecodebench" / "sample.jsonl").symlink_to(FIXTURES / "livecodebench_sample.jsonl")
    return root


def test_every_task_end_to_end(tmp_path, capsys) -> None:
    data = _data_dir(tmp_path / "data")
    assert main(["init", "--preset", "tiny", "--out", str(tmp_path / "m")]) == 0
    out = tmp_path / "out"
    args = ["eval", "--model", str(tmp_path / "m"), "--tasks", "all", "--limit", "5", "--n", "2"]
    args += ["--data-dir", str(data), "--out", str(out), "--max-new-tokens", "8", "--device", "cpu"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 16
    for task, metrics in summary.items():
        headline = metrics.get("pass@1", metrics.get("acc"))
        assert headline is not None and 0.0 <= headline <= 1.0, task
        rows = (out / "samples" / f"{task}.jsonl").read_text().splitlines()
        expected = metrics["n_problems"] * 2 if "pass@1" in metrics else metrics["n"]
        assert len(rows) == expected, task
    assert summary["aime25"]["n_problems"] == 3 and summary["mbpp"]["pass@2"] >= 0.0
    assert "| winogrande | acc |" in capsys.readouterr().out


def test_eval_needs_one_source(tmp_path, capsys) -> None:
    assert main(["eval", "--tasks", "gsm8k", "--out", str(tmp_path)]) == 1
    assert "exactly one of --model, --server, --predictions" in capsys.readouterr().err


def test_unavailable_tasks_are_skipped_offline(tmp_path, capsys, monkeypatch) -> None:
    """HellaSwag is not local and the hub does not answer (a closed local port): it is skipped with
    that reason in the table and the JSON line while gsm8k is scored (exit 0); every task skipped
    is exit 1."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    hub.unreachable_reason.cache_clear()
    data = tmp_path / "data"
    data.mkdir()
    (data / "gsm8k").symlink_to(SHARED_DATA / "eval" / "gsm8k")
    assert main(["init", "--preset", "tiny", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    args = ["eval", "--model", str(tmp_path / "m"), "--limit", "2", "--max-new-tokens", "4"]
    args += ["--data-dir", str(data), "--device", "cpu"]
    try:
        assert main([*args, "--tasks", "hellaswag,gsm8k", "--out", str(tmp_path / "a")]) == 0
        captured = capsys.readouterr()
        report = json.loads(captured.out.splitlines()[-1])
        assert list(report["skipped"]) == ["hellaswag"]
        reason = report["skipped"]["hellaswag"]
        assert f"not in {data}" in reason and "the hub is unreachable (http://127.0.0.1:9" in reason
        assert "| gsm8k | pass@1 |" in captured.out and f"- hellaswag: {reason}" in captured.out
        assert f"skipped hellaswag: {reason}" in captured.err
        summary = json.loads((tmp_path / "a" / "summary.json").read_text())
        assert set(summary) == {"gsm8k", "skipped"} and summary["gsm8k"]["n_problems"] == 2

        assert main([*args, "--tasks", "hellaswag,aime25", "--out", str(tmp_path / "b")]) == 1
        report = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert list(report["skipped"]) == ["hellaswag", "aime25"]
        assert str(data / "aime25" / "test.jsonl") in report["skipped"]["aime25"]
    finally:
        hub.unreachable_reason.cache_clear()  # the probe's answer for this fake endpoint must not stay
