"""Model: the Llama-4-text decoder (`model.py`), its config and presets (`config.py`),
Hugging Face checkpoint I/O (`hf.py`) and the `info` / `init` commands (`commands.py`).

The names below are imported on first use, so the command line can list `info` and `init`
without importing torch.
"""

from .. import lazy_exports

_EXPORTS = {
    "PRESETS": ".config",
    "ModelConfig": ".config",
    "preset": ".config",
    "KVCache": ".model",
    "Transformer": ".model",
    "build_model": ".model",
    "module_device": ".model",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
