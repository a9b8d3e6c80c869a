"""`mobilellm-r1 info` (a preset's sizes and costs) and `mobilellm-r1 init` (a random checkpoint).

Heavy modules (torch, the model) are imported inside the `run` functions only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..argtypes import Command, positive_int
from .config import DTYPE_NAMES, PRESETS, preset, tokenizer_fields


def _fmt_int(value: int) -> str:
    return f"{value:,}"


def _fmt_si(value: float, unit: str) -> str:
    """1.234e9 -> '1.23 G<unit>'."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:g} {unit}"


def _fmt_bytes(value: int) -> str:
    for scale, unit in ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if value >= scale:
            return f"{_fmt_int(value)} B ({value / scale:.1f} {unit})"
    return f"{_fmt_int(value)} B"


ARCH_FIELDS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size_mlp",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
    "use_qk_norm",
    "tie_word_embeddings",
)


def info_record(name: str, long_context: bool = False, context: int | None = None) -> dict[str, Any]:
    """Sizes and costs of one preset as a JSON-ready dict (see `info --help`)."""
    cfg = preset(name, long_context=long_context)
    ctx = context or cfg.max_position_embeddings
    if ctx > cfg.max_position_embeddings:
        hint = "" if long_context else " (add --long-context for the 32k variant)"
        raise ValueError(
            f"--context {ctx} exceeds max_position_embeddings={cfg.max_position_embeddings}{hint}"
        )
    flops = cfg.flops_per_token(ctx)
    kv = cfg.kv_cache_bytes_per_token(2)
    return {
        "preset": name.lower(),
        "long_context": long_context,
        "context": ctx,
        "total_params": cfg.num_params(),
        "non_embedding_params": cfg.num_params(include_embedding=False),
        "flops_per_token_forward": flops["forward"],
        "flops_per_token_train": flops["train"],
        "flops_per_token_train_6n": flops["train_6n"],
        "kv_cache_bytes_per_token_bf16": kv,
        "kv_cache_bytes_at_context_bf16": kv * ctx,
        "config": cfg.to_dict(),
    }


_INFO_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("total params", lambda r: _fmt_int(r["total_params"])),
    ("non-embedding params", lambda r: _fmt_int(r["non_embedding_params"])),
    ("context (for FLOPs)", lambda r: _fmt_int(r["context"])),
    ("forward FLOPs/token", lambda r: _fmt_si(r["flops_per_token_forward"], "FLOP")),
    ("train FLOPs/token (3x fwd)", lambda r: _fmt_si(r["flops_per_token_train"], "FLOP")),
    ("train FLOPs/token (6N)", lambda r: _fmt_si(r["flops_per_token_train_6n"], "FLOP")),
    ("KV cache/token (bf16)", lambda r: _fmt_bytes(r["kv_cache_bytes_per_token_bf16"])),
    ("KV cache @ context (bf16)", lambda r: _fmt_bytes(r["kv_cache_bytes_at_context_bf16"])),
    *((name, lambda r, n=name: str(r["config"][n])) for name in ARCH_FIELDS),
)


def format_info_table(records: Sequence[dict[str, Any]]) -> str:
    """A text table: one row per quantity, one column per preset."""
    rows = [["preset", *(r["preset"] + (" (32k)" if r["long_context"] else "") for r in records)]]
    rows += [[label, *(fmt(r) for r in records)] for label, fmt in _INFO_ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", required=True, metavar="P", help="preset name (140m, 360m, 950m, tiny) or 'all'"
    )
    parser.add_argument(
        "--long-context", action="store_true", help="the 32k post-trained variant (rope_theta x8)"
    )
    parser.add_argument(
        "--context",
        type=positive_int,
        metavar="N",
        help="attention context for the FLOPs (default: the preset's max_position_embeddings)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_info(args: argparse.Namespace) -> int:
    """`info`: print sizes and costs of one or all presets."""
    names = list(PRESETS) if args.preset.lower() == "all" else [args.preset]
    records = [info_record(n, args.long_context, args.context) for n in names]
    if args.json:
        payload: Any = records if args.preset.lower() == "all" else records[0]
        print(json.dumps(payload, indent=2))
    else:
        print(format_info_table(records))
    return 0


INFO = Command(
    name="info",
    help="parameter counts, FLOPs and KV-cache size of a preset",
    description="""\
Print a preset's parameter counts (total and without the embedding), matmul FLOPs per
token at an attention context (forward, and training = 3x forward; the 6N approximation
is shown too), the KV-cache bytes per token at bf16 and the architecture fields.

examples:
  mobilellm-r1 info --preset 950m
  mobilellm-r1 info --preset 360m --long-context --context 16384 --json
  mobilellm-r1 info --preset all --json""",
    add_arguments=_add_info_arguments,
    run=run_info,
)


def _check_output_dir(path: Path, force: bool) -> None:
    """Refuse a non-directory, or a non-empty directory unless `force`."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise FileExistsError(f"{path} is not empty; pass --force to replace it")


def _add_init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, metavar="P", help="preset name (140m, 360m, 950m, tiny)")
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="checkpoint directory to write"
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")
    parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, default="float32", help="weight dtype on disk (default: float32)"
    )
    parser.add_argument(
        "--long-context", action="store_true", help="the 32k variant (rope_theta x8, 32768 positions)"
    )
    parser.add_argument(
        "--tokenizer",
        metavar="PATH",
        default=None,
        help="tokenizer directory or file (default: Llama-3); sets the vocabulary size and the "
        "begin/end ids, and is saved with the model",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace DIR even if it is not empty (its files are removed)"
    )


def run_init(args: argparse.Namespace) -> int:
    """`init`: save a randomly initialised model with its tokenizer (default: Llama-3)."""
    from ..tokenizer import load_tokenizer
    from .hf import dtype_from_name, save_pretrained
    from .model import build_model

    tokenizer = load_tokenizer(args.tokenizer)
    ids = tokenizer_fields(tokenizer) if args.tokenizer is not None else {}
    cfg = preset(args.preset, long_context=args.long_context, **ids)
    _check_output_dir(args.out, args.force)
    model = build_model(cfg, seed=args.seed)
    path = save_pretrained(model, tokenizer, args.out, dtype=dtype_from_name(args.dtype))
    count = sum(p.numel() for p in model.parameters())
    print(f"{path}")
    print(f"{args.preset.lower()}: {_fmt_int(count)} parameters, {args.dtype}, seed {args.seed}")
    return 0


INIT = Command(
    name="init",
    help="write a randomly initialised checkpoint",
    description="""\
Build a preset with random weights (normal, std = initializer_range) and save it as a
Hugging Face directory (config.json, model.safetensors, tokenizer files) that `generate`,
`load_pretrained` and transformers' AutoModelForCausalLM can load. An existing non-empty
DIR is refused unless --force, which replaces it.

examples:
  mobilellm-r1 init --preset tiny --out runs/tiny-init
  mobilellm-r1 init --preset 950m --out ckpt/950m-init --dtype bfloat16 --seed 1""",
    add_arguments=_add_init_arguments,
    run=run_init,
)


COMMANDS = (INFO, INIT)
