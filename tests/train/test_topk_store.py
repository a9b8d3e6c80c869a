"""Offline top-k distillation: the dump stores the teacher's top-k of the run's exact samples,
training from it equals the same loss with a live teacher, resume is exact, a store that does
not fit the run is refused, and an interrupted dump resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import metric_history
from mobilellm_r1.cli import main
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.model.hf import save_pretrained
from mobilellm_r1.train.config import TrainConfig, load_train_config
from mobilellm_r1.train.losses import chunked_cross_entropy, topk_kd_loss, topk_kl_distill
from mobilellm_r1.train.teacher import load_teacher
from mobilellm_r1.train.topk_store import (
    TopkStore,
    dump_topk,
    read_meta,
    shard_path,
    teacher_topk,
)
from mobilellm_r1.train.trainer import Trainer

SMALL = dict(hidden_size=32, intermediate_size_mlp=64, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, head_dim=16)  # fmt: skip
K, T, SHARD = 8, 2.0, 3
RUN = [
    "model.overrides=" + json.dumps(SMALL),
    "data.overrides=[seq_len=32, 'synth={out: data/synth, seed: 0, scale: 0.05}']",
    "data.micro_batch=2",
    "data.grad_accum=2",
    "optim.warmup_steps=2",
    "optim.lr=0.01",
    "loss_chunk_tokens=64",
    "log_every=1",
    "eval_every=0",
    "precision=fp32",
    "steps=3",
    "checkpoint_every=2",
    "objective=kd",
    "distill.teacher=teacher",
    "distill.topk_dir=store",
    f"distill.topk={K}",
    "distill.topk_dtype=float32",
    f"distill.temperature={T}",
]
SAMPLES = 3 * 2 * 2  # steps x micro_batch x grad_accum x 1 rank


def config(*extra: str) -> TrainConfig:
    return load_train_config("train/tiny_cpu", [*RUN, *extra])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory with a random teacher and, once dumped, the store."""
    path = tmp_path_factory.mktemp("topk")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        save_pretrained(build_model(preset("tiny", initializer_range=0.2, **SMALL), seed=5), None, "teacher")
        report = dump_topk(config(), shard_size=SHARD, batch_size=2, device="cpu")
        assert (report["written"], report["skipped"]) == (4, 0)  # 12 samples in 4 shards
        yield path


@pytest.fixture(scope="module")
def offline_run(workdir) -> dict[int, float]:
    """3 steps trained from the store (checkpoints at steps 2 and 3)."""
    Trainer(config("out_dir=runs/offline"), device="cpu").fit()
    return metric_history(workdir / "runs/offline")


def test_store_holds_the_teachers_topk_of_the_runs_samples(workdir) -> None:
    meta = read_meta("store")
    assert (meta.k, meta.temperature, meta.seq_len, meta.samples, meta.shard_size) == (
        K,
        T,
        32,
        SAMPLES,
        SHARD,
    )
    assert meta.complete and meta.vocab_size == 128256
    trainer = Trainer(config("out_dir=runs/probe"), device="cpu")
    teacher = load_teacher("teacher", torch.device("cpu"))
    store = TopkStore("store")
    for _ in range(3):  # the samples the trainer's loader serves, looked up by their global ids
        batch = trainer.loader.next_batch()
        ids, logprobs = store.lookup(batch)
        want_ids, want_lp = teacher_topk(teacher(batch.input_ids), K, T)
        assert torch.equal(ids, want_ids) and torch.allclose(logprobs, want_lp, atol=1e-6)
        assert ids.dtype == torch.int32 and ids.shape == (2, 32, K)
    assert (logprobs <= 0).all() and (logprobs.exp().sum(-1) <= 1 + 1e-5).all()
    assert logprobs[..., :-1].ge(logprobs[..., 1:]).all()  # sorted: the k most likely first


