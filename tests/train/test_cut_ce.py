"""Cut cross-entropy (`loss_kernel: cce`) against the chunked loss: the same values and
gradients, ignored tokens, autocast; the trainer runs with it; kd and grpo refuse it. On this
CPU the package's torch_compile reference runs (its Triton kernels need CUDA)."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import TINY_MODEL_SET
from mobilellm_r1.train.config import load_train_config
from mobilellm_r1.train.cut_ce import cut_cross_entropy
from mobilellm_r1.train.losses import chunked_cross_entropy
from mobilellm_r1.train.objectives import objective_for, prepare_data
from mobilellm_r1.train.trainer import Trainer

SMALL = [  # two fp32 steps of the tiny model on a small synthetic mixture
    TINY_MODEL_SET,
    "data.overrides=[seq_len=32, 'synth={out: data/synth, seed: 0, scale: 0.05}']",
    "data.micro_batch=2",
    "precision=fp32",
    "steps=2",
    "checkpoint_every=0",
    "log_every=1",
]


def inputs(n: int = 40, d: int = 16, vocab: int = 300, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen).requires_grad_()
    weight = torch.randn(vocab, d, generator=gen).requires_grad_()
    labels = torch.randint(0, vocab, (n,), generator=gen)
    labels[::7] = -100  # ignored tokens
    return hidden, weight, labels


def loss_and_grads(fn, hidden, weight, labels, **kwargs):
    hidden.grad = weight.grad = None
    loss = fn(hidden, weight, labels, **kwargs)
    loss.backward()
    return loss.detach(), hidden.grad.clone(), weight.grad.clone()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_equals_the_chunked_loss(reduction: str) -> None:
    hidden, weight, labels = inputs()
    ref = loss_and_grads(chunked_cross_entropy, hidden, weight, labels, reduction=reduction, chunk_size=16)
    out = loss_and_grads(cut_cross_entropy, hidden, weight, labels, reduction=reduction)
    assert out[0].dtype == torch.float32
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_under_autocast_matmuls_take_its_dtype() -> None:
    """bf16 autocast: both kernels multiply in bf16 and take the softmax in float32, so they
    agree to bf16 rounding, and both differ from the float32 loss by more than that."""
    hidden, weight, labels = inputs(seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = loss_and_grads(chunked_cross_entropy, hidden, weight, labels, chunk_size=16)
        out = loss_and_grads(cut_cross_entropy, hidden, weight, labels)
    exact = loss_and_grads(cut_cross_entropy, hidden, weight, labels)
    assert out[1].dtype == torch.float32  # gradients in the parameters' dtype
    torch.testing.assert_close(out[0], ref[0], atol=2e-3, rtol=2e-3)
    for a, b in zip(out[1:], ref[1:], strict=True):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-2)
    assert (out[0] - exact[0]).abs() > 1e-5


def test_no_counted_token_gives_zero_and_zero_gradients() -> None:
    hidden, weight, labels = inputs()
    loss, gh, gw = loss_and_grads(cut_cross_entropy, hidden, weight, torch.full_like(labels, -100))
    assert loss.item() == 0.0 and not gh.any() and not gw.any()
    with pytest.raises(ValueError, match="reduction"):
        cut_cross_entropy(hidden, weight, labels, reduction="none")


def test_trainer_runs_with_cce_and_matches_chunked(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    losses = {}
    for kernel in ("chunked", "cce"):
        cfg = load_train_config("train/tiny_cpu", [*SMALL, f"loss_kernel={kernel}", f"out_dir=runs/{kernel}"])
        prepare_data(cfg, "cpu")
        trainer = Trainer(cfg, device="cpu")
        assert trainer.objective.loss_kernel == kernel
        assert trainer.fit()["step"] == 2
        rows = (tmp_path / f"runs/{kernel}/metrics.jsonl").read_text().splitlines()
        losses[kernel] = [r["loss"] for r in map(json.loads, rows) if "loss" in r]
    assert losses["cce"] == pytest.approx(losses["chunked"], rel=1e-4)


@pytest.mark.parametrize("objective", ["kd", "grpo"])
def test_kd_and_grpo_refuse_cce(objective: str) -> None:
    extra = ["distill.topk_dir=x"] if objective == "kd" else ["grpo.prompts=[x.jsonl]"]
    cfg = load_train_config("train/tiny_cpu", [f"objective={objective}", "loss_kernel=cce", *extra])
    with pytest.raises(ValueError, match=f"objective {objective} takes loss_kernel: chunked"):
        objective_for(cfg)
    with pytest.raises(ValueError, match="loss_kernel"):
        load_train_config("train/tiny_cpu", ["loss_kernel=fused"])
