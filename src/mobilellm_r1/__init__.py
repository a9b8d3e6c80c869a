"""mobilellm_r1: open, reproducible training of sub-billion-parameter reasoning LMs
(after MobileLLM-R1, arXiv 2509.24945).

Layers import only downward (checked by `lint-imports`, see pyproject.toml): the core (`model`:
decoder, presets, HF checkpoints; `tokenizer`, `typed_config`, `atomic`, `devices`, `argtypes`,
`chat_template`, `procs`), then `data`, `deploy` (generation), `eval`, `train`, `curation`, with
`cli` on top. The names below are imported on first use, so `import mobilellm_r1.data.synth`
does not pull in torch.
"""

from collections.abc import Callable
from importlib import import_module
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports each name of `exports` (name -> module
    path, absolute or relative to `package`) on first use."""

    def attribute(name: str) -> Any:
        if name in exports:
            return getattr(import_module(exports[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return attribute


_EXPORTS = {
    "ModelConfig": ".model.config",
    "preset": ".model.config",
    "build_model": ".model.model",
    "load_pretrained": ".model.hf",
    "save_pretrained": ".model.hf",
    "load_tokenizer": ".tokenizer",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
