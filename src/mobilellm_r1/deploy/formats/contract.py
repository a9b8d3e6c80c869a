"""What every format module and the export driver share: the options of an export, its error
type, the 4-bit group-size rules and the metadata keys every exported file carries.

Kept apart from `deploy/export.py` (which imports the formats) so a format imports this, never
the driver.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...model.config import ModelConfig

METADATA_PREFIX = "mobilellm_r1."
METADATA_VERSION = "1"
GROUP_SIZES = (128, 32)  # the paper's 4-bit groups: 128, or 32 where 128 does not divide a width


class ExportError(ValueError):
    """An export that cannot be done exactly: the message names the field, width or file."""


@dataclass(frozen=True)
class ExportOptions:
    """What to write. `quant` is one of the format's `quants`; `max_context` None means the
    model's `max_position_embeddings`; `group_size` None means the paper's choice
    (`default_group_size`); `embedding_group_size` is the 4-bit embedding's group; `kv_cache` is
    how a format that holds its KV cache in the file stores it (pte: fp32 or int8)."""

    quant: str
    max_context: int | None = None
    group_size: int | None = None
    embedding_group_size: int = 32
    kv_cache: str = "fp32"

    def context(self, cfg: ModelConfig) -> int:
        return self.max_context or cfg.max_position_embeddings


def linear_input_widths(cfg: ModelConfig) -> dict[str, int]:
    """Input width of every linear layer kind (what a weight group must divide)."""
    return {
        "q/k/v and gate/up (hidden_size)": cfg.hidden_size,
        "o_proj (num_attention_heads * head_dim)": cfg.num_attention_heads * cfg.head_dim,
        "down_proj (intermediate_size_mlp)": cfg.intermediate_size_mlp,
        "lm_head (hidden_size)": cfg.hidden_size,
    }


def default_group_size(cfg: ModelConfig) -> int:
    """128 when it divides every linear input width, else 32 (the 140M's 576 needs 32)."""
    widths = linear_input_widths(cfg).values()
    return next((g for g in GROUP_SIZES if all(w % g == 0 for w in widths)), GROUP_SIZES[-1])


def check_group_size(cfg: ModelConfig, group: int, what: str = "--group-size") -> None:
    """ExportError naming the first width `group` does not divide."""
    if group < 1:
        raise ExportError(f"{what} must be positive, got {group}")
    for name, width in linear_input_widths(cfg).items():
        if width % group:
            raise ExportError(f"{what} {group} does not divide the width {width} of {name}")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_metadata(values: dict[str, str], source: str) -> dict[str, str]:
    """The metadata of an exported file without the prefix; an error if it has none."""
    ours = {k[len(METADATA_PREFIX) :]: v for k, v in values.items() if k.startswith(METADATA_PREFIX)}
    if "config" not in ours:
        raise ExportError(f"{source}: not written by `mobilellm-r1 export` (no {METADATA_PREFIX}config)")
    return ours