def test_offline_training_equals_the_live_teacher_topk_loss(workdir, offline_run) -> None:
    teacher = load_teacher("teacher", torch.device("cpu"))
    online = Trainer(config("out_dir=runs/online"), device="cpu")
    online.objective.topk = lambda batch: teacher_topk(teacher(batch.input_ids), K, T)
    online_losses = []
    for _ in range(3):
        online_losses.append(online.train_step().loss)
        online.step += 1  # as `fit` does: the learning-rate schedule follows the step
    assert all(v > 0 for v in online_losses)
    for step, want in enumerate(online_losses, start=1):
        assert abs(offline_run[step] - want) < 1e-5 * max(1.0, want), (step, offline_run[step], want)


def test_resume_with_the_store_is_exact(workdir, offline_run) -> None:
    shutil.copytree(workdir / "runs/offline", workdir / "runs/cut")
    shutil.rmtree(workdir / "runs/cut/checkpoints/step_00000003")  # as if killed after step 2
    Trainer(config("out_dir=runs/cut"), resume=True, device="cpu").fit()
    assert metric_history(workdir / "runs/cut")[3] == offline_run[3]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("distill.temperature=1.0", "temperature: store 2.0, run 1.0"),
        ("data.seq_len=16", "seq_len: store 32, run 16"),
        (
            "data.overrides=[seq_len=32, seed=1, 'synth={out: data/synth, seed: 0, scale: 0.05}']",
            "fingerprint",
        ),
        ("steps=4", "consumes 16 samples"),
    ],
)
def test_a_store_that_does_not_fit_the_run_is_refused(workdir, extra, message) -> None:
    with pytest.raises(ValueError, match=message):
        Trainer(config("out_dir=runs/refused", extra), device="cpu")


def test_interrupted_dump_resumes_through_the_cli(workdir, capsys) -> None:
    shutil.copytree("store", "store2")
    meta = json.loads(Path("store2/meta.json").read_text())
    Path("store2/meta.json").write_text(json.dumps({**meta, "complete": False}))
    for shard in (1, 3):
        shard_path(Path("store2"), shard).unlink()
    kept = {s: shard_path(Path("store2"), s).stat().st_mtime_ns for s in (0, 2)}
    with pytest.raises(ValueError, match="did not finish"):
        TopkStore("store2")
    sets = [x for item in (*RUN, "distill.topk_dir=store2") for x in ("--set", item)]
    args = ["train", "--recipe", "train/tiny_cpu", *sets, "--dump-topk", "--shard-size", str(SHARD)]
    assert main([*args, "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["written"], report["skipped"], report["samples"]) == (2, 2, SAMPLES)
    assert {s: shard_path(Path("store2"), s).stat().st_mtime_ns for s in kept} == kept
    for shard in range(4):
        assert shard_path(Path("store2"), shard).read_bytes() == shard_path(Path("store"), shard).read_bytes()
    assert TopkStore("store2").meta.complete
    # the same directory with another k is refused, naming the field
    assert main([*args, "--set", "distill.topk=4", "--device", "cpu"]) == 1
    assert "k: store 8, run 4" in capsys.readouterr().err


def test_topk_kd_loss_mixes_ce_in_one_pass() -> None:
    torch.manual_seed(0)
    hidden, weight = torch.randn(12, 8, requires_grad=True), torch.randn(50, 8, requires_grad=True)
    labels = torch.randint(0, 50, (12,))
    labels[3] = -100
    ids, logprobs = teacher_topk(torch.randn(12, 50), 5, 1.5)
    got = topk_kd_loss(hidden, weight, labels, ids, logprobs, alpha_ce=0.3, temperature=1.5, chunk_size=5)
    kl = topk_kl_distill(hidden, weight, ids, logprobs, temperature=1.5, mask=labels != -100)
    want = 0.7 * kl + 0.3 * chunked_cross_entropy(hidden, weight, labels)
    torch.testing.assert_close(got, want)
    g_got = torch.autograd.grad(got, (hidden, weight))
    g_want = torch.autograd.grad(want, (hidden, weight))
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b)
