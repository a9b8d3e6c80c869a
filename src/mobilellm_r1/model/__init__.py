"""Model: the Llama-4-text decoder (`model.py`), its config and presets (`config.py`),
Hugging Face checkpoint I/O (`hf.py`)."""

from .config import PRESETS, ModelConfig, preset
from .model import KVCache, Transformer, build_model, module_device

__all__ = ["PRESETS", "KVCache", "ModelConfig", "Transformer", "build_model", "module_device", "preset"]
