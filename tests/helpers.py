"""Shared test helpers: the `../shared/data` location and a small random-model config."""

from __future__ import annotations

from pathlib import Path

from mobilellm_r1.model import ModelConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB = 1000
# `--set` override for train-recipe tests: a 2-layer, 32-wide GQA model (runs in seconds on CPU)
TINY_MODEL_SET = (
    "model.overrides={hidden_size: 32, intermediate_size_mlp: 64, num_hidden_layers: 2, "
    "num_attention_heads: 2, num_key_value_heads: 1, head_dim: 16}"
)


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
