"""`ModelConfig`: the Llama-4-text decoder of MobileLLM-R1, with the paper's presets.

Field names follow Hugging Face's `Llama4TextConfig` (`model_type: llama4_text`) so a
config round-trips through `config.json` without a translation table. Only the dense,
MobileLLM-R1 subset of Llama-4 is represented: no mixture-of-experts layers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

LLAMA3_VOCAB_SIZE = 128_256
BOS_ID = 128_000
EOS_IDS = (128_001, 128_008, 128_009)  # <|end_of_text|>, <|eom_id|>, <|eot_id|>

# Base models train at 4k context; the post-trained models run at 32k after the
# reasoning-SFT stage raised `rope_theta` by 8x (seeds' sft/README.md). The released
# post-trained configs carry rope_theta = 8e6, so the base value is 1e6.
BASE_CONTEXT = 4_096
LONG_CONTEXT = 32_768
BASE_ROPE_THETA = 1_000_000.0
LONG_CONTEXT_ROPE_SCALE = 8.0
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # weight dtypes by name (the --dtype choices)


@dataclass
class ModelConfig:
    """Architecture hyper-parameters (names as in HF `Llama4TextConfig`)."""

    hidden_size: int = 576
    intermediate_size_mlp: int = 2048
    num_hidden_layers: int = 15
    num_attention_heads: int = 9
    num_key_value_heads: int = 3
    head_dim: int = 64
    vocab_size: int = LLAMA3_VOCAB_SIZE
    max_position_embeddings: int = BASE_CONTEXT
    rope_theta: float = BASE_ROPE_THETA
    rms_norm_eps: float = 1e-5
    use_qk_norm: bool = True
    tie_word_embeddings: bool = True
    # 1 = layer uses RoPE (and QK-norm); 0 = NoPE layer. Empty means RoPE everywhere.
    no_rope_layers: list[int] = field(default_factory=list)
    attn_temperature_tuning: bool = False  # Llama-4 query scaling on NoPE layers
    floor_scale: int = 8192
    attn_scale: float = 0.1
    initializer_range: float = 0.02
    bos_token_id: int = BOS_ID
    eos_token_id: list[int] = field(default_factory=lambda: list(EOS_IDS))
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if not self.no_rope_layers:
            self.no_rope_layers = [1] * self.num_hidden_layers
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field if the configuration is inconsistent."""
        positive = ("hidden_size", "intermediate_size_mlp", "num_hidden_layers", "num_attention_heads")
        for name in (*positive, "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("rope_theta", "rms_norm_eps", "initializer_range", "attn_scale"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ModelConfig.{name} must be a finite number > 0, got {value}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"ModelConfig.num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if len(self.no_rope_layers) != self.num_hidden_layers:
            raise ValueError(
                f"ModelConfig.no_rope_layers has {len(self.no_rope_layers)} entries, "
                f"expected num_hidden_layers={self.num_hidden_layers}"
            )

    # ------------------------------------------------------------------ sizes
    @property
    def n_rep(self) -> int:
        """Query heads per key/value head (GQA group size)."""
        return self.num_attention_heads // self.num_key_value_heads

    def num_params(self, include_embedding: bool = True) -> int:
        """Parameter count, equal to `sum(p.numel())` of the built model (tied head counted once)."""
        d, h = self.hidden_size, self.head_dim
        attn = d * h * (2 * self.num_attention_heads + 2 * self.num_key_value_heads)
        mlp = 3 * d * self.intermediate_size_mlp
        per_layer = attn + mlp + 2 * d
        body = self.num_hidden_layers * per_layer + d
        emb = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return body + (emb if include_embedding else 0)

    def flops_per_token(self, context: int) -> dict[str, float]:
        """Matmul FLOPs per token at a given attention context length.

        forward = 2 * (non-embedding matmul params + LM-head params) + 4 * L * H * head_dim * context
        (QK^T and AV, each 2 FLOPs per multiply-add). Training (fwd + bwd) is 3x forward;
        `train_6n` is the common 6 * params + 12 * L * d * T approximation.
        """
        matmul = self.num_params(include_embedding=False) - self.num_hidden_layers * 2 * self.hidden_size
        matmul -= self.hidden_size  # norms hold no matmul weights
        head = self.vocab_size * self.hidden_size
        attn = 4 * self.num_hidden_layers * self.num_attention_heads * self.head_dim * context
        forward = 2 * (matmul + head) + attn
        train_6n = 6 * self.num_params() + 12 * self.num_hidden_layers * self.hidden_size * context
        return {"forward": float(forward), "train": float(3 * forward), "train_6n": float(train_6n)}

    def kv_cache_bytes_per_token(self, bytes_per_elem: int = 2) -> int:
        """Bytes of K and V cached per token over all layers (bf16 by default)."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * bytes_per_elem

    # ------------------------------------------------------------------ variants
    def with_long_context(self) -> ModelConfig:
        """The post-trained 32k-context variant: rope_theta x8 (seeds' reasoning-SFT step)."""
        return dataclasses.replace(
            self,
            rope_theta=self.rope_theta * LONG_CONTEXT_ROPE_SCALE,
            max_position_embeddings=LONG_CONTEXT,
            no_rope_layers=list(self.no_rope_layers),
            eos_token_id=list(self.eos_token_id),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a dict, rejecting unknown keys with a message that names them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        return cls(**values)


# Paper Table (layers / heads / kv-heads / dim / hidden): 15/9/3/576/2048, 15/16/4/1024/4096,
# 22/24/6/1536/6144. `tiny` is a CPU-sized model with the same structure.
_PRESETS: dict[str, dict[str, Any]] = {
    "140m": dict(
        num_hidden_layers=15,
        num_attention_heads=9,
        num_key_value_heads=3,
        hidden_size=576,
        intermediate_size_mlp=2048,
    ),
    "360m": dict(
        num_hidden_layers=15,
        num_attention_heads=16,
        num_key_value_heads=4,
        hidden_size=1024,
        intermediate_size_mlp=4096,
    ),
    "950m": dict(
        num_hidden_layers=22,
        num_attention_heads=24,
        num_key_value_heads=6,
        hidden_size=1536,
        intermediate_size_mlp=6144,
    ),
    # 64-wide heads as in every paper size: the parameter-free QK-norm caps a head's attention
    # logits at sqrt(head_dim), and 32-wide heads (logits <= 5.7) learned to copy numbers from
    # the question far more slowly (e2e/tiny_cpu SFT exact match 1.6% vs 6.2%, same compute).
    "tiny": dict(
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        hidden_size=128,
        intermediate_size_mlp=384,
        head_dim=64,
    ),
}
PRESETS: tuple[str, ...] = tuple(_PRESETS)


def tokenizer_fields(tokenizer: Any) -> dict[str, Any]:
    """The config fields a model takes from its tokenizer (a `Tokenizer`): vocab_size,
    bos_token_id and eos_token_id (the tokenizer's stop ids), as `preset(...)` overrides."""
    return {
        "vocab_size": tokenizer.vocab_size,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": list(tokenizer.stop_ids),
    }


def preset(name: str, long_context: bool = False, **overrides: Any) -> ModelConfig:
    """Config for a named preset (`140m`, `360m`, `950m`, `tiny`); `long_context` gives the 32k variant."""
    key = name.lower()
    if key not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    cfg = ModelConfig.from_dict({**_PRESETS[key], **overrides})
    return cfg.with_long_context() if long_context else cfg
