"""Trainer on CPU: loss falls, kill + resume is exact, 2-rank FSDP2 equals 1 rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import TINY_TRAIN_SET, metric_history
from mobilellm_r1.train.config import TrainConfig, load_train_config
from mobilellm_r1.train.objectives import prepare_data
from mobilellm_r1.train.optim import clip_gradients
from mobilellm_r1.train.trainer import Trainer


def cli(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.Popen([sys.executable, "-m", "mobilellm_r1.cli", *args], cwd=cwd, env=env, **popen)


def overrides(*extra: str) -> list[str]:
    return [x for item in (*TINY_TRAIN_SET, *extra) for x in ("--set", item)]


def prepared(cfg: TrainConfig) -> Trainer:
    """A CPU trainer for `cfg`, its data made first (as `mobilellm-r1 train` does)."""
    prepare_data(cfg, "cpu")
    return Trainer(cfg, device="cpu")


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_loss_falls_and_exports(workdir) -> None:
    cfg = load_train_config("train/tiny_cpu", [*TINY_TRAIN_SET, "steps=25", "checkpoint_every=0"])
    summary = prepared(cfg).fit()
    history = metric_history(workdir / "runs/tiny_cpu")
    assert summary["step"] == 25
    assert sum(history[s] for s in (23, 24, 25)) / 3 < sum(history[s] for s in (1, 2, 3)) / 3 - 1.0
    assert (workdir / "runs/tiny_cpu/final/model.safetensors").exists()


def test_kill_and_resume_gives_the_same_losses(workdir) -> None:
    common = overrides("steps=8", "checkpoint_every=4")
    ref = cli(["train", "--recipe", "train/tiny_cpu", *common, "--set", "out_dir=runs/ref"], workdir)
    assert ref.wait(timeout=300) == 0
    victim = cli(["train", "--recipe", "train/tiny_cpu", *common, "--set", "out_dir=runs/cut"], workdir)
    deadline = time.time() + 300
    while not (workdir / "runs/cut/checkpoints/step_00000004").exists():
        assert victim.poll() is None and time.time() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    again = cli(
        ["train", "--recipe", "train/tiny_cpu", *common, "--set", "out_dir=runs/cut", "--resume"], workdir
    )
    assert again.wait(timeout=300) == 0
    want, got = metric_history(workdir / "runs/ref"), metric_history(workdir / "runs/cut")
    assert [got[s] for s in range(1, 9)] == [want[s] for s in range(1, 9)]


@pytest.mark.parametrize("reshard", [True, False])
def test_two_rank_fsdp_matches_one_rank(workdir, reshard: bool) -> None:
    common = overrides("steps=3", "checkpoint_every=0", f"fsdp_reshard_after_forward={str(reshard).lower()}")
    one = cli(["train", "--recipe", "train/tiny_cpu", *common, "--set", "out_dir=runs/one"], workdir)
    assert one.wait(timeout=300) == 0
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
        "OMP_NUM_THREADS": "1",
    }
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "mobilellm_r1.cli", "train", "--recipe", "train/tiny_cpu", *common,
         "--set", "data.micro_batch=2", "--set", "out_dir=runs/two", "--device", "cpu"],
        cwd=workdir, env=env, timeout=600, capture_output=True, text=True,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = metric_history(workdir / "runs/one"), metric_history(workdir / "runs/two")
    for step in (1, 2, 3):
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])


def test_kd_objective_lowers_kl_to_teacher(workdir) -> None:
    from mobilellm_r1.model import build_model, preset
    from mobilellm_r1.model.hf import save_pretrained

    teacher = preset("tiny", hidden_size=32, intermediate_size_mlp=64, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=16, initializer_range=0.2)  # fmt: skip
    save_pretrained(build_model(teacher, seed=5), None, workdir / "teacher")
    cfg = load_train_config(
        "train/tiny_cpu",
        [
            *TINY_TRAIN_SET,
            "steps=10",
            "checkpoint_every=0",
            "objective=kd",
            f"distill.teacher={workdir / 'teacher'}",
        ],
    )
    prepared(cfg).fit()
    history = metric_history(workdir / "runs/tiny_cpu")
    assert all(v >= 0 for v in history.values())
    assert sum(history[s] for s in (8, 9, 10)) < 0.95 * sum(history[s] for s in (1, 2, 3))


def test_grad_clip_null_trains_unclipped_and_logs_the_norm(workdir) -> None:
    """`grad_clip: null` skips clipping: the run equals one whose bound is never reached, and the
    logged grad_norm keeps its meaning (the global norm before clipping)."""
    for name, clip in (("null", "null"), ("huge", "1.0e9")):
        sets = [f"optim.grad_clip={clip}", f"out_dir=runs/{name}", "steps=2", "checkpoint_every=0"]
        prepared(load_train_config("train/tiny_cpu", [*TINY_TRAIN_SET, *sets])).fit()
    runs = [workdir / "runs/null", workdir / "runs/huge"]
    assert metric_history(runs[0]) == metric_history(runs[1]) and len(metric_history(runs[0])) == 2
    norms = [metric_history(run, "grad_norm") for run in runs]
    assert norms[0] == norms[1] and all(n > 0 for n in norms[0].values())


@pytest.mark.parametrize("max_norm", [None, 0.0])
def test_clip_gradients_off_leaves_gradients_and_returns_their_norm(max_norm: float | None) -> None:
    """None and 0 mean no clipping; torch's own clip at 0 would zero every gradient."""
    layer = torch.nn.Linear(2, 2, bias=False)
    layer.weight.grad = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    assert clip_gradients(layer.parameters(), max_norm) == pytest.approx(5.0)
    assert layer.weight.grad.tolist() == [[3.0, 0.0], [0.0, 4.0]]
    assert clip_gradients(layer.parameters(), 1.0) == pytest.approx(5.0)  # the norm before clipping
    assert layer.weight.grad.norm().item() == pytest.approx(1.0)
    torch.nn.utils.clip_grad_norm_(layer.parameters(), 0.0)
    assert not layer.weight.grad.any()
