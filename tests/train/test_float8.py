"""FP8 training (`fp8: tensorwise | rowwise`, torchao's Float8Linear, emulated on CPU): which
linears are swapped, the names checkpoints see, a short run that tracks bf16, the recipe check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import TINY_TRAIN_SET, metric_history, small_config
from mobilellm_r1.model import build_model
from mobilellm_r1.model.hf import load_pretrained
from mobilellm_r1.train.config import load_train_config
from mobilellm_r1.train.float8 import convert_to_float8
from mobilellm_r1.train.objectives import prepare_data
from mobilellm_r1.train.trainer import Trainer

pytest.importorskip("torchao.float8")


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_every_decoder_linear_is_swapped_and_names_stay(recipe: str) -> None:
    model = build_model(small_config(), device="cpu", seed=0)
    names = list(model.state_dict())
    swapped = convert_to_float8(model.layers, recipe)
    assert swapped == 4 * len(model.layers)  # qkv, o, gate_up, down per layer
    assert list(model.state_dict()) == names
    assert type(model.embed_tokens).__name__ == "Embedding"
    x = torch.randint(0, 1000, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_unaligned_linears_are_left_alone_and_none_is_a_clear_error() -> None:
    layers = nn.ModuleList([nn.Sequential(nn.Linear(32, 48), nn.Linear(48, 20))])
    assert convert_to_float8(layers, "tensorwise") == 1
    assert type(layers[0][1]) is nn.Linear
    with pytest.raises(ValueError, match="divisible by 16"):
        convert_to_float8(nn.ModuleList([nn.Linear(30, 20)]), "rowwise")
    assert convert_to_float8(nn.ModuleList([nn.Linear(30, 20)]), "none") == 0


def test_fp8_run_tracks_bf16_and_exports_plain_weights(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    common = [*TINY_TRAIN_SET, "precision=bf16", "steps=20", "checkpoint_every=0"]
    runs = {}
    for fp8 in ("none", "tensorwise"):
        cfg = load_train_config("train/tiny_cpu", [*common, f"fp8={fp8}", f"out_dir=runs/{fp8}"])
        prepare_data(cfg, "cpu")
        Trainer(cfg, device="cpu").fit()
        runs[fp8] = metric_history(tmp_path / "runs" / fp8)
    bf16, fp8 = runs["none"], runs["tensorwise"]
    assert fp8[1] == pytest.approx(bf16[1], rel=0.02)  # same initial weights and batch
    late = [abs(fp8[s] - bf16[s]) / bf16[s] for s in range(16, 21)]
    assert max(late) < 0.05, late
    assert sum(fp8[s] for s in range(18, 21)) < sum(fp8[s] for s in range(1, 4)) - 1.0
    model, _ = load_pretrained(tmp_path / "runs/tensorwise/final")  # a plain model, same names
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))


def test_fp8_needs_bf16() -> None:
    with pytest.raises(ValueError, match="fp8: rowwise needs precision: bf16"):
        load_train_config("train/tiny_cpu", ["fp8=rowwise", "precision=fp32"])
