"""`mobilellm-r1 run`: a small real recipe end to end; re-runs skip, resume after kills, and re-run
only what a changed setting touches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import E2E_DATA_STAGES, processes_under
from mobilellm_r1.cli import main

# Real stages at toy size: the corpus, its shards, 6 training steps (checkpoints at 2 and 4), and
# the held-out NLL of the trained model's reference solutions.
RECIPE = (
    """name: mini
out_dir: run
stages:
"""
    + E2E_DATA_STAGES
    + """
  - name: pretrain
    title: Pretraining
    run: train --recipe train/tiny_cpu
    set: [out_dir=pretrain, steps=6, data.micro_batch=2, data.seq_len=64, checkpoint_every=2, keep_last=3,
          eval_every=3, eval_docs=4, log_every=1]
    inputs: [data/shards/synthetic]
    outputs: [pretrain]
    ranks: all
  - name: evaluate
    run: eval --model pretrain/final --tasks gsm8k --nll --data-dir data/synth/eval --limit 4 --out evals/pretrain
    inputs: [pretrain]
    outputs: [evals/pretrain]
"""
)


def _numbers(run_dir: Path) -> dict:
    """The report's numbers that do not depend on timing (what a resumed run must reproduce)."""
    report = json.loads((run_dir / "report.json").read_text())
    out = {}
    for stage in report["stages"]:
        section = dict(stage.get("section", {}))
        section.pop("final_model", None)
        if section.get("kind") == "train":
            section["curves"] = {k: v for k, v in section["curves"].items() if k in ("loss", "lr")}
        if section.get("kind") == "eval":
            section["tasks"] = {
                t: {k: v for k, v in m.items() if k != "seconds"} for t, m in section["tasks"].items()
            }
        if section.get("kind") == "command":  # throughput figures differ between runs
            report = section.get("report") or {}
            section["report"] = {k: v for k, v in report.items() if "per_s" not in k and "seconds" not in k}
        out[stage["name"]] = (stage["state"], section)
    return out


def _run_in(root: Path, *args: str) -> int:
    """`mobilellm-r1 run recipe.yaml ARGS` in this process, from `root`."""
    old = Path.cwd()
    os.chdir(root)
    try:
        return main(["run", "recipe.yaml", *args])
    finally:
        os.chdir(old)


def _start(root: Path, stderr: int = subprocess.DEVNULL) -> subprocess.Popen:
    """`mobilellm-r1 run recipe.yaml` in `root` as a process group of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "mobilellm_r1.cli", "run", "recipe.yaml"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


def _kill_when(root: Path, proc: subprocess.Popen, ready: Path, timeout: float = 400) -> None:
    """SIGKILL the run (its whole process group) as soon as `ready` exists."""
    end = time.time() + timeout
    while not ready.exists():
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.time() < end, f"{ready} did not appear"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run of the recipe."""
    root = tmp_path_factory.mktemp("reference")
    (root / "recipe.yaml").write_text(RECIPE)
    assert _run_in(root) == 0
    return root


def test_uninterrupted_run_writes_both_report_files(reference: Path) -> None:
    run = reference / "run"
    numbers = _numbers(run)
    assert [state for state, _ in numbers.values()] == ["done"] * 4
    train = numbers["pretrain"][1]
    assert train["steps"] == 6 and len(train["curves"]["loss"]) == 6
    assert [row["step"] for row in train["heldout"]] == [3, 6]
    assert numbers["evaluate"][1]["tasks"]["gsm8k"]
    html = (run / "report.html").read_text()
    assert "Pretraining" in html and "data:image/png;base64," in html
    assert "mobilellm-r1 train --recipe train/tiny_cpu --set out_dir=pretrain" in html


def test_a_second_run_skips_every_stage(reference: Path, capsys: pytest.CaptureFixture) -> None:
    before = (reference / "run" / ".stages" / "pretrain.json").read_text()
    assert _run_in(reference) == 0
    err = capsys.readouterr().err
    assert err.count("up to date, skipped") == 4
    assert (reference / "run" / ".stages" / "pretrain.json").read_text() == before


def test_killed_inside_training_and_between_stages_finishes_the_same(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    run = tmp_path / "run"
    monkeypatch.setenv("MOBILELLM_R1_HEARTBEAT_S", "0.1")  # the running marker's elapsed time
    # 1: killed inside training, once its second checkpoint is sealed
    _kill_when(
        tmp_path, _start(tmp_path), run / "pretrain" / "checkpoints" / "step_00000004" / "manifest.json"
    )
    marker = json.loads((run / ".stages" / "pretrain.json").read_text())
    assert marker["state"] == "running" and marker["wall_s"] > 0
    killed_s = marker["wall_s"]
    # 2: killed between stages: as soon as training is marked done
    proc = _start(tmp_path)
    end = time.time() + 400
    while json.loads((run / ".stages" / "pretrain.json").read_text())["state"] != "done":
        assert proc.poll() is None and time.time() < end
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # 3: the same command finishes the run
    assert _start(tmp_path).wait() == 0
    marker = json.loads((run / ".stages" / "pretrain.json").read_text())
    assert marker["attempts"] == 2  # resumed from its checkpoint, not restarted
    assert marker["wall_s"] > killed_s  # the killed attempt's time counts in the stage's
    assert _numbers(run) == _numbers(reference / "run")


def test_sigterm_inside_training_writes_the_report_so_far_and_stops_the_stage(tmp_path: Path) -> None:
    """What a scheduler's time limit sends: the run stops, its report shows the finished stages
    (the one it stopped is 'running'; later ones 'not run'), and no stage outlives it."""
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    run = tmp_path / "run"
    proc = _start(tmp_path, stderr=subprocess.PIPE)
    ready, end = run / "pretrain" / "checkpoints" / "step_00000002" / "manifest.json", time.time() + 400
    while not ready.exists():
        assert proc.poll() is None and time.time() < end, "training did not reach its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # the orchestrator alone, as `timeout` or Slurm would
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "report so far:" in err
    states = {
        stage["name"]: stage["state"] for stage in json.loads((run / "report.json").read_text())["stages"]
    }
    assert states["pretrain"] == "running" and states["evaluate"] == "not run"
    assert all(states[name] == "done" for name in list(states)[:-2])
    end = time.time() + 30
    while processes_under(tmp_path):
        assert time.time() < end, f"stage processes left running: {processes_under(tmp_path)}"
        time.sleep(0.2)


def test_a_changed_setting_reruns_only_that_stage_and_later_ones(
    reference: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _run_in(reference, "--set", "pretrain.steps=5", "--dry-run") == 0
    plan = capsys.readouterr().out.splitlines()
    actions = {line.split()[0]: line.split()[1] for line in plan}
    assert actions == {"synth": "skip", "tokenize": "skip", "pretrain": "rerun", "evaluate": "rerun"}
