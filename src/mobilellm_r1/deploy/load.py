"""Open what `--model` names, for generation: a checkpoint directory (or hub id) runs on our
batched `Generator`; an exported file (`.pte`, `.gguf`: `deploy/formats/`) runs in its own
runtime under `FileGenerator`, with the same prompts, sampling, stop rules and streaming."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .formats import format_of_path

if TYPE_CHECKING:
    from ..model.model import Transformer
    from ..tokenizer import Tokenizer
    from .file_runtime import FileGenerator
    from .generate import Generator


@dataclass
class LoadedModel:
    """A generator and what callers need beside it. `model` is None for an exported file (it
    runs outside PyTorch, so log-likelihood scoring needs the checkpoint)."""

    generator: Generator | FileGenerator
    tokenizer: Tokenizer
    model: Transformer | None
    eos_token_id: list[int]
    context: int  # the most prompt + new tokens one sample can hold
    source: str


def is_exported_file(path: str | os.PathLike) -> bool:
    """True when `path` names an exported file by its suffix (it need not exist yet)."""
    return format_of_path(path) is not None


def load_for_generation(
    path: str | os.PathLike,
    *,
    device: str | None = None,
    dtype: str | None = None,
    compile: bool = False,
    threads: int | None = None,
    sync_every: int = 16,
) -> LoadedModel:
    """A checkpoint on `device` in `dtype` (None: the checkpoint's), or an exported file on the
    CPU with `threads` threads; options that do not apply to the kind given are an error."""
    if is_exported_file(path):
        return _load_file(Path(path), device=device, dtype=dtype, compile=compile, threads=threads)
    import torch

    from ..model.hf import load_checked
    from .generate import Generator

    if threads is not None:
        torch.set_num_threads(threads)
    model, tokenizer = load_checked(path, device=device, dtype=dtype)
    generator = Generator(model, tokenizer, compile=compile, sync_every=sync_every)
    cfg = model.config
    return LoadedModel(
        generator, tokenizer, model, list(cfg.eos_token_id), cfg.max_position_embeddings, str(path)
    )


def _load_file(
    path: Path, *, device: str | None, dtype: str | None, compile: bool, threads: int | None
) -> LoadedModel:
    fmt = format_of_path(path)
    assert fmt is not None
    given = [
        name for name, value in (("--device", device), ("--dtype", dtype), ("--compile", compile)) if value
    ]
    if given and not (given == ["--device"] and device == "cpu"):
        raise ValueError(
            f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to checkpoint directories; "
            f"{path} is a {fmt.name} file, which runs on the CPU in its own runtime"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{fmt.name} file not found: {path}")
    from .file_runtime import FileGenerator

    runtime = fmt.load().open_runtime(path, threads=threads)
    generator = FileGenerator(runtime)
    return LoadedModel(
        generator, runtime.tokenizer, None, list(runtime.eos_token_id), runtime.max_context, str(path)
    )
