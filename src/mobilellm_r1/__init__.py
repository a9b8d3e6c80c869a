"""mobilellm_r1: open, reproducible training of sub-billion-parameter reasoning LMs
(after MobileLLM-R1, arXiv 2509.24945).

Folders follow the pipeline: `model` (decoder, presets, HF checkpoints), `data`,
`curation`, `train`, `eval`, `deploy` (generation), with `cli` on top.
"""

from .model import ModelConfig, build_model, preset
from .model.hf import load_pretrained, save_pretrained
from .tokenizer import load_tokenizer

__all__ = ["ModelConfig", "build_model", "load_pretrained", "load_tokenizer", "preset", "save_pretrained"]
__version__ = "0.1.0"
