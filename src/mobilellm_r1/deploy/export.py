"""`export_checkpoint`: a checkpoint directory (ours, or one written by transformers) -> one
on-device file (`deploy/formats/`), written under a temporary name and renamed when complete.

Every format stores the same metadata (`export_metadata`): the model config, the quantization,
the context the file was built for, and the identity of the tokenizer and chat template, so a
runtime can rebuild the exact prompt ids and refuse a mismatched tokenizer.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..atomic import atomic_output
from .formats import FORMATS, FileFormat
from .formats.contract import (
    METADATA_PREFIX,
    METADATA_VERSION,
    ExportError,
    ExportOptions,
    default_group_size,
    sha256_text,
)

if TYPE_CHECKING:
    from ..model.config import ModelConfig
    from ..tokenizer import Tokenizer


def check_context(cfg: ModelConfig, options: ExportOptions) -> None:
    context = options.context(cfg)
    if not 1 <= context <= cfg.max_position_embeddings:
        raise ExportError(
            f"--max-context {context} must be between 1 and the model's max_position_embeddings "
            f"({cfg.max_position_embeddings})"
        )


def check_kv_cache(fmt: FileFormat, options: ExportOptions) -> None:
    """Only a pte file holds its KV cache (the other formats' runtimes choose theirs)."""
    if options.kv_cache != "fp32" and fmt.name != "pte":
        raise ExportError(
            f"--kv-cache {options.kv_cache!r}: only a pte file holds its KV cache; "
            f"{fmt.name} takes the default (fp32)"
        )


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
    check_kv_cache(fmt, options)
    module = fmt.load()
    model, tokenizer = load_checked(model_dir, device="cpu", dtype="float32")
    check_context(model.config, options)
    module.check(model.config, options)
    metadata = export_metadata(model.config, tokenizer, options, fmt, str(model_dir))
    with atomic_output(out) as tmp:
        module.write(model, tokenizer, tmp, options, metadata)
    return out
