"""Fixtures shared by the deploy tests: a trained `tiny` checkpoint for the export tests (trained
once per session, ~40 s) and the small random models of the generation and batching tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import small_config
from mobilellm_r1.cli import main
from mobilellm_r1.model import build_model
from mobilellm_r1.tokenizer import Tokenizer, load_tokenizer

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


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """The 2-layer test model over a 1,000-token vocabulary (helpers.small_config)."""
    return build_model(small_config(), seed=0).eval()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer()


@pytest.fixture(scope="module")
def big_vocab_model(tokenizer: Tokenizer) -> torch.nn.Module:
    """A tiny model over the real Llama-3 vocabulary, for text prompts and stop strings."""
    cfg = small_config(vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_id, eos_token_id=[])
    return build_model(cfg, seed=1).eval()
