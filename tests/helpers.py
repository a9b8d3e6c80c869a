"""Shared test helpers: the `../shared/data` location, a small random-model config and a
PyTorch stand-in for an exported file's runtime."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from mobilellm_r1.model import ModelConfig
from mobilellm_r1.model.model import KVCache, Transformer
from mobilellm_r1.tokenizer import Tokenizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB = 1000
# The first stages of the small e2e recipes in tests/pipeline: a 5% synthetic corpus and its shards.
E2E_DATA_STAGES = """  - name: synth
    run: data synth --out data/synth --seed 0 --scale 0.05
    outputs: [data/synth]
  - name: tokenize
    run: data tokenize --recipe data/synthetic --workers 1
    inputs: [data/synth]
    outputs: [data/shards/synthetic]"""
# `--set` override for train-recipe tests: a 2-layer, 32-wide GQA model (runs in seconds on CPU)
TINY_MODEL_SET = (
    "model.overrides={hidden_size: 32, intermediate_size_mlp: 64, num_hidden_layers: 2, "
    "num_attention_heads: 2, num_key_value_heads: 1, head_dim: 16}"
)


# `--set` overrides for quick CPU training runs of `train/tiny_cpu` (a 5% synthetic corpus)
TINY_TRAIN_SET = [
    TINY_MODEL_SET,
    "data.overrides=[seq_len=64, 'synth={out: data/synth, seed: 0, scale: 0.05}']",
    "data.micro_batch=4",
    "optim.warmup_steps=2",
    "optim.lr=0.01",
    "loss_chunk_tokens=128",
    "log_every=1",
    "eval_every=0",
    "precision=fp32",
]


def metric_history(run_dir: Path, key: str = "loss") -> dict[int, float]:
    """step -> loss (or another metric) from a run's metrics.jsonl (a resumed run's later lines win)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if key in record:
            out[record["step"]] = record[key]
    return out


def small_config(**overrides) -> ModelConfig:
    """A 2-layer GQA model over a 1,000-token vocabulary, initialised sharply enough
    (std 0.1) that greedy argmax margins are not razor thin."""
    values = dict(
        hidden_size=64,
        intermediate_size_mlp=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        initializer_range=0.1,
        bos_token_id=1,
        eos_token_id=[2],
    )
    return ModelConfig(**{**values, **overrides})


class TorchRuntime:
    """A FileRuntime over our own model and KV cache (batch 1)."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer, max_context: int) -> None:
        self.model, self.tokenizer, self.max_context = model, tokenizer, max_context
        self.path, self.metadata = "torch-runtime", {}
        self.vocab_size = model.config.vocab_size
        self.eos_token_id = list(model.config.eos_token_id)
        self.cache = KVCache(model.config, 1, max_context, dtype=torch.float32)
        self.calls: list[tuple[int, int]] = []  # (start, len(ids)) of every forward

    def forward(self, ids: list[int], start: int) -> torch.Tensor:
        self.calls.append((start, len(ids)))
        pos = torch.arange(start, start + len(ids))
        logits = self.model(torch.tensor([ids]), cache=self.cache, cache_pos=pos)
        return logits[0, -1].float()


def prompts_of(lengths: list[int] | tuple[int, ...], seed: int = 0) -> list[list[int]]:
    """Random prompts of the given lengths over ids 3..VOCAB-1 (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in lengths]


def finite_numbers(tree) -> list[float]:
    """Every number in a JSON tree (a benchmark's result); asserts each is finite."""
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in finite_numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in finite_numbers(v)]
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        assert math.isfinite(tree)
        return [tree]
    return []


def processes_under(directory: Path) -> list[int]:
    """Processes whose working directory is `directory` or below it (Linux /proc): a run's stages
    work in its run directory."""
    root, found = directory.resolve(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:  # gone, or not ours to read
            continue
        if cwd == root or root in cwd.parents:
            found.append(int(pid))
    return found
