"""On-device file formats: one module per format, one line per format in `FORMATS`.

A format module (imported only when used: its packages are the optional `.[deploy]` extra)
defines three functions:

    check(cfg: ModelConfig, options: ExportOptions) -> None
        raise `ExportError` if this model or these options cannot be written exactly
        (called before any work, so a refused export costs nothing and writes nothing);
    write(model: Transformer, tokenizer: Tokenizer, path: Path, options: ExportOptions,
          metadata: dict[str, str]) -> None
        write the file at `path` (a temporary name: `deploy.export` renames it when done),
        with `metadata` stored in it so `open_runtime` can give it back;
    open_runtime(path: Path, threads: int | None = None) -> FileRuntime
        the file loaded in its own runtime (see `deploy.file_runtime.FileRuntime`).

`mobilellm-r1 export --format NAME` and `generate --model FILE.<suffix>` find them here.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType


class MissingPackageError(RuntimeError):
    """A format's optional packages are not installed."""


@dataclass(frozen=True)
class FileFormat:
    """A file format: its name, file suffix, quantization choices (default first), the module
    that writes and runs it and the import names of the packages that module needs."""

    name: str
    suffix: str
    quants: tuple[str, ...]
    module: str
    packages: tuple[str, ...]
    summary: str

    def load(self) -> ModuleType:
        """The format's module; a missing package is one clear error naming the extra."""
        missing = [p for p in self.packages if importlib.util.find_spec(p) is None]
        if missing:
            raise MissingPackageError(
                f"the {self.name} format needs {', '.join(missing)}: "
                "pip install 'mobilellm-r1[deploy]' (see the README's deployment section)"
            )
        return importlib.import_module(self.module)


FORMATS: dict[str, FileFormat] = {
    "pte": FileFormat(
        "pte",
        ".pte",
        ("none", "8da4w"),
        "mobilellm_r1.deploy.formats.pte",
        ("executorch", "torchao"),
        "ExecuTorch program (XNNPACK), KV cache inside",
    ),
    "gguf": FileFormat(
        "gguf",
        ".gguf",
        ("f16", "f32", "q8_0", "q4_0", "q4_k_m"),
        "mobilellm_r1.deploy.formats.gguf",
        ("gguf", "llama_cpp"),
        "GGUF for stock llama.cpp",
    ),
}


def format_of_path(path: str | Path) -> FileFormat | None:
    """The format whose suffix `path` has (None: not an exported file)."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FORMATS.values() if f.suffix == suffix), None)
