"""Every shipped training recipe parses and matches the paper's Table 4 settings."""

from __future__ import annotations

from importlib import resources

import pytest

from mobilellm_r1.train.config import load_train_config

NAMES = sorted(
    p.name.removesuffix(".yaml") for p in (resources.files("mobilellm_r1.recipes") / "train").iterdir()
)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_parses(name: str) -> None:
    cfg = load_train_config(f"train/{name}")
    assert cfg.name == name
    if name.startswith("pretrain"):
        assert (cfg.steps, cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.final_lr_ratio) == (
            500_000,
            4e-3,
            2000,
            0.1,
        )
        assert cfg.objective == "lm" and cfg.data.micro_batch == 16
    if name.startswith("midtrain"):
        assert (cfg.steps, cfg.optim.lr, cfg.optim.final_lr_ratio) == (50_000, 3.6e-4, 0.0)
        assert cfg.objective == "kd" and cfg.distill.teacher == "meta-llama/Llama-3.1-8B-Instruct"
        assert cfg.model.init_from and cfg.model.preset in name


def test_all_sizes_and_stages_present() -> None:
    for size in ("140m", "360m", "950m"):
        for stage in ("pretrain", "midtrain"):
            for phase in (1, 2):
                assert f"{stage}_{size}_phase{phase}" in NAMES
