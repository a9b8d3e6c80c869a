"""A trained `tiny` checkpoint shared by the export tests (trained once per session, ~40 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobilellm_r1.cli import main

TRAIN_STEPS = 16


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` preset (Llama-3 vocabulary) after a short run of `train/tiny_cpu`, so greedy
    decoding has real margins: its final HF-format directory."""
    out = tmp_path_factory.mktemp("tiny_trained")
    sets = [f"steps={TRAIN_STEPS}", f"checkpoint_every={TRAIN_STEPS}", "eval_every=0", f"out_dir={out}"]
    sets += ["optim.warmup_steps=4", "optim.final_lr_ratio=0.5"]
    argv = ["train", "--recipe", "train/tiny_cpu", "--device", "cpu"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return out / "final"
