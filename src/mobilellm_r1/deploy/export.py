"""`export_checkpoint`: a checkpoint directory (ours, or one written by transformers) -> one
on-device file (`deploy/formats/`), written under a temporary name and renamed when complete.

Every format stores the same metadata (`export_metadata`): the model config, the quantization,
the context the file was built for, and the identity of the tokenizer and chat template, so a
runtime can rebuild the exact prompt ids and refuse a mismatched tokenizer.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..atomic import atomic_output
from .formats import FORMATS, FileFormat

if TYPE_CHECKING:
    from ..model.config import ModelConfig
    from ..tokenizer import Tokenizer

METADATA_PREFIX = "mobilellm_r1."
METADATA_VERSION = "1"
GROUP_SIZES = (128, 32)  # the paper's 4-bit groups: 128, or 32 where 128 does not divide a width


class ExportError(ValueError):
    """An export that cannot be done exactly: the message names the field, width or file."""


@dataclass(frozen=True)
class ExportOptions:
    """What to write. `quant` is one of the format's `quants`; `max_context` None means the
    model's `max_position_embeddings`; `group_size` None means the paper's choice
    (`default_group_size`); `embedding_group_size` is the 4-bit embedding's group."""

    quant: str
    max_context: int | None = None
    group_size: int | None = None
    embedding_group_size: int = 32

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


def check_context(cfg: ModelConfig, options: ExportOptions) -> None:
    context = options.context(cfg)
    if not 1 <= context <= cfg.max_position_embeddings:
        raise ExportError(
            f"--max-context {context} must be between 1 and the model's max_position_embeddings "
            f"({cfg.max_position_embeddings})"
        )


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def export_metadata(
    cfg: ModelConfig, tokenizer: Tokenizer, options: ExportOptions, fmt: FileFormat, source: str
) -> dict[str, str]:
    """The key -> string metadata every exported file carries (keys under `METADATA_PREFIX`)."""
    values = {
        "metadata_version": METADATA_VERSION,
        "format": fmt.name,
        "quant": options.quant,
        "group_size": str(options.group_size or default_group_size(cfg)),
        "embedding_group_size": str(options.embedding_group_size),
        "max_context": str(options.context(cfg)),
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "tokenizer_sha256": tokenizer.fingerprint(),
        "chat_template": tokenizer.chat_template,
        "chat_template_sha256": sha256_text(tokenizer.chat_template),
        "source": source,
        "exported_by": f"mobilellm-r1 {__version__}",
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return {METADATA_PREFIX + k: v for k, v in values.items()}


def read_metadata(values: dict[str, str], source: str) -> dict[str, str]:
    """The metadata of an exported file without the prefix; an error if it has none."""
    ours = {k[len(METADATA_PREFIX) :]: v for k, v in values.items() if k.startswith(METADATA_PREFIX)}
    if "config" not in ours:
        raise ExportError(f"{source}: not written by `mobilellm-r1 export` (no {METADATA_PREFIX}config)")
    return ours


def export_checkpoint(model_dir: str | Path, fmt_name: str, out: str | Path, options: ExportOptions) -> Path:
    """Load `model_dir` in float32 on the CPU, check, and write `out` atomically."""
    from ..model.hf import load_checked

    if fmt_name not in FORMATS:
        raise ExportError(f"unknown format {fmt_name!r}; choose from {', '.join(FORMATS)}")
    fmt = FORMATS[fmt_name]
    out = Path(out)
    if out.suffix.lower() != fmt.suffix:
        raise ExportError(f"--out {out}: a {fmt.name} file must end in {fmt.suffix}")
    if options.quant not in fmt.quants:
        raise ExportError(f"--quant {options.quant!r}: {fmt.name} takes {', '.join(fmt.quants)}")
    module = fmt.load()
    model, tokenizer = load_checked(model_dir, device="cpu", dtype="float32")
    check_context(model.config, options)
    module.check(model.config, options)
    metadata = export_metadata(model.config, tokenizer, options, fmt, str(model_dir))
    with atomic_output(out) as tmp:
        module.write(model, tokenizer, tmp, options, metadata)
    return out
