"""The objective registry: a new objective is one class and one registry line; the trainer runs
it unchanged. Data preparation is the caller's, before the trainer is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import TINY_MODEL_SET
from mobilellm_r1.model import build_model, preset
from mobilellm_r1.tokenizer import load_tokenizer
from mobilellm_r1.train.config import GRPOSection, load_train_config
from mobilellm_r1.train.objectives import OBJECTIVES, prepare_data
from mobilellm_r1.train.objectives.grpo import GRPOObjective
from mobilellm_r1.train.objectives.lm import LMObjective
from mobilellm_r1.train.trainer import Trainer

SMALL = [
    TINY_MODEL_SET,
    "data.overrides=[seq_len=32, 'synth={out: data/synth, seed: 0, scale: 0.05}']",
    "data.micro_batch=2",
    "optim.warmup_steps=1",
    "precision=fp32",
    "loss_chunk_tokens=64",
    "steps=2",
    "checkpoint_every=0",
    "log_every=1",
]


class DoubledLM(LMObjective):
    """A toy objective: twice the next-token cross-entropy, on the LM objective's mixture."""

    def head_loss(self, hidden, weight, labels, batch) -> torch.Tensor:
        return 2 * super().head_loss(hidden, weight, labels, batch)


def step_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_a_toy_objective_registered_in_one_line_trains_through_the_trainer(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    unknown = load_train_config("train/tiny_cpu", [*SMALL, "objective=toy"])
    with pytest.raises(
        ValueError, match=r"objective: expected one of \['lm', 'kd', 'sft', 'grpo'\], got 'toy'"
    ):
        prepare_data(unknown, "cpu")
    monkeypatch.setitem(OBJECTIVES, "toy", DoubledLM)  # the one registry line
    for name in ("lm", "toy"):
        cfg = load_train_config("train/tiny_cpu", [*SMALL, f"objective={name}", f"out_dir=runs/{name}"])
        prepare_data(cfg, "cpu")
        trainer = Trainer(cfg, device="cpu")
        assert type(trainer.objective) is OBJECTIVES[name]
        assert trainer.fit()["step"] == 2
    lm, toy = step_losses(tmp_path / "runs/lm"), step_losses(tmp_path / "runs/toy")
    assert sorted(toy) == [1, 2]
    assert toy[1] == pytest.approx(2 * lm[1], rel=1e-5)  # same seed, same batch: the toy's loss
    assert (tmp_path / "runs/toy/final/model.safetensors").is_file()


def test_the_trainer_prepares_no_data(tmp_path, monkeypatch) -> None:
    """Synthesising / tokenizing is `prepare_data`'s job, before the trainer is built."""
    monkeypatch.chdir(tmp_path)
    cfg = load_train_config("train/tiny_cpu", SMALL)
    with pytest.raises(FileNotFoundError, match="no tokenized shards"):
        Trainer(cfg, device="cpu")
    assert not (tmp_path / "data").exists()


def test_grpo_keeps_its_frozen_reference_out_of_the_checkpointed_module() -> None:
    model = build_model(preset("tiny", hidden_size=32, intermediate_size_mlp=64, num_hidden_layers=2,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=16), seed=0)  # fmt: skip
    objective = GRPOObjective(model, load_tokenizer(), GRPOSection(kl_beta=0.04, judge_workers=1))
    try:
        assert objective.reference.model is not None and objective.reference.model is not model
        assert set(objective.state_dict()) == {f"model.{k}" for k in model.state_dict()}
        assert sum(p.numel() for p in objective.parameters()) == sum(p.numel() for p in model.parameters())
    finally:
        objective.close()
